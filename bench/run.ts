/**
 * `npm run bench`: speed and memory at full size on this machine, each row beside its baseline.
 *
 *   npm run bench -- [--dir /work/full] [--only sam-encoder,clip,llm-7b,e2e-7b,bandwidth] [--json FILE] [--threads N]
 *
 * Needs the generated checkpoint (node dist/bench/make-checkpoint.js --out DIR). Rows:
 * {name, seconds, baseline, baseline_seconds, ratio, unit, value, limit}. Baselines that cannot run here
 * (the official PyTorch code needs torch) are the figures design.md measured on this machine, marked so.
 */
import { cpus, totalmem } from 'node:os';
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { Graph } from '../src/graph/graph.js';
import { Engine } from '../src/graph/session.js';
import { f32 } from '../src/graph/tensor.js';
import { decodeImage } from '../src/image/decode.js';
import { Lisa } from '../src/inference/lisa.js';
import { llmForward } from '../src/inference/llm.js';
import { generate } from '../src/inference/generate.js';
import { LisaModel } from '../src/models/lisa.js';

interface Row { name: string; seconds: number; baseline: string; baseline_seconds: number | null; ratio: number | null; unit: string; value: number; limit: number | null; note?: string }

const args = process.argv.slice(2);
const get = (f: string): string | undefined => { const i = args.indexOf(f); return i >= 0 ? args[i + 1] : undefined; };
const dir = get('--dir') ?? process.env.LISA_BENCH_DIR ?? '/work/full';
const only = get('--only')?.split(',');
const threads = Number(get('--threads') ?? cpus().length);
const jsonOut = get('--json');
const want = (n: string): boolean => !only || only.includes(n);
const rows: Row[] = [];
const now = (): number => performance.now() / 1000;
const rss = (): number => process.resourceUsage().maxRSS * 1024;

function print(r: Row): void {
  rows.push(r);
  process.stdout.write(`| ${r.name.padEnd(16)} | ${r.seconds.toFixed(3).padStart(8)} s | ${r.value.toFixed(2).padStart(8)} ${r.unit.padEnd(9)} | ${r.limit !== null ? `${((100 * r.limit) / r.seconds).toFixed(0)} %`.padStart(5) : '   – '} | ${r.baseline.padEnd(38)} | ${r.baseline_seconds !== null ? `${r.baseline_seconds.toFixed(3)} s` : '–'} | ${r.ratio !== null ? `${r.ratio.toFixed(2)}x` : '–'} |\n`);
}

async function bandwidth(engine: Engine): Promise<number> {
  const n = 32 * 1024 * 1024;
  // Reductions read the inputs once and return a scalar: onnxruntime-node is slow at returning large
  // outputs (~0.3 GB/s), so a triad's output would measure the binding, not memory.
  const g = new Graph('bench_read');
  const a = g.input('a', 'float32', [n]), b = g.input('b', 'float32', [n]);
  g.output(g.add(g.reduceSum(a, [0], false), g.reduceSum(b, [0], false)), 'c');
  const s = await engine.load(g);
  const A = f32([n], new Float32Array(n).fill(1)), B = f32([n], new Float32Array(n).fill(2));
  await s.run({ a: A, b: B });
  const t = now();
  for (let i = 0; i < 5; i++) await s.run({ a: A, b: B });
  await s.release();
  return (5 * 2 * n * 4) / (now() - t) / 1e9; // two arrays read per run
}

async function main(): Promise<void> {
  const modelDir = join(dir, 'LISA-7B-v1'), clipDir = join(dir, 'clip-vit-large-patch14');
  if (!existsSync(join(modelDir, 'config.json'))) {
    process.stderr.write(`bench: no generated checkpoint in ${dir}; run: node dist/bench/make-checkpoint.js --out ${dir}\n`);
    process.exit(1);
  }
  const engine = new Engine({ threads });
  process.stdout.write(`machine: ${cpus()[0]?.model ?? 'cpu'}, ${cpus().length} cores, ${(totalmem() / 2 ** 30).toFixed(1)} GiB, onnxruntime threads ${threads}\n`);
  if (want('bandwidth')) {
    const t = now();
    const gbs = await bandwidth(engine);
    print({ name: 'bandwidth', seconds: now() - t, baseline: 'design.md STREAM triad 45-75 GB/s (read only here)', baseline_seconds: null, ratio: null, unit: 'GB/s', value: gbs, limit: null });
  }
  process.stdout.write('| component        |     time   |  throughput        | % lim | baseline                               | base time | ratio |\n');
  const model = LisaModel.load(modelDir, { visionTower: clipDir, threads, precision: 'int4' });
  for (const [row, m] of [['sam-encoder', model], ['sam-encoder-int8', null]] as const) {
    if (!want(row)) continue;
    const sam = m ?? LisaModel.load(modelDir, { visionTower: clipDir, threads, precision: 'int4', samPrecision: 'int8' });
    const px = new Float32Array(3 * 1024 * 1024).map((_, i) => Math.sin(i));
    let t = now();
    await sam.runSamEncoder(px); // builds, converts once, warms up
    process.stdout.write(`# ${row} first run (build + load): ${(now() - t).toFixed(1)} s\n`);
    t = now();
    await sam.runSamEncoder(px);
    const s = now() - t;
    print({ name: row, seconds: s, baseline: 'official PyTorch CPU fp32 (design.md)', baseline_seconds: 53.0, ratio: 53.0 / s, unit: 'GFLOP/s', value: 5.7e12 / s / 1e9, limit: 7.0 });
    if (!m) { await sam.release(); sam.close(); }
  }
  if (want('clip')) {
    const px = new Float32Array(3 * 224 * 224).map((_, i) => Math.cos(i));
    await model.runClip(px);
    const t = now();
    for (let i = 0; i < 3; i++) await model.runClip(px);
    const s = (now() - t) / 3;
    print({ name: 'clip', seconds: s, baseline: 'official PyTorch CPU fp32 (design.md)', baseline_seconds: 2.08, ratio: 2.08 / s, unit: 'GFLOP/s', value: 254e9 / s / 1e9, limit: 0.31 });
  }
  if (want('llm-7b')) {
    const H = model.config.llama.hiddenSize;
    const L = 320;
    const emb = model.embedTokens(Array.from({ length: L }, (_, i) => 100 + i * 7));
    let t = now();
    await llmForward(model.llm, emb.subarray(0, 8 * H), 8); // build + convert + warm
    process.stdout.write(`# llm-7b int4 first run (build + convert + load): ${(now() - t).toFixed(1)} s, peak RSS ${(rss() / 2 ** 30).toFixed(2)} GiB\n`);
    t = now();
    const prefill = await llmForward(model.llm, emb, L);
    const ps = now() - t;
    print({ name: 'llm-7b prefill', seconds: ps, baseline: 'llama.cpp Q4_0 (design.md, 38 tok/s)', baseline_seconds: L / 38, ratio: L / 38 / ps, unit: 'tok/s', value: L / ps, limit: (2 * 6.7e9 * L) / 800e9 });
    const steps = 16;
    t = now();
    const gen = await generate(model.llm, prefill, L, { maxNewTokens: steps + 1 });
    const ds = (now() - t) / steps;
    print({ name: 'llm-7b decode', seconds: ds, baseline: 'llama.cpp Q4_0 (design.md, 9.7 tok/s)', baseline_seconds: 1 / 9.7, ratio: 1 / 9.7 / ds, unit: 'tok/s', value: 1 / ds, limit: 3.8e9 / 60e9, note: `${gen.tokens.length} tokens` });
  }
  await model.release();
  model.close();
  if (want('e2e-7b')) {
    const lisa = Lisa.load(modelDir, { visionTower: clipDir, threads, precision: 'int4' });
    const image = await decodeImage(join(process.cwd(), '..', 'shared', 'fixtures', 'lisa-tiny', 'golden', 'inputs', 'truck.jpg'));
    await lisa.segment(image, 'warm up', { maxNewTokens: 1 }); // sessions built and cached; not timed
    await lisa.close();
    const fresh = Lisa.load(modelDir, { visionTower: clipDir, threads, precision: 'int4' });
    const q = 'What is the object that can carry cargo in this image? Please output segmentation mask.';
    await fresh.segment({ width: 8, height: 8, data: new Uint8Array(192) }, 'hi', { maxNewTokens: 1 }); // sessions loaded
    let t = now();
    const first = await fresh.segment(image, q, { maxNewTokens: 10 });
    const s1 = now() - t;
    print({ name: 'e2e-7b first', seconds: s1, baseline: 'official code, about 3 min (design.md)', baseline_seconds: 180, ratio: 180 / s1, unit: 'tokens', value: first.tokens.length, limit: null });
    t = now();
    const follow = await fresh.segment(image, 'And what is next to it?', { maxNewTokens: 10 });
    const s2 = now() - t;
    print({ name: 'e2e-7b follow-up', seconds: s2, baseline: 'first question on the image', baseline_seconds: s1, ratio: s1 / s2, unit: 'tokens', value: follow.tokens.length, limit: null });
    await fresh.close();
  }
  process.stdout.write(`peak RSS: ${(rss() / 2 ** 30).toFixed(2)} GiB\n`);
  rows.push({ name: 'peak-rss', seconds: 0, baseline: 'goal 7 GiB (7B int4)', baseline_seconds: null, ratio: null, unit: 'GiB', value: rss() / 2 ** 30, limit: null });
  if (jsonOut) writeFileSync(jsonOut, JSON.stringify(rows, null, 2) + '\n');
}

await main();
