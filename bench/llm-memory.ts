/** The 7B int4 LLM alone: load, prefill 320, 8 decode steps; time and peak RSS (pre-packing on/off). */
import { generate } from '../src/inference/generate.js';
import { llmForward } from '../src/inference/llm.js';
import { join } from 'node:path';
import { LisaModel } from '../src/models/lisa.js';
const dir = process.argv.includes('--dir')
  ? process.argv[process.argv.indexOf('--dir') + 1]!
  : (process.env.LISA_BENCH_DIR ??
    (() => {
      throw new Error('give --dir DIR or LISA_BENCH_DIR (the generated checkpoint folder)');
    })());
const prepack = process.argv[2] !== 'no-prepack';
const m = LisaModel.load(join(dir, 'LISA-7B-v1'), { visionTower: join(dir, 'clip-vit-large-patch14'), precision: 'int4', prepack });
const L = 320;
const emb = m.embedTokens(Array.from({ length: L }, (_, i) => 100 + i * 7));
await llmForward(m.llm, emb.subarray(0, 8 * 4096), 8);
let t = performance.now();
const pre = await llmForward(m.llm, emb, L);
const ps = (performance.now() - t) / 1000;
t = performance.now();
await generate(m.llm, pre, L, { maxNewTokens: 9 });
const ds = (performance.now() - t) / 8000;
process.stdout.write(
  `prepack ${prepack}: prefill ${(L / ps).toFixed(1)} tok/s, decode ${(1 / ds).toFixed(2)} tok/s, peak RSS ` +
    `${(process.resourceUsage().maxRSS / 2 ** 20).toFixed(2)} GiB\n`,
);
