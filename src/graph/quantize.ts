import { toFloat32 } from '../io/dtype.js';
import type { TensorRef } from '../io/tensor-ref.js';
import type { Graph } from './graph.js';
import { attr, type Value } from './ir.js';
import { MS_DOMAIN } from './ops.js';
import { codeVersion, sourceKey } from './weights.js';

/**
 * Block quantisation for onnxruntime's MatMulNBits (com.microsoft): a Linear weight [N, K] (PyTorch's
 * [out, in]) becomes codes B [N, ceil(K / block), block · bits / 8] (packed low bits first along K) and one
 * float scale per block; the zero point is left at its default 2^(bits−1), so w ≈ (code − 2^(bits−1)) · scale.
 * 4-bit uses the Q4_0 rule (the block's largest-magnitude value maps exactly to code 0), 8-bit a symmetric
 * absmax / 127 scale.
 */
export interface QuantSpec {
  bits: 4 | 8;
  blockSize: number;
  accuracyLevel: number;
}

export const INT4: QuantSpec = { bits: 4, blockSize: 32, accuracyLevel: 4 };
export const INT8: QuantSpec = { bits: 8, blockSize: 32, accuracyLevel: 4 };

export function quantizeBlockwise(w: Float32Array, n: number, k: number, spec: QuantSpec): { codes: Uint8Array; scales: Float32Array } {
  const bs = spec.blockSize,
    blocks = Math.ceil(k / bs),
    blob = (bs * spec.bits) / 8;
  const codes = new Uint8Array(n * blocks * blob);
  const scales = new Float32Array(n * blocks);
  const zero = 1 << (spec.bits - 1),
    maxCode = (1 << spec.bits) - 1;
  const q = new Uint8Array(bs);
  for (let r = 0; r < n; r++) {
    for (let b = 0; b < blocks; b++) {
      const start = r * k + b * bs,
        len = Math.min(bs, k - b * bs);
      let amax = 0,
        signed = 0;
      for (let i = 0; i < len; i++) {
        const v = w[start + i]!;
        if (Math.abs(v) > amax) {
          amax = Math.abs(v);
          signed = v;
        }
      }
      const d = spec.bits === 4 ? signed / -8 : amax / 127;
      const inv = d !== 0 ? 1 / d : 0;
      scales[r * blocks + b] = d;
      q.fill(zero);
      for (let i = 0; i < len; i++) q[i] = Math.min(maxCode, Math.max(0, Math.round(w[start + i]! * inv) + zero));
      const o = (r * blocks + b) * blob;
      if (spec.bits === 8) codes.set(q, o);
      else for (let i = 0; i < bs; i += 2) codes[o + i / 2] = q[i]! | (q[i + 1]! << 4);
    }
  }
  return { codes, scales };
}

/** Dequantises back to [N, K] (for measuring the quantisation error). */
export function dequantizeBlockwise(codes: Uint8Array, scales: Float32Array, n: number, k: number, spec: QuantSpec): Float32Array {
  const bs = spec.blockSize,
    blocks = Math.ceil(k / bs),
    blob = (bs * spec.bits) / 8,
    zero = 1 << (spec.bits - 1);
  const out = new Float32Array(n * k);
  for (let r = 0; r < n; r++)
    for (let c = 0; c < k; c++) {
      const b = Math.floor(c / bs),
        i = c % bs,
        o = (r * blocks + b) * blob;
      const code = spec.bits === 8 ? codes[o + i]! : (codes[o + (i >> 1)]! >> ((i & 1) * 4)) & 15;
      out[r * k + c] = (code - zero) * scales[r * blocks + b]!;
    }
  return out;
}

/**
 * y = x @ W.T for a checkpoint Linear weight, through MatMulNBits. The codes and scales are produced once
 * (one tensor in memory at a time) and written into the compile cache.
 */
export function quantizedLinear(g: Graph, x: Value, t: TensorRef, spec: QuantSpec): Value {
  if (t.shape.length !== 2) throw new Error(`tensor ${t.name}: quantizedLinear needs a 2-D weight`);
  const [n, k] = t.shape as [number, number];
  const blocks = Math.ceil(k / spec.blockSize),
    blob = (spec.blockSize * spec.bits) / 8;
  const key = `${sourceKey(t)}:q${spec.bits}b${spec.blockSize}:${codeVersion(quantizeBlockwise, toFloat32)}`;
  let cached: { codes: Uint8Array; scales: Float32Array } | null = null;
  const quantized = (): { codes: Uint8Array; scales: Float32Array } => {
    cached ??= quantizeBlockwise(toFloat32(t.dtype, t.bytes()), n, k, spec);
    return cached;
  };
  // Each source is produced when the cache writes it; drop the shared result after the second use.
  let uses = 0;
  const take = <T>(f: (q: { codes: Uint8Array; scales: Float32Array }) => T): T => {
    const v = f(quantized());
    if (++uses === 2) cached = null;
    return v;
  };
  const codes = g.weight(`${t.name}.q${spec.bits}`, 'uint8', [n, blocks, blob], {
    kind: 'computed',
    key: `${key}:codes`,
    byteLength: n * blocks * blob,
    produce: () => take((q) => q.codes),
  });
  const scales = g.weight(`${t.name}.scales`, 'float32', [n * blocks], {
    kind: 'computed',
    key: `${key}:scales`,
    byteLength: n * blocks * 4,
    produce: () => take((q) => new Uint8Array(q.scales.buffer)),
  });
  return g.node(
    'MatMulNBits',
    [x, codes, scales],
    {
      K: attr.i(k),
      N: attr.i(n),
      bits: attr.i(spec.bits),
      block_size: attr.i(spec.blockSize),
      accuracy_level: attr.i(spec.accuracyLevel),
    },
    MS_DOMAIN,
  )[0]!;
}
