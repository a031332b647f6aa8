/** One SAM ViT-H encoder session: load + two runs, printing time and peak RSS (for the arena experiment). */
import { join } from 'node:path';
import { LisaModel } from '../src/models/lisa.js';
const dir = process.argv.includes('--dir')
  ? process.argv[process.argv.indexOf('--dir') + 1]!
  : (process.env.LISA_BENCH_DIR ??
    (() => {
      throw new Error('give --dir DIR or LISA_BENCH_DIR (the generated checkpoint folder)');
    })());
const arena = process.argv[2] !== 'no-arena';
const sam = process.argv[3] === 'int8' ? 'int8' : 'fp32';
const m = LisaModel.load(join(dir, 'LISA-7B-v1'), {
  visionTower: join(dir, 'clip-vit-large-patch14'),
  memoryArena: arena,
  samPrecision: sam,
});
const px = new Float32Array(3 * 1024 * 1024).map((_, i) => Math.sin(i));
let t = performance.now();
await m.runSamEncoder(px);
const first = (performance.now() - t) / 1000;
t = performance.now();
await m.runSamEncoder(px);
process.stdout.write(
  `arena ${arena} sam ${sam}: first ${first.toFixed(1)} s, second ${((performance.now() - t) / 1000).toFixed(1)} s, peak RSS ` +
    `${(process.resourceUsage().maxRSS / 2 ** 20).toFixed(2)} GiB\n`,
);
