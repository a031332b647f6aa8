/**
 * `npm run bench`: speed and memory at full size on this machine, each row beside its baseline.
 *
 *   npm run bench -- [--dir /work/full] [--model LISA-7B-v1] [--only bandwidth,sam-encoder,sam-encoder-int8,clip,llm-7b,e2e-7b,
 *                    quant-accuracy,decode-attention] [--llm-formats int4,int4-q4_0] [--json FILE] [--threads N]
 *
 * Needs the generated checkpoint (node dist/bench/make-checkpoint.js --out DIR [--size 13b]); the 13B rows are
 * named llm-13b / e2e-13b with --model LISA-13B-llama2-v1. Every component runs in a child process of its own,
 * so each row's peak RSS is that component's alone. Rows: {name, seconds, baseline, baseline_seconds, ratio,
 * unit, value, limit, peak_rss_gib}. The LLM baseline is llama.cpp (node-llama-cpp, installed into
 * bench/llama-cpp/ on first use) on a random Q4_0 GGUF of the same shape, written beside the checkpoint on
 * first use, measured in the same run. The official PyTorch code cannot run here (no torch); its rows quote
 * design.md's measurements on this machine and say so.
 */
import { spawnSync } from 'node:child_process';
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
import { readLlamaConfig } from '../src/models/config.js';
import { llamaLinearParams } from '../src/models/llama-causal-lm.js';
import { LisaModel, PRECISIONS, type Precision } from '../src/models/lisa.js';
import { LlamaTokenizer } from '../src/text/tokenizer.js';
import { writeRandomLlamaGguf } from './gguf.js';
import { LLAMA_CPP_DIR } from './llama-cpp-baseline.js';
import type { Row } from './row.js';
import { trainBenchTiny, trainBench7b } from './train-bench.js';
import { defaultModelBench } from './default-model-bench.js';
import { CANDIDATES, quantAccuracy } from './quant-accuracy.js';
import { decodeAttentionBench } from './decode-attention.js';
import { quantTag, type QuantSpec } from '../src/graph/quantize.js';

interface LlamaCppResult {
  load_s: number;
  prefill_s: number;
  decode_s_per_token: number;
  peak_rss_bytes: number;
  version: string;
}

const args = process.argv.slice(2);
const get = (f: string): string | undefined => {
  const i = args.indexOf(f);
  return i >= 0 ? args[i + 1] : undefined;
};
const dir = get('--dir') ?? process.env.LISA_BENCH_DIR ?? '';
const modelName = get('--model') ?? 'LISA-7B-v1';
const modelDir = join(dir, modelName),
  clipDir = join(dir, 'clip-vit-large-patch14');
const threads = Number(get('--threads') ?? cpus().length);
const now = (): number => performance.now() / 1000;
const gib = (): number => (process.resourceUsage().maxRSS * 1024) / 2 ** 30;
const PROMPT = 320,
  STEPS = 16;
/** The end-to-end question: a real photo (1800×1200) from the fixtures and a LISA-style query. */
const E2E_IMAGE = join(import.meta.dirname, '..', '..', '..', 'shared', 'fixtures', 'lisa-tiny', 'golden', 'inputs', 'truck.jpg');
const E2E_QUESTION = 'What is the object that can carry cargo in this image? Please output segmentation mask.';

/** What the child for one component measures; returns its rows. */
const components: Record<string, () => Promise<Row[]>> = {
  'quant-accuracy': () => quantAccuracy(threads),
  'decode-attention': () => decodeAttentionBench(threads),
  'default-model': () => defaultModelBench({ threads, ...(get('--default-model') ? { modelDir: get('--default-model')! } : {}) }),
  async bandwidth() {
    const engine = new Engine({ threads });
    const n = 32 * 1024 * 1024;
    // Reductions read the inputs once and return a scalar: onnxruntime-node is slow at returning large
    // outputs (~0.3 GB/s), so a triad's output would measure the binding, not memory.
    const g = new Graph('bench_read');
    const a = g.input('a', 'float32', [n]),
      b = g.input('b', 'float32', [n]);
    g.output(g.add(g.reduceSum(a, [0], false), g.reduceSum(b, [0], false)), 'c');
    const s = await engine.load(g);
    const A = f32([n], new Float32Array(n).fill(1)),
      B = f32([n], new Float32Array(n).fill(2));
    await s.run({ a: A, b: B });
    const t = now();
    for (let i = 0; i < 5; i++) await s.run({ a: A, b: B });
    const sec = (now() - t) / 5;
    return [
      {
        name: 'bandwidth',
        seconds: sec,
        baseline: 'design.md STREAM triad 45-75 GB/s (read only here)',
        baseline_seconds: null,
        ratio: null,
        unit: 'GB/s',
        value: (2 * n * 4) / sec / 1e9,
        limit: null,
      },
    ];
  },
  'sam-encoder': () => samEncoder('fp32'),
  'train-tiny': () => trainBenchTiny(threads),
  'train-7b': () => trainBench7b(modelDir, clipDir, threads),
  'sam-encoder-int8': () => samEncoder('int8'),
  async clip() {
    const model = LisaModel.load(modelDir, { visionTower: clipDir, threads, precision: 'int4' });
    const px = new Float32Array(3 * 224 * 224).map((_, i) => Math.cos(i));
    await model.runClip(px);
    const t = now();
    for (let i = 0; i < 3; i++) await model.runClip(px);
    const s = (now() - t) / 3;
    return [
      {
        name: 'clip',
        seconds: s,
        baseline: 'official PyTorch CPU fp32 (design.md)',
        baseline_seconds: 2.08,
        ratio: 2.08 / s,
        unit: 'GFLOP/s',
        value: 254e9 / s / 1e9,
        limit: 0.31,
      },
    ];
  },
  async llm() {
    const model = LisaModel.load(modelDir, { visionTower: clipDir, threads, ...llmFormat(get('--format') ?? 'int4') });
    const fmt = get('--format') ?? 'int4';
    const H = model.config.llama.hiddenSize;
    const emb = model.embedTokens(Array.from({ length: PROMPT }, (_, i) => 100 + i * 7));
    let t = now();
    await llmForward(model.llm, emb.subarray(0, 8 * H), 8); // build + convert + load + warm
    const load = now() - t;
    t = now();
    const prefill = await llmForward(model.llm, emb, PROMPT);
    const ps = now() - t;
    t = now();
    const gen = await generate(model.llm, prefill, PROMPT, { maxNewTokens: STEPS + 1 });
    const ds = (now() - t) / STEPS;
    const params = llamaLinearParams(model.config.llama);
    return [
      loadRow(`llm-${size()} ${fmt} load`, load),
      {
        name: `llm-${size()} ${fmt} prefill`,
        seconds: ps,
        baseline: '',
        baseline_seconds: null,
        ratio: null,
        unit: 'tok/s',
        value: PROMPT / ps,
        limit: (2 * params * PROMPT) / 800e9,
      },
      {
        name: `llm-${size()} ${fmt} decode`,
        seconds: ds,
        baseline: '',
        baseline_seconds: null,
        ratio: null,
        unit: 'tok/s',
        value: 1 / ds,
        limit: (params * 0.625) / 25e9,
        note: `${gen.tokens.length} tokens`,
      },
    ];
  },
  async e2e() {
    const image = await decodeImage(E2E_IMAGE);
    const warm = Lisa.load(modelDir, { visionTower: clipDir, threads, precision: 'int4', ...samEncoderOpt() });
    await warm.segment(image, 'warm up', { maxNewTokens: 1 }); // graphs built and weights converted once; not timed
    await warm.close();
    const lisa = Lisa.load(modelDir, { visionTower: clipDir, threads, precision: 'int4', ...samEncoderOpt() });
    let t = now();
    await lisa.segment({ width: 8, height: 8, data: new Uint8Array(192) }, 'hi', { maxNewTokens: 1 }); // sessions loaded
    const load = now() - t;
    t = now();
    const first = await lisa.segment(image, E2E_QUESTION, { maxNewTokens: 10 });
    const s1 = now() - t;
    t = now();
    const follow = await lisa.segment(image, 'And what is next to it?', { maxNewTokens: 10 });
    const s2 = now() - t;
    await lisa.close();
    return [
      loadRow(`e2e-${size()}${samTag()} load`, load, 'sessions opened from the cache + a tiny first question'),
      {
        name: `e2e-${size()}${samTag()} first`,
        seconds: s1,
        baseline: 'official code, about 3 min (design.md)',
        baseline_seconds: 180,
        ratio: 180 / s1,
        unit: 'tokens',
        value: first.tokens.length,
        limit: null,
      },
      {
        name: `e2e-${size()}${samTag()} follow-up`,
        seconds: s2,
        baseline: 'first question on the image',
        baseline_seconds: s1,
        ratio: s1 / s2,
        unit: 'tokens',
        value: follow.tokens.length,
        limit: null,
      },
    ];
  },
  /** What `lisa segment` does: one process, one image, the vision sessions closed before the LLM opens. */
  async oneshot() {
    const t = now();
    const image = await decodeImage(E2E_IMAGE);
    const lisa = Lisa.load(modelDir, { visionTower: clipDir, threads, precision: 'int4', keepVisionSessions: false, ...samEncoderOpt() });
    const r = await lisa.segment(image, E2E_QUESTION, { maxNewTokens: 10 });
    await lisa.close();
    const s = now() - t;
    return [
      {
        name: `e2e-${size()}${samTag()} one-shot`,
        seconds: s,
        baseline: 'official code, about 3 min (design.md)',
        baseline_seconds: 180,
        ratio: 180 / s,
        unit: 'tokens',
        value: r.tokens.length,
        limit: null,
        note: 'process start to answer, sessions opened from the cache',
      },
    ];
  },
};

async function samEncoder(precision: 'fp32' | 'int8'): Promise<Row[]> {
  const sam = LisaModel.load(modelDir, { visionTower: clipDir, threads, precision: 'int4', samPrecision: precision });
  const px = new Float32Array(3 * 1024 * 1024).map((_, i) => Math.sin(i));
  let t = now();
  await sam.runSamEncoder(px); // builds, converts once, warms up
  process.stdout.write(`# sam-encoder ${precision} first run (build + load): ${(now() - t).toFixed(1)} s\n`);
  t = now();
  await sam.runSamEncoder(px);
  const s = now() - t;
  return [
    {
      name: precision === 'fp32' ? 'sam-encoder' : 'sam-encoder-int8',
      seconds: s,
      baseline: 'official PyTorch CPU fp32 (design.md)',
      baseline_seconds: 53.0,
      ratio: 53.0 / s,
      unit: 'GFLOP/s',
      value: 5.7e12 / s / 1e9,
      limit: 7.0,
    },
  ];
}

/**
 * An LLM format for the llm rows: a --precision name (int4, int4-q4_0, int8) or a candidate's tag from the accuracy
 * table (e.g. q4b128z-search), so formats are compared at full size in one run.
 */
function llmFormat(name: string): { precision: Precision; llmQuant?: QuantSpec } {
  if ((PRECISIONS as readonly string[]).includes(name)) return { precision: name as Precision };
  const spec = CANDIDATES.find((c) => quantTag(c) === name);
  if (!spec) throw new Error(`--llm-formats: unknown format ${name} (a --precision name or one of ${CANDIDATES.map(quantTag).join(', ')})`);
  return { precision: 'int4', llmQuant: spec };
}

/** A row for a load time (no baseline). */
function loadRow(name: string, seconds: number, note?: string): Row {
  return {
    name,
    seconds,
    baseline: '',
    baseline_seconds: null,
    ratio: null,
    unit: 's',
    value: seconds,
    limit: null,
    ...(note ? { note } : {}),
  };
}

/** The e2e rows run twice: SAM's own ViT (official numbers) and `--sam-encoder mobilesam`. */
const samEncoderOpt = (): { samEncoder?: string } => (get('--sam-encoder') ? { samEncoder: get('--sam-encoder')! } : {});
const samTag = (): string => (get('--sam-encoder') ? ` ${get('--sam-encoder')}` : '');

function size(): string {
  return readLlamaConfig(modelDir).hiddenSize >= 5120 ? '13b' : '7b';
}

/** Runs one component in a child process; its rows come back on the last stdout line. */
function child(component: string, extra: string[] = []): Row[] {
  const r = spawnSync(
    process.execPath,
    [
      process.argv[1]!,
      ...['--child', component, '--dir', dir, '--model', modelName, '--threads', String(threads), ...extra],
      ...(get('--default-model') ? ['--default-model', get('--default-model')!] : []),
    ],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 1 << 26 },
  );
  const lines = r.stdout.trim().split('\n');
  for (const l of lines.slice(0, -1)) process.stdout.write(`${l}\n`);
  if (r.status !== 0) throw new Error(`bench component ${component} failed (exit ${r.status})`);
  return JSON.parse(lines.at(-1)!) as Row[];
}

/** The llama.cpp baseline on a random Q4_0 GGUF of the checkpoint's shape (both made on first use). */
function llamaCpp(): LlamaCppResult {
  if (!existsSync(join(LLAMA_CPP_DIR, 'node_modules', 'node-llama-cpp'))) {
    process.stdout.write(`# installing the llama.cpp baseline into ${LLAMA_CPP_DIR} (npm ci, CPU build only)\n`);
    const r = spawnSync('npm', ['ci', '--omit=optional', '--ignore-scripts', '--no-audit', '--no-fund'], {
      cwd: LLAMA_CPP_DIR,
      stdio: 'inherit',
    });
    if (r.status !== 0) throw new Error('npm ci for the llama.cpp baseline failed');
  }
  const gguf = join(dir, `${modelName}-random-q4_0.gguf`);
  if (!existsSync(gguf)) {
    process.stdout.write(`# writing ${gguf}\n`);
    writeRandomLlamaGguf(gguf, readLlamaConfig(modelDir), LlamaTokenizer.load(modelDir).sp.pieces, `${modelName} shape, random Q4_0`);
  }
  const r = spawnSync(
    process.execPath,
    [
      join(import.meta.dirname, 'llama-cpp-baseline.js'),
      '--gguf',
      gguf,
      '--threads',
      String(threads),
      '--prompt',
      String(PROMPT),
      '--steps',
      String(STEPS),
    ],
    { encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'] },
  );
  if (r.status !== 0) throw new Error('the llama.cpp baseline failed');
  return JSON.parse(r.stdout.trim().split('\n').at(-1)!) as LlamaCppResult;
}

function print(r: Row): void {
  const lim = r.limit !== null && r.limit > 0 ? `${((100 * r.limit) / r.seconds).toFixed(0)} %` : '–';
  process.stdout.write(
    `| ${r.name.padEnd(20)} | ${r.seconds.toFixed(3).padStart(8)} s | ${r.value.toFixed(2).padStart(8)} ${r.unit.padEnd(7)} | ${lim.padStart(5)} | ${r.baseline.padEnd(40)} | ${r.baseline_seconds !== null ? `${r.baseline_seconds.toFixed(3)} s` : '–'} | ${r.ratio !== null ? `${r.ratio.toFixed(2)}x` : '–'} | ${r.peak_rss_gib !== undefined ? r.peak_rss_gib.toFixed(2) : '–'} |\n`,
  );
}

async function main(): Promise<void> {
  const childOf = get('--child');
  if (childOf) {
    const rows = await components[childOf]!();
    const peak = gib();
    process.stdout.write(JSON.stringify(rows.map((r) => ({ ...r, peak_rss_gib: peak }))) + '\n');
    return;
  }
  const only = get('--only')?.split(',');
  // train-tiny runs on the fixtures alone; everything else needs the generated full-size checkpoint.
  const fullSize = !only || only.some((n) => !['train-tiny', 'default-model', 'quant-accuracy', 'decode-attention'].includes(n));
  if (fullSize && !dir) {
    process.stderr.write(
      'bench: give --dir DIR (or LISA_BENCH_DIR): the folder of the generated full-size checkpoint (node ' +
        'dist/bench/make-checkpoint.js --out DIR)\n',
    );
    process.exit(2);
  }
  if (fullSize && !existsSync(join(modelDir, 'config.json'))) {
    process.stderr.write(`bench: no generated checkpoint in ${modelDir}; run: node dist/bench/make-checkpoint.js --out ${dir}\n`);
    process.exit(1);
  }
  const sz = fullSize ? size() : '7b';
  const names = [
    'bandwidth',
    'sam-encoder',
    'sam-encoder-int8',
    'clip',
    `llm-${sz}`,
    `e2e-${sz}`,
    'train-tiny',
    'train-7b',
    'default-model',
    'quant-accuracy',
    'decode-attention',
  ];
  for (const n of only ?? [])
    if (!names.includes(n)) {
      process.stderr.write(`bench: unknown component '${n}' (expected one of ${names.join(', ')})\n`);
      process.exit(2);
    }
  const want = (n: string): boolean => !only || only.includes(n);
  process.stdout.write(
    `machine: ${cpus()[0]?.model ?? 'cpu'}, ${cpus().length} cores, ${(totalmem() / 2 ** 30).toFixed(1)} GiB; onnxruntime ` +
      `threads ${threads}; model ${modelName}\n`,
  );
  const rows: Row[] = [];
  for (const n of names) {
    if (!want(n)) continue;
    if (n === `llm-${sz}`) {
      const base = llamaCpp();
      const label = `llama.cpp Q4_0 (node-llama-cpp ${base.version})`;
      for (const fmt of (get('--llm-formats') ?? 'int4,int4-q4_0').split(',')) {
        const [load, pre, dec] = child('llm', ['--format', fmt]) as [Row, Row, Row];
        rows.push(
          load,
          { ...pre, baseline: label, baseline_seconds: base.prefill_s, ratio: base.prefill_s / pre.seconds },
          { ...dec, baseline: label, baseline_seconds: base.decode_s_per_token, ratio: base.decode_s_per_token / dec.seconds },
        );
      }
      rows.push({
        name: `llama.cpp-${sz} rss`,
        seconds: base.load_s,
        baseline: 'baseline process peak RSS',
        baseline_seconds: null,
        ratio: null,
        unit: 'GiB',
        value: base.peak_rss_bytes / 2 ** 30,
        limit: null,
        peak_rss_gib: base.peak_rss_bytes / 2 ** 30,
      });
    } else {
      const mobile = ['--sam-encoder', 'mobilesam'];
      rows.push(
        ...(n.startsWith('e2e') ? [...child('e2e'), ...child('oneshot'), ...child('e2e', mobile), ...child('oneshot', mobile)] : child(n)),
      );
    }
  }
  process.stdout.write(
    '| component            |     time   |  throughput      | % lim | baseline                                 | base time | ' +
      'ratio | peak RSS GiB |\n',
  );
  rows.forEach(print);
  const jsonOut = get('--json');
  if (jsonOut) writeFileSync(jsonOut, JSON.stringify(rows, null, 2) + '\n');
}

await main();
