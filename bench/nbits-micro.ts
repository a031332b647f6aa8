/**
 * MatMulNBits alone, per int4 format: 12 distinct [11008, 4096] matrices (random codes, the 7B's FFN shape), decode
 * (M = 1: ms for all 12) and prefill (M = 320: GOP/s), with and without zero points.
 *   node dist/bench/nbits-micro.js [--threads 2] [--blocks 32,64,128] [--acc 4]
 */
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { Graph } from '../src/graph/graph.js';
import { attr } from '../src/graph/ir.js';
import { MS_DOMAIN } from '../src/graph/ops.js';
import { Engine } from '../src/graph/session.js';
import { f32 } from '../src/graph/tensor.js';

const N = 11008,
  K = 4096;

export interface NbitsSpeed {
  decodeMs: number;
  prefillGops: number;
}

export async function nbitsSpeed(
  bs: number,
  zeroPoints: boolean,
  opts: { threads: number; acc?: number; mats?: number },
): Promise<NbitsSpeed> {
  const mats = opts.mats ?? 12,
    blocks = K / bs,
    blob = bs / 2;
  let seed = 1;
  const rand = (): number => ((seed = (seed * 1103515245 + 12345) >>> 0), seed >>> 24);
  const dir = mkdtempSync(join(tmpdir(), 'nbits-'));
  try {
    const g = new Graph(`nbits_${bs}_${zeroPoints}`);
    const x = g.input('x', 'float32', ['m', K]);
    const outs = [];
    for (let m = 0; m < mats; m++) {
      const scales = new Float32Array(N * blocks).map((_, i) => 0.01 + ((i * 7919 + m) % 97) / 1e4);
      const inputs = [
        x,
        g.weight(`b${m}`, 'uint8', [N, blocks, blob], { kind: 'bytes', bytes: new Uint8Array(N * blocks * blob).map(rand) }),
        g.weight(`s${m}`, 'float32', [N * blocks], { kind: 'bytes', bytes: new Uint8Array(scales.buffer) }),
      ];
      const zb = N * Math.ceil(blocks / 2);
      if (zeroPoints) inputs.push(g.weight(`z${m}`, 'uint8', [zb], { kind: 'bytes', bytes: new Uint8Array(zb).map(rand) }));
      const a = { K: attr.i(K), N: attr.i(N), bits: attr.i(4), block_size: attr.i(bs), accuracy_level: attr.i(opts.acc ?? 4) };
      outs.push(g.reduceSum(g.node('MatMulNBits', inputs, a, MS_DOMAIN)[0]!, [-1], false));
    }
    g.output(g.concat(outs, 0), 'y');
    const sess = await new Engine({ cacheDir: dir, threads: opts.threads }).load(g);
    const time = async (M: number, reps: number): Promise<number> => {
      const xv = f32(
        [M, K],
        new Float32Array(M * K).map((_, i) => Math.sin(i)),
      );
      await sess.run({ x: xv });
      const t = performance.now();
      for (let r = 0; r < reps; r++) await sess.run({ x: xv });
      return (performance.now() - t) / 1000 / reps;
    };
    const decode = await time(1, 10),
      prefill = await time(320, 2);
    await sess.release();
    return { decodeMs: (decode * 1000 * 12) / mats, prefillGops: (2 * 320 * N * K * mats) / prefill / 1e9 };
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}

if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) {
  const args = process.argv.slice(2);
  const get = (f: string, d: string): string => {
    const i = args.indexOf(f);
    return i >= 0 ? args[i + 1]! : d;
  };
  const threads = Number(get('--threads', '2')),
    acc = Number(get('--acc', '4'));
  for (const bs of get('--blocks', '32,64,128').split(',').map(Number))
    for (const zp of [false, true]) {
      const r = await nbitsSpeed(bs, zp, { threads, acc });
      process.stdout.write(
        `block ${bs}${zp ? ' + zero points' : ''}, acc ${acc}: ` +
          `decode ${r.decodeMs.toFixed(1)} ms, prefill ${r.prefillGops.toFixed(0)} GOP/s\n`,
      );
    }
}
