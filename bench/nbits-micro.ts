/** MatMulNBits at decode shape (M = 1): GB/s of int4 weights over 16 distinct [11008, 4096] matrices. */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Graph } from '../src/graph/graph.js';
import { attr } from '../src/graph/ir.js';
import { MS_DOMAIN } from '../src/graph/ops.js';
import { Engine } from '../src/graph/session.js';
import { f32 } from '../src/graph/tensor.js';

const N = 11008, K = 4096, bs = 32, blocks = K / bs, mats = 16;
const dir = mkdtempSync(join(tmpdir(), 'nbits-'));
for (const [acc, rank] of [[4, 3], [4, 2], [0, 3]] as const) {
  const g = new Graph(`nbits_${acc}_${rank}`);
  const x = g.input('x', 'float32', rank === 3 ? [1, 1, K] : [1, K]);
  let seed = 1;
  const outs = [];
  for (let m = 0; m < mats; m++) {
    const codes = new Uint8Array(N * blocks * 16);
    for (let i = 0; i < codes.length; i++) { seed = (seed * 1103515245 + 12345) >>> 0; codes[i] = seed >>> 24; }
    const scales = new Float32Array(N * blocks).map((_, i) => 0.01 + ((i * 7919 + m) % 97) / 1e4);
    const b = g.weight(`b${m}`, 'uint8', [N, blocks, 16], { kind: 'bytes', bytes: codes });
    const s = g.weight(`s${m}`, 'float32', [N * blocks], { kind: 'bytes', bytes: new Uint8Array(scales.buffer) });
    outs.push(g.node('MatMulNBits', [x, b, s], { K: attr.i(K), N: attr.i(N), bits: attr.i(4), block_size: attr.i(bs), accuracy_level: attr.i(acc) }, MS_DOMAIN)[0]!);
  }
  g.output(g.concat(outs.map((o) => g.reduceSum(o, [-1], false)), 0), 'y');
  const sess = await new Engine({ cacheDir: dir, threads: 2 }).load(g);
  const xv = f32(rank === 3 ? [1, 1, K] : [1, K], new Float32Array(K).map((_, i) => Math.sin(i)));
  await sess.run({ x: xv });
  const t = performance.now();
  for (let r = 0; r < 5; r++) await sess.run({ x: xv });
  const s = (performance.now() - t) / 5000;
  process.stdout.write(`accuracy_level ${acc}, A rank ${rank}: ${(s * 1000).toFixed(1)} ms for ${mats} matrices, ${((mats * N * K) / 2 / s / 1e9).toFixed(1)} GB/s of int4 weights\n`);
  await sess.release();
}
rmSync(dir, { recursive: true, force: true });
