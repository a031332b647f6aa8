import { availableParallelism } from 'node:os';
import { toFloat32 } from '../io/dtype.js';
import type { TensorRef } from '../io/tensor-ref.js';
import type { Graph } from './graph.js';
import { attr, type Value } from './ir.js';
import { MS_DOMAIN } from './ops.js';
import { quantizeInWorkers, setRowQuantizer } from './quantize-pool.js';
import { codeVersion, sourceKey } from './weights.js';

/**
 * Block quantisation for onnxruntime's MatMulNBits (com.microsoft): a Linear weight [N, K] (PyTorch's [out, in])
 * becomes codes B [N, ceil(K / block), block · bits / 8] (packed low bits first along K), one float scale per block
 * and, with `zeroPoints`, one integer zero point per block (packed the same way, 4-bit ones two to a byte):
 * w ≈ (code − zero) · scale. Without zero points the zero is MatMulNBits' default 2^(bits−1).
 *
 * Rules (`method`):
 * - `absmax`: 4-bit is llama.cpp's Q4_0 rule (the block's largest-magnitude value maps exactly to code 0), 8-bit a
 *   symmetric absmax / 127 scale. The format lisa-ts used before `search`, kept selectable as `int4-q4_0`.
 * - `minmax`: the block's [min, max] (widened to include 0) spread over all codes.
 * - `search`: calibration-free error minimisation per block. Clipping ranges (the full range shrunk by 0–25 %) give
 *   candidate codes; for each, the zero points z−1, z, z+1 and the least-squares scale for those codes
 *   (s = Σ w·(q−z) / Σ (q−z)²) are scored in closed form (SSE = Σw² − (Σ w·(q−z))² / Σ (q−z)²); the best is refined by
 *   re-rounding with its scale and zero while that helps (alternating codes and scale, as HQQ does). The absmax /
 *   minmax result is one of the candidates, so `search` never has a larger block error than they do.
 */
export type QuantMethod = 'absmax' | 'minmax' | 'search';
export interface QuantSpec {
  bits: 4 | 8;
  blockSize: number;
  accuracyLevel: number;
  /** One zero point per block (asymmetric); without it, the default 2^(bits−1). */
  zeroPoints?: boolean;
  /** Default `absmax`. */
  method?: QuantMethod;
}

/** The int4 format before this one: llama.cpp's Q4_0 rule, block 32, symmetric (`--precision int4-q4_0`). */
export const Q4_0: QuantSpec = { bits: 4, blockSize: 32, accuracyLevel: 4, method: 'absmax' };
/**
 * `--precision int4`, chosen by measurement (README "Quantisation"): block 128 with zero points and the error search.
 * Against Q4_0 in onnxruntime it prefills 1.33× (13B: 1.67×) and decodes 1.19× (1.26×) faster, 1.7 GiB less resident
 * on the 7B; end to end it agrees with fp32 better (logit cosine and teacher-forced mask IoU on both fixtures, top-1
 * at least as well), while its per-tensor weight error is 2–12 % higher (0.72 fewer bits per weight).
 */
export const INT4: QuantSpec = { bits: 4, blockSize: 128, accuracyLevel: 4, zeroPoints: true, method: 'search' };
/** `--precision int4-b32`: block 32, zero points, the search: a lower error than Q4_0 on every tensor set, at Q4_0's speed. */
export const INT4_B32: QuantSpec = { bits: 4, blockSize: 32, accuracyLevel: 4, zeroPoints: true, method: 'search' };
export const INT8: QuantSpec = { bits: 8, blockSize: 32, accuracyLevel: 4, method: 'absmax' };
/** SAM's image-encoder Linear layers at `--sam-precision int8` (ViT-H: 22.7 s against fp32's 26.6 s, mask IoU 0.993). */
export const SAM_INT8: QuantSpec = { bits: 8, blockSize: 128, accuracyLevel: 4, method: 'search' };

export interface Quantized {
  codes: Uint8Array;
  scales: Float32Array;
  /** [N, ceil(blocks · bits / 8)] packed per row, or null (default zero point). */
  zeros: Uint8Array | null;
}

/** Bytes of zero points per row: 4-bit ones two to a byte, each row padded to whole bytes. */
export function zeroPointRowBytes(blocks: number, bits: number): number {
  return Math.ceil((blocks * bits) / 8);
}

/** Clipping ranges tried by `search`: the block's range times these (a finer grid measured no better). */
const SHRINK = [1, 0.95, 0.9, 0.85, 0.8, 0.75];
/** Σ w·q, Σ q, Σ q² of the last `roundInto` (module scratch: the quantiser runs over billions of weights). */
const sums = new Float64Array(3);

/** Codes clamp(round(w / s) + z) of one block into `out`, accumulating `sums` in the same pass. */
function roundInto(w: Float32Array, start: number, len: number, s: number, z: number, maxq: number, out: Uint8Array): void {
  const inv = s !== 0 ? 1 / s : 0,
    zh = z + 0.5,
    top = maxq + 0.5;
  let wq = 0,
    qs = 0,
    qq = 0;
  for (let i = 0; i < len; i++) {
    const v = w[start + i]!;
    // clamp(round(v / s) + z) with round = floor(x + 0.5), as Math.round; floor by truncation once t ≥ 0.
    let t = v * inv + zh;
    t = t < 0 ? 0 : t > top ? top : t;
    const c = t | 0;
    out[i] = c;
    wq += v * c;
    qs += c;
    qq += c * c;
  }
  sums[0] = wq;
  sums[1] = qs;
  sums[2] = qq;
}

/** Quantises one block: writes its codes into q[0..len) and returns [scale, zero]. `tmp` is scratch of the same size. */
function quantizeBlock(w: Float32Array, start: number, len: number, spec: QuantSpec, q: Uint8Array, tmp: Uint8Array): [number, number] {
  const maxq = (1 << spec.bits) - 1,
    mid = 1 << (spec.bits - 1),
    method = spec.method ?? 'absmax',
    zp = spec.zeroPoints === true;
  let lo = 0,
    hi = 0,
    amax = 0,
    signed = 0,
    wsq = 0,
    wsum = 0;
  for (let i = 0; i < len; i++) {
    const v = w[start + i]!;
    if (v < lo) lo = v;
    if (v > hi) hi = v;
    if (Math.abs(v) > amax) {
      amax = Math.abs(v);
      signed = v;
    }
    wsq += v * v;
    wsum += v;
  }
  if (amax === 0) {
    q.fill(zp ? 0 : mid, 0, len);
    return [0, zp ? 0 : mid];
  }
  if (method === 'minmax' && !zp) throw new Error('quantizeBlockwise: minmax needs zero points');
  // The plain rules: absmax (Q4_0 for 4 bits) without zero points, minmax with them.
  let s0: number, z0: number;
  if (zp) {
    s0 = (hi - lo) / maxq;
    z0 = Math.min(maxq, Math.max(0, Math.round(-lo / s0)));
  } else {
    s0 = spec.bits === 4 ? signed / -8 : amax / 127;
    z0 = mid;
  }
  roundInto(w, start, len, s0, z0, maxq, q);
  if (method !== 'search') return [s0, z0];
  // Least-squares scale for the codes in `c` under zero points z−1, z, z+1 (z alone without zero points); keeps the best.
  let best = Infinity,
    bestS = s0,
    bestZ = z0;
  const score = (c: Uint8Array, z: number): boolean => {
    let improved = false;
    for (let dz = zp ? -1 : 0; dz <= (zp ? 1 : 0); dz++) {
      const zz = z + dz;
      if (zz < 0 || zz > maxq) continue;
      const wd = sums[0]! - zz * wsum,
        dd = sums[2]! - 2 * zz * sums[1]! + len * zz * zz;
      if (dd <= 0 || wd <= 0) continue;
      const sse = wsq - (wd * wd) / dd;
      if (sse < best) {
        best = sse;
        bestS = wd / dd;
        bestZ = zz;
        improved = true;
      }
    }
    if (improved && c !== q) q.set(c.subarray(0, len));
    return improved;
  };
  score(q, z0);
  if (best === Infinity) return [s0, z0]; // degenerate block: keep the plain rule
  for (const f of SHRINK) {
    if (zp) {
      const s = ((hi - lo) * f) / maxq;
      const z = Math.min(maxq, Math.max(0, Math.round((-lo * f) / s)));
      roundInto(w, start, len, s, z, maxq, tmp);
      score(tmp, z);
    } else {
      roundInto(w, start, len, (signed * f) / -mid, mid, maxq, tmp);
      score(tmp, mid);
    }
  }
  // Alternate: re-round with the best scale and zero, refit the scale, while it improves.
  for (let it = 0; it < 3; it++) {
    roundInto(w, start, len, bestS, bestZ, maxq, tmp);
    if (!score(tmp, bestZ)) break;
  }
  return [bestS, bestZ];
}

/** Quantises rows [r0, r1) of w [N, K] into `out` (rows are independent: the unit the worker threads split). */
export function quantizeRows(w: Float32Array, k: number, spec: QuantSpec, r0: number, r1: number, out: Quantized): void {
  const bs = spec.blockSize,
    blocks = Math.ceil(k / bs),
    blob = (bs * spec.bits) / 8,
    mid = 1 << (spec.bits - 1),
    zRow = zeroPointRowBytes(blocks, spec.bits);
  const { codes, scales, zeros } = out;
  const q = new Uint8Array(bs),
    tmp = new Uint8Array(bs);
  for (let r = r0; r < r1; r++) {
    for (let b = 0; b < blocks; b++) {
      const len = Math.min(bs, k - b * bs);
      const [s, z] = quantizeBlock(w, r * k + b * bs, len, spec, q, tmp);
      q.fill(zeros ? z : mid, len); // the padding past K dequantises to 0
      scales[r * blocks + b] = s;
      if (zeros) zeros[r * zRow + (spec.bits === 8 ? b : b >> 1)]! |= spec.bits === 8 ? z : z << ((b & 1) * 4);
      const o = (r * blocks + b) * blob;
      if (spec.bits === 8) codes.set(q, o);
      else for (let i = 0; i < bs; i += 2) codes[o + i / 2] = q[i]! | (q[i + 1]! << 4);
    }
  }
}

setRowQuantizer(quantizeRows);

/** Below this many weights the search runs on the calling thread alone (a worker round trip costs more). */
const PARALLEL_MIN = 1 << 20;

/**
 * `threads` > 1 splits the rows of a large `search` over worker threads (quantize-pool.ts; the 7B's conversion is
 * billions of weights); the result is identical to the single-threaded one.
 */
export function quantizeBlockwise(w: Float32Array, n: number, k: number, spec: QuantSpec, threads = 1): Quantized {
  const blocks = Math.ceil(k / spec.blockSize),
    blob = (spec.blockSize * spec.bits) / 8;
  const parallel = threads > 1 && spec.method === 'search' && n * k >= PARALLEL_MIN && n >= threads;
  const out: Quantized = {
    codes: new Uint8Array(n * blocks * blob),
    scales: new Float32Array(n * blocks),
    zeros: spec.zeroPoints ? new Uint8Array(n * zeroPointRowBytes(blocks, spec.bits)) : null,
  };
  if (parallel) quantizeInWorkers(w, n, k, spec, out, threads);
  else quantizeRows(w, k, spec, 0, n, out);
  return out;
}

/** Dequantises back to [N, K] (for measuring the quantisation error). */
export function dequantizeBlockwise(qw: Quantized, n: number, k: number, spec: QuantSpec): Float32Array {
  const bs = spec.blockSize,
    blocks = Math.ceil(k / bs),
    blob = (bs * spec.bits) / 8,
    zRow = zeroPointRowBytes(blocks, spec.bits);
  const out = new Float32Array(n * k);
  for (let r = 0; r < n; r++)
    for (let c = 0; c < k; c++) {
      const b = Math.floor(c / bs),
        i = c % bs,
        o = (r * blocks + b) * blob;
      const code = spec.bits === 8 ? qw.codes[o + i]! : (qw.codes[o + (i >> 1)]! >> ((i & 1) * 4)) & 15;
      const zb = qw.zeros ? qw.zeros[r * zRow + (spec.bits === 8 ? b : b >> 1)]! : 0;
      const zero = !qw.zeros ? 1 << (spec.bits - 1) : spec.bits === 8 ? zb : (zb >> ((b & 1) * 4)) & 15;
      out[r * k + c] = (code - zero) * qw.scales[r * blocks + b]!;
    }
  return out;
}

/** A cache-key tag for a format: changing any field re-quantises. */
export function quantTag(spec: QuantSpec): string {
  return `q${spec.bits}b${spec.blockSize}${spec.zeroPoints ? 'z' : ''}-${spec.method ?? 'absmax'}`;
}

/**
 * y = x @ W.T for a checkpoint Linear weight, through MatMulNBits. The codes, scales (and zero points) are produced
 * once (one tensor in memory at a time) and written into the compile cache.
 */
export function quantizedLinear(g: Graph, x: Value, t: TensorRef, spec: QuantSpec): Value {
  if (t.shape.length !== 2) throw new Error(`tensor ${t.name}: quantizedLinear needs a 2-D weight`);
  const [n, k] = t.shape as [number, number];
  const blocks = Math.ceil(k / spec.blockSize),
    blob = (spec.blockSize * spec.bits) / 8;
  const key = `${sourceKey(t)}:${quantTag(spec)}:${codeVersion(quantizeRows, quantizeBlock, roundInto, toFloat32)}`;
  let cached: Quantized | null = null;
  const parts = spec.zeroPoints ? 3 : 2;
  // Each source is produced when the cache writes it; drop the shared result after its last use.
  let uses = 0;
  const take = (f: (q: Quantized) => Uint8Array): Uint8Array => {
    cached ??= quantizeBlockwise(toFloat32(t.dtype, t.bytes()), n, k, spec, availableParallelism());
    const v = f(cached);
    if (++uses === parts) cached = null;
    return v;
  };
  const inputs = [
    x,
    g.weight(`${t.name}.q${spec.bits}`, 'uint8', [n, blocks, blob], {
      kind: 'computed',
      key: `${key}:codes`,
      byteLength: n * blocks * blob,
      produce: () => take((q) => q.codes),
    }),
    g.weight(`${t.name}.scales`, 'float32', [n * blocks], {
      kind: 'computed',
      key: `${key}:scales`,
      byteLength: n * blocks * 4,
      produce: () => take((q) => new Uint8Array(q.scales.buffer)),
    }),
  ];
  if (spec.zeroPoints) {
    const bytes = n * zeroPointRowBytes(blocks, spec.bits);
    inputs.push(
      g.weight(`${t.name}.zeros`, 'uint8', [bytes], {
        kind: 'computed',
        key: `${key}:zeros`,
        byteLength: bytes,
        produce: () => take((q) => q.zeros!),
      }),
    );
  }
  return g.node(
    'MatMulNBits',
    inputs,
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
