/**
 * Writes a full-size LISA checkpoint in the released layout with random weights, for speed and memory
 * measurements (real weights cannot be downloaded here):
 *   <out>/LISA-7B-v1/       config.json, pytorch_model-0000{1,2}-of-00002.bin + index (LLM and projector bf16,
 *                           SAM ViT-H and text_hidden_fcs fp32), tokenizer files and added_tokens.json (7B layout)
 *   <out>/clip-vit-large-patch14/  config.json, preprocessor_config.json, pytorch_model.bin (vision tower, fp32)
 * Every tensor gets distinct values (identical tensors would be deduplicated and fake the figures). Shards are
 * streamed in 64 MB chunks; peak memory stays small.
 *
 *   node dist/bench/make-checkpoint.js --out /data/lisa-full [--size 7b|13b]
 */
import { copyFileSync, existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { DTYPE_BYTES, numel, type DType } from '../src/io/dtype.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { writeTorchBin, type TensorSpec } from '../src/io/torch-bin-writer.js';

const SIZES = {
  '7b': { hidden: 4096, layers: 32, heads: 32, ffn: 11008, vocab: 32004, eps: 1e-6, maxPos: 2048, tokenizer: 'lisa-7b-layout', name: 'LISA-7B-v1', shards: 2 },
  '13b': { hidden: 5120, layers: 40, heads: 40, ffn: 13824, vocab: 32003, eps: 1e-5, maxPos: 4096, tokenizer: 'lisa-13b-layout', name: 'LISA-13B-llama2-v1', shards: 3 },
} as const;

function hash(s: string): number {
  let h = 2166136261;
  for (let i = 0; i < s.length; i++) { h ^= s.charCodeAt(i); h = Math.imul(h, 16777619); }
  return h >>> 0 || 1;
}

/** Uniform values in [centre − scale, centre + scale] from a per-tensor xorshift stream. */
function randomTensor(name: string, dtype: DType, shape: number[], scale: number, centre = 0): TensorSpec {
  let state = hash(name);
  let produced = 0;
  return {
    name, dtype, shape,
    fill(out: Uint8Array, offset: number) {
      if (offset !== produced) throw new Error('chunks must be filled in order');
      const es = DTYPE_BYTES[dtype], n = out.byteLength / es;
      const f = new Float32Array(n);
      for (let i = 0; i < n; i++) {
        state ^= state << 13; state ^= state >>> 17; state ^= state << 5;
        f[i] = centre + scale * ((state >>> 0) / 2147483648 - 1);
      }
      if (dtype === 'float32') out.set(new Uint8Array(f.buffer));
      else { const u = new Uint32Array(f.buffer), o = new Uint16Array(out.buffer, out.byteOffset, n); for (let i = 0; i < n; i++) o[i] = u[i]! >>> 16; }
      produced += out.byteLength;
    },
  };
}

function lisaTensors(size: keyof typeof SIZES, tinySam: Map<string, number[]>): TensorSpec[] {
  const c = SIZES[size];
  const t: TensorSpec[] = [];
  const add = (name: string, dtype: DType, shape: number[], scale: number, centre = 0): void => { t.push(randomTensor(name, dtype, shape, scale, centre)); };
  const H = c.hidden, lin = 1 / Math.sqrt(H);
  add('model.embed_tokens.weight', 'bfloat16', [c.vocab, H], 0.02);
  for (let i = 0; i < c.layers; i++) {
    const p = `model.layers.${i}`;
    for (const n of ['q', 'k', 'v', 'o']) add(`${p}.self_attn.${n}_proj.weight`, 'bfloat16', [H, H], lin);
    add(`${p}.self_attn.rotary_emb.inv_freq`, 'bfloat16', [H / c.heads / 2], 0.5, 0.5);
    add(`${p}.mlp.gate_proj.weight`, 'bfloat16', [c.ffn, H], lin);
    add(`${p}.mlp.up_proj.weight`, 'bfloat16', [c.ffn, H], lin);
    add(`${p}.mlp.down_proj.weight`, 'bfloat16', [H, c.ffn], 1 / Math.sqrt(c.ffn));
    add(`${p}.input_layernorm.weight`, 'bfloat16', [H], 0.05, 1);
    add(`${p}.post_attention_layernorm.weight`, 'bfloat16', [H], 0.05, 1);
  }
  add('model.norm.weight', 'bfloat16', [H], 0.05, 1);
  add('lm_head.weight', 'bfloat16', [c.vocab, H], lin);
  add('model.mm_projector.weight', 'bfloat16', [H, 1024], 1 / 32);
  add('model.mm_projector.bias', 'bfloat16', [H], 0.01);
  // SAM ViT-H image encoder.
  const E = 1280, ie = 'model.visual_model.image_encoder';
  add(`${ie}.patch_embed.proj.weight`, 'float32', [E, 3, 16, 16], 0.03);
  add(`${ie}.patch_embed.proj.bias`, 'float32', [E], 0.01);
  add(`${ie}.pos_embed`, 'float32', [1, 64, 64, E], 0.02);
  for (let i = 0; i < 32; i++) {
    const b = `${ie}.blocks.${i}`, global = [7, 15, 23, 31].includes(i);
    add(`${b}.norm1.weight`, 'float32', [E], 0.05, 1); add(`${b}.norm1.bias`, 'float32', [E], 0.01);
    add(`${b}.attn.qkv.weight`, 'float32', [3 * E, E], 1 / Math.sqrt(E)); add(`${b}.attn.qkv.bias`, 'float32', [3 * E], 0.01);
    add(`${b}.attn.proj.weight`, 'float32', [E, E], 1 / Math.sqrt(E)); add(`${b}.attn.proj.bias`, 'float32', [E], 0.01);
    add(`${b}.attn.rel_pos_h`, 'float32', [global ? 127 : 27, 80], 0.02); add(`${b}.attn.rel_pos_w`, 'float32', [global ? 127 : 27, 80], 0.02);
    add(`${b}.norm2.weight`, 'float32', [E], 0.05, 1); add(`${b}.norm2.bias`, 'float32', [E], 0.01);
    add(`${b}.mlp.lin1.weight`, 'float32', [4 * E, E], 1 / Math.sqrt(E)); add(`${b}.mlp.lin1.bias`, 'float32', [4 * E], 0.01);
    add(`${b}.mlp.lin2.weight`, 'float32', [E, 4 * E], 1 / Math.sqrt(4 * E)); add(`${b}.mlp.lin2.bias`, 'float32', [E], 0.01);
  }
  add(`${ie}.neck.0.weight`, 'float32', [256, E, 1, 1], 1 / Math.sqrt(E));
  add(`${ie}.neck.1.weight`, 'float32', [256], 0.05, 1); add(`${ie}.neck.1.bias`, 'float32', [256], 0.01);
  add(`${ie}.neck.2.weight`, 'float32', [256, 256, 3, 3], 1 / 48);
  add(`${ie}.neck.3.weight`, 'float32', [256], 0.05, 1); add(`${ie}.neck.3.bias`, 'float32', [256], 0.01);
  // Prompt encoder and mask decoder: SAM's real sizes, as in the tiny checkpoint.
  for (const [name, shape] of tinySam) add(name, 'float32', shape, name.endsWith('bias') ? 0.01 : 1 / Math.sqrt(shape[shape.length - 1] ?? 1), name.includes('norm') && name.endsWith('weight') ? 1 : 0);
  add('model.text_hidden_fcs.0.0.weight', 'float32', [H, H], lin); add('model.text_hidden_fcs.0.0.bias', 'float32', [H], 0.01);
  add('model.text_hidden_fcs.0.2.weight', 'float32', [256, H], lin); add('model.text_hidden_fcs.0.2.bias', 'float32', [256], 0.01);
  return t;
}

function clipTensors(): TensorSpec[] {
  const t: TensorSpec[] = [];
  const add = (name: string, shape: number[], scale: number, centre = 0): void => { t.push(randomTensor(name, 'float32', shape, scale, centre)); };
  const C = 1024, v = 'vision_model';
  add(`${v}.embeddings.class_embedding`, [C], 0.02);
  add(`${v}.embeddings.patch_embedding.weight`, [C, 3, 14, 14], 0.03);
  add(`${v}.embeddings.position_embedding.weight`, [257, C], 0.02);
  add(`${v}.pre_layrnorm.weight`, [C], 0.05, 1); add(`${v}.pre_layrnorm.bias`, [C], 0.01);
  for (let i = 0; i < 24; i++) {
    const l = `${v}.encoder.layers.${i}`;
    for (const p of ['q', 'k', 'v', 'out']) { add(`${l}.self_attn.${p}_proj.weight`, [C, C], 1 / 32); add(`${l}.self_attn.${p}_proj.bias`, [C], 0.01); }
    add(`${l}.layer_norm1.weight`, [C], 0.05, 1); add(`${l}.layer_norm1.bias`, [C], 0.01);
    add(`${l}.mlp.fc1.weight`, [4 * C, C], 1 / 32); add(`${l}.mlp.fc1.bias`, [4 * C], 0.01);
    add(`${l}.mlp.fc2.weight`, [C, 4 * C], 1 / 64); add(`${l}.mlp.fc2.bias`, [C], 0.01);
    add(`${l}.layer_norm2.weight`, [C], 0.05, 1); add(`${l}.layer_norm2.bias`, [C], 0.01);
  }
  add(`${v}.post_layernorm.weight`, [C], 0.05, 1); add(`${v}.post_layernorm.bias`, [C], 0.01);
  return t;
}

function main(): void {
  const args = process.argv.slice(2);
  const get = (flag: string, dflt?: string): string | undefined => { const i = args.indexOf(flag); return i >= 0 ? args[i + 1] : dflt; };
  const out = get('--out');
  const size = (get('--size', '7b') ?? '7b') as keyof typeof SIZES;
  if (!out || !SIZES[size]) { process.stderr.write('usage: make-checkpoint --out DIR [--size 7b|13b]\n'); process.exit(2); }
  const shared = join(process.cwd(), '..', 'shared', 'fixtures');
  const c = SIZES[size];
  const dir = join(out, c.name), clipDir = join(out, 'clip-vit-large-patch14');
  mkdirSync(dir, { recursive: true });
  mkdirSync(clipDir, { recursive: true });
  const tiny = openCheckpoint(join(shared, 'lisa-tiny', 'checkpoint'));
  const sam = new Map([...tiny.tensors.values()].filter((t) => /visual_model\.(prompt_encoder|mask_decoder)\./.test(t.name)).map((t) => [t.name, [...t.shape]]));
  tiny.close();
  const tensors = lisaTensors(size, sam);
  const total = tensors.reduce((n, t) => n + numel(t.shape) * DTYPE_BYTES[t.dtype], 0);
  const perShard = Math.ceil(total / c.shards);
  const shards: TensorSpec[][] = [[]];
  let acc = 0;
  for (const t of tensors) {
    const b = numel(t.shape) * DTYPE_BYTES[t.dtype];
    if (acc + b > perShard && shards[shards.length - 1]!.length && shards.length < c.shards) { shards.push([]); acc = 0; }
    shards[shards.length - 1]!.push(t);
    acc += b;
  }
  const weightMap: Record<string, string> = {};
  shards.forEach((s, i) => {
    const file = `pytorch_model-${String(i + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.bin`;
    const t0 = Date.now();
    if (!existsSync(join(dir, file))) writeTorchBin(join(dir, file), file.replace(/\.bin$/, ''), s);
    for (const t of s) weightMap[t.name] = file;
    process.stderr.write(`${file}: ${s.length} tensors in ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
  });
  writeFileSync(join(dir, 'pytorch_model.bin.index.json'), JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2));
  writeFileSync(join(dir, 'config.json'), JSON.stringify({
    _name_or_path: c.name, architectures: ['LISAForCausalLM'], model_type: 'llava', bos_token_id: 1, eos_token_id: 2, pad_token_id: 0,
    hidden_act: 'silu', hidden_size: c.hidden, intermediate_size: c.ffn, num_attention_heads: c.heads, num_hidden_layers: c.layers,
    num_key_value_heads: c.heads, max_position_embeddings: c.maxPos, rms_norm_eps: c.eps, rope_scaling: null, tie_word_embeddings: false,
    torch_dtype: 'bfloat16', transformers_version: '4.31.0', use_cache: false, vocab_size: c.vocab, mm_hidden_size: 1024,
    mm_use_im_patch_token: false, mm_use_im_start_end: true, mm_vision_select_feature: 'patch', mm_vision_select_layer: -2,
    mm_vision_tower: 'openai/clip-vit-large-patch14', vision_tower: 'openai/clip-vit-large-patch14', use_mm_proj: true,
    tune_mm_mlp_adapter: false, freeze_mm_mlp_adapter: true, pretrain_mm_mlp_adapter: null, image_aspect_ratio: 'square',
    image_grid_pinpoints: null, train_mask_decoder: true, out_dim: 256,
  }, null, 2));
  for (const f of ['tokenizer.model', 'added_tokens.json', 'special_tokens_map.json', 'tokenizer_config.json']) copyFileSync(join(shared, 'tokenizer', c.tokenizer, f), join(dir, f));
  if (!existsSync(join(clipDir, 'pytorch_model.bin'))) writeTorchBin(join(clipDir, 'pytorch_model.bin'), 'archive', clipTensors());
  writeFileSync(join(clipDir, 'config.json'), JSON.stringify({ architectures: ['CLIPModel'], model_type: 'clip', projection_dim: 768, vision_config: { hidden_size: 1024, intermediate_size: 4096, num_attention_heads: 16, num_hidden_layers: 24, patch_size: 14, image_size: 224, hidden_act: 'quick_gelu', layer_norm_eps: 1e-5 } }, null, 2));
  writeFileSync(join(clipDir, 'preprocessor_config.json'), JSON.stringify({ crop_size: 224, do_center_crop: true, do_normalize: true, do_resize: true, image_mean: [0.48145466, 0.4578275, 0.40821073], image_std: [0.26862954, 0.26130258, 0.27577711], resample: 3, size: 224 }, null, 2));
  process.stdout.write(`${dir} (${(total / 1e9).toFixed(2)} GB in ${shards.length} shards) and ${clipDir}\n`);
}

main();
