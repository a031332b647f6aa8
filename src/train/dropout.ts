import { createHash } from 'node:crypto';
import { mulberry32 } from '../inference/generate.js';

/**
 * nn.Dropout(p)'s mask in train mode: each element kept with probability 1 − p and scaled by 1/(1 − p).
 * Seeded per (step seed, module), so a resumed run draws the same masks as an uninterrupted one. (PyTorch's
 * own RNG stream is not reproduced: the official run's masks depend on its CUDA generator state.)
 */
export function dropoutMask(shape: readonly number[], p: number, seed: number, name: string): Float32Array {
  const n = shape.reduce((a, b) => a * b, 1);
  const h = createHash('sha256').update(`${seed}:${name}`).digest();
  const rand = mulberry32(h.readUInt32LE(0));
  const keep = Math.fround(1 / (1 - p));
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) out[i] = rand() >= p ? keep : 0;
  return out;
}
