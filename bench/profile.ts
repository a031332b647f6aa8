/**
 * Where the time goes: onnxruntime's own profile of a full-size component, summed per op type.
 *   node dist/bench/profile.js decode|prefill|sam [--dir /work/full]
 */
import { readdirSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { generate } from '../src/inference/generate.js';
import { llmForward } from '../src/inference/llm.js';
import { LisaModel } from '../src/models/lisa.js';

const what = process.argv[2] ?? 'decode';
const dir = process.argv.includes('--dir')
  ? process.argv[process.argv.indexOf('--dir') + 1]!
  : (process.env.LISA_BENCH_DIR ??
    (() => {
      throw new Error('give --dir DIR or LISA_BENCH_DIR (the generated checkpoint folder)');
    })());
const prefix = join(tmpdir(), `lisa-profile-${what}-${process.pid}`);
const model = LisaModel.load(join(dir, 'LISA-7B-v1'), {
  visionTower: join(dir, 'clip-vit-large-patch14'),
  precision: 'int4',
  profilePrefix: prefix,
  memoryArena: process.argv.includes('arena'),
});
if (what === 'sam') {
  await model.runSamEncoder(new Float32Array(3 * 1024 * 1024).map((_, i) => Math.sin(i)));
} else {
  const L = 320,
    H = model.config.llama.hiddenSize;
  const emb = model.embedTokens(Array.from({ length: L }, (_, i) => 100 + i * 7));
  const n = what === 'prefill' ? L : L - 1;
  const prefill = await llmForward(model.llm, emb.subarray(0, n * H), n);
  if (what === 'decode') await generate(model.llm, prefill, L - 1, { maxNewTokens: 6 });
  void H;
}
await model.endProfiling();
await model.release();
const files = readdirSync(tmpdir()).filter((f) => f.startsWith(`lisa-profile-${what}-${process.pid}`));
const byOp = new Map<string, { us: number; n: number }>();
let total = 0;
for (const f of files) {
  const events = JSON.parse(readFileSync(join(tmpdir(), f), 'utf8')) as {
    cat: string;
    name: string;
    ts: number;
    dur: number;
    args?: { op_name?: string };
  }[];
  // decode: only the steps after the prefill (the first model_run of the session).
  const runs = events.filter((e) => e.cat === 'Session' && e.name === 'model_run').sort((a, b) => a.ts - b.ts);
  const from = what === 'decode' && runs.length > 1 ? runs[0]!.ts + runs[0]!.dur : 0;
  for (const e of events) {
    if (e.cat !== 'Node' || !e.name.endsWith('_kernel_time') || e.ts < from) continue;
    const op = e.args?.op_name ?? e.name;
    const r = byOp.get(op) ?? { us: 0, n: 0 };
    r.us += e.dur;
    r.n++;
    total += e.dur;
    byOp.set(op, r);
  }
}
process.stdout.write(`${what}: ${(total / 1e6).toFixed(2)} s of kernel time in ${files.length} trace(s)\n`);
for (const [op, r] of [...byOp].sort((a, b) => b[1].us - a[1].us).slice(0, 12))
  process.stdout.write(
    `  ${op.padEnd(28)} ${(r.us / 1e6).toFixed(3).padStart(8)} s  ${((100 * r.us) / total).toFixed(1).padStart(5)} %  (${r.n} calls)\n`,
  );
