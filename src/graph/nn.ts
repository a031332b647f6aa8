import type { Graph } from './graph.js';
import { attr, type Attr, type Value } from './ir.js';
import { MS_DOMAIN } from './ops.js';

/**
 * Composite layers built from primitive ops, shared by CLIP, LLaMA and SAM. Built from primitives (not one
 * opaque fused op) so that training's autodiff sees only ops with gradient rules; a fused fast path can
 * replace one where it measures faster and gives the same numbers.
 */

/** torch.finfo(torch.float32).min: what HF LLaMA puts in masked attention positions. */
export const F32_MIN = -3.4028234663852886e38;

/** `x @ weight.T + bias`, as nn.Linear with weight [out, in] stored as in PyTorch. */
export function linear(g: Graph, x: Value, weightT: Value, bias: Value | null): Value {
  const y = g.matmul(x, weightT);
  return bias ? g.add(y, bias) : y;
}

/** [B, S, H*D] → [B, H, S, D]. */
export function splitHeads(g: Graph, x: Value, heads: number, headDim: number): Value {
  return g.transpose(g.reshape(x, [0, 0, heads, headDim]), [0, 2, 1, 3]);
}
/** [B, H, S, D] → [B, S, H*D]. */
export function mergeHeads(g: Graph, x: Value, heads: number, headDim: number): Value {
  return g.reshape(g.transpose(x, [0, 2, 1, 3]), [0, 0, heads * headDim]);
}

export interface AttentionOptions {
  /** Multiply the scores by this; unset: divide them by sqrt(head_dim), as HF LLaMA does. 1: leave them. */
  scale?: number;
  /** Query i may attend key j only when j <= past + i (decoder self-attention). */
  causal?: boolean;
  /** Additive bias broadcast onto the [B, H, S, T] scores (e.g. a padding mask, or SAM's relative positions). */
  bias?: Value;
}

/**
 * Scaled dot-product attention on [B, H, S, D] queries and [B, Hkv, T, D] keys/values (Hkv divides H:
 * grouped-query attention repeats each kv head H/Hkv times, as HF's repeat_kv). Softmax in float32.
 */
export function attention(g: Graph, q: Value, k: Value, v: Value, opts: AttentionOptions = {}): Value {
  const heads = q.shape[1] as number,
    kvHeads = k.shape[1] as number,
    headDim = q.shape[3] as number;
  if (heads % kvHeads !== 0) throw new Error(`attention: ${heads} query heads do not divide into ${kvHeads} kv heads`);
  if (kvHeads !== heads) {
    k = repeatKv(g, k, heads / kvHeads);
    v = repeatKv(g, v, heads / kvHeads);
  }
  let scores = g.matmul(q, g.transpose(k, [0, 1, 3, 2]));
  if (opts.scale === undefined) scores = g.div(scores, g.scalar(Math.sqrt(headDim)));
  else if (opts.scale !== 1) scores = g.mul(scores, g.scalar(opts.scale));
  if (opts.causal) scores = g.add(scores, causalMask(g, q, k));
  if (opts.bias) scores = g.add(scores, opts.bias);
  return g.matmul(g.softmax(scores, -1), v);
}

/** onnxruntime's FusedMatMul (see its schema in ops.ts): `alpha`·(a' @ b') with the operands' batch/matrix transposes. */
export function fusedMatMul(
  g: Graph,
  a: Value,
  b: Value,
  opts: { alpha?: number; transA?: boolean; transB?: boolean; transBatchA?: boolean; transBatchB?: boolean },
): Value {
  const flag = (on: boolean | undefined): Attr => attr.i(on ? 1 : 0);
  const attrs = {
    alpha: attr.f(opts.alpha ?? 1),
    transA: flag(opts.transA),
    transB: flag(opts.transB),
    transBatchA: flag(opts.transBatchA),
    transBatchB: flag(opts.transBatchB),
  };
  return g.node('FusedMatMul', [a, b], attrs, MS_DOMAIN)[0]!;
}

/**
 * Decoder self-attention over a KV cache read in place. `q` [1, S, H·D] and this call's `kNew`/`vNew`
 * [1, S, Hkv·D] are the projections (rotary applied); `pastK`/`pastV` [T, Hkv, D] are the T cached positions,
 * seq-major: zero-copy views of the caller's buffers, so a step reads no spare capacity and appending a step's
 * rows is one contiguous copy; FusedMatMul's batch transpose reads them as [Hkv, T, D] without a copy.
 * `mask` (cacheMask: one per graph, shared by the layers) is additive over [past | new]: 0 or F32_MIN over the
 * past (an empty cache is fed as one masked row: onnxruntime's kernels fault on a zero-length axis) and causal
 * over the new rows. One float32 softmax over the concatenated scores — they are small,
 * the cache is not (concatenating it copied every layer's cache each token: 45 ms of a 7B decode step).
 * HF's scores/√D and F32_MIN masking; GQA groups the H/Hkv query heads of each kv head (HF's repeat_kv
 * order). Returns [1, S, H·D].
 */
export function cachedAttention(g: Graph, q: Value, kNew: Value, vNew: Value, pastK: Value, pastV: Value, mask: CacheMask): Value {
  const kvHeads = pastK.shape[1] as number,
    hd = pastK.shape[2] as number;
  const heads = (q.shape[2] as number) / hd;
  if (!Number.isInteger(heads) || heads % kvHeads !== 0)
    throw new Error(`attention: ${q.shape[2]} query channels do not split into heads of ${hd} grouped by ${kvHeads} kv heads`);
  const n = heads / kvHeads;
  // Rows [R, Hkv, group, D]; transBatch makes them [Hkv, group, R, D] (read strided, in place).
  const qg = g.reshape(q, [-1, kvHeads, n, hd]);
  const rows = (x: Value): Value => g.reshape(x, [-1, kvHeads, 1, hd]);
  const scores = (k: Value): Value =>
    fusedMatMul(g, qg, rows(k), { alpha: 1 / Math.sqrt(hd), transBatchA: true, transBatchB: true, transB: true });
  const sPast = scores(pastK),
    sNew = scores(kNew);
  const p = g.softmax(g.add(g.concat([sPast, sNew], -1), mask.mask), -1);
  const [pPast, pNew] = g.node('Split', [p, mask.sizes], { axis: attr.i(-1) }, '', undefined, [sPast.shape, sNew.shape]);
  const weighted = (pr: Value, v: Value): Value => fusedMatMul(g, pr, rows(v), { transBatchB: true });
  const out = g.add(weighted(pPast!, pastV), weighted(pNew!, vNew)); // [Hkv, n, S, D]
  return g.reshape(g.transpose(out, [2, 0, 1, 3]), [1, -1, heads * hd]);
}

/** cachedAttention's mask [S, T + S] over [past | new], and the split sizes [T, S] of its last axis. */
export interface CacheMask {
  mask: Value;
  sizes: Value;
}

/** The CacheMask of the cache's `pastMask` [1, T] and the new rows `x` [1, S, ..]. */
export function cacheMask(g: Graph, pastMask: Value, x: Value): CacheMask {
  const s = g.dimOf(x, 1),
    t = g.dimOf(pastMask, 1);
  const mask = g.concat([g.expandTo(pastMask, [s, t]), causalMask(g, x, x, 1)], -1);
  return { mask, sizes: g.concat([t, s], 0) };
}

function repeatKv(g: Graph, x: Value, n: number): Value {
  const h = x.shape[1] as number,
    d = x.shape[3] as number;
  const e = g.expand(g.unsqueeze(x, [2]), [1, 1, n, 1, 1]);
  return g.reshape(e, [0, h * n, -1, d]);
}

/**
 * [S, T] additive mask: 0 where key j <= (T - S) + i, F32_MIN elsewhere, with S and T the sizes of `q`'s and
 * `k`'s axis `axis` (the sequence axis: 2 of [B, H, S, D]). S and T may be symbolic.
 */
export function causalMask(g: Graph, q: Value, k: Value, axis = 2): Value {
  const s = g.gather(g.shapeOf(q), g.constant('int64', [], [axis]));
  const t = g.gather(g.shapeOf(k), g.constant('int64', [], [axis]));
  const one = g.constant('int64', [], [1]);
  const rows = g.range(g.sub(t, s), t, one); // absolute positions of the queries
  const cols = g.range(g.constant('int64', [], [0]), t, one);
  const future = g.greater(g.unsqueeze(cols, [0]), g.unsqueeze(rows, [1]));
  return g.where(future, g.scalar(F32_MIN), g.scalar(0));
}

/**
 * Rotary position embedding as HF LLaMA applies it (rotate_half form, not interleaved):
 * x * cos + rotate_half(x) * sin with cos/sin = cos/sin(pos * inv_freq) repeated over both halves.
 * `x` is [B, H, S, D]; `positions` is [B, S] float32; `invFreq` is [D/2] float32.
 */
export function rotary(g: Graph, x: Value, positions: Value, invFreq: Value): { out: Value; cos: Value; sin: Value } {
  const { cos, sin } = rotaryCosSin(g, positions, invFreq);
  return { out: applyRotary(g, x, cos, sin), cos, sin };
}

/** cos/sin tables [B, 1, S, D] for `positions` [B, S]. */
export function rotaryCosSin(g: Graph, positions: Value, invFreq: Value): { cos: Value; sin: Value } {
  const freqs = g.mul(g.unsqueeze(positions, [2]), invFreq); // [B, S, D/2]
  const emb = g.unsqueeze(g.concat([freqs, freqs], -1), [1]); // [B, 1, S, D]
  return { cos: g.cos(emb), sin: g.sin(emb) };
}

export function applyRotary(g: Graph, x: Value, cos: Value, sin: Value): Value {
  const d = x.shape[3] as number;
  const x1 = g.slice(x, [0], [d / 2], [3]);
  const x2 = g.slice(x, [d / 2], [d], [3]);
  const rotated = g.concat([g.neg(x2), x1], 3);
  return g.add(g.mul(x, cos), g.mul(rotated, sin));
}

/**
 * onnxruntime's fused RotaryEmbedding (com.microsoft) on [B, S, H*D] with cos/sin caches [maxPos, D/2] and
 * int64 position ids [B, S]; same maths as `rotary` in the non-interleaved layout.
 */
export function rotaryFused(g: Graph, x: Value, positionIds: Value, cosCache: Value, sinCache: Value, numHeads: number): Value {
  return g.node(
    'RotaryEmbedding',
    [x, positionIds, cosCache, sinCache],
    { interleaved: attr.i(0), num_heads: attr.i(numHeads) },
    MS_DOMAIN,
  )[0]!;
}

/**
 * ConvTranspose2d with kernel = stride (non-overlapping patches) on pixel rows: x [N, R, Ci] (one row per input
 * pixel, any order), weight [Ci, Co, k, k] as PyTorch stores it, bias [Co] → [N, R·k·k, Co], where input row r
 * becomes the k·k rows (r, a, b) of its output patch: y[n, (r, a, b), co] = Σ_ci x[n, r, ci]·W[ci, co, a, b] + bias[co].
 * One GEMM, channels last, and no pixel shuffle: the caller puts the rows in raster order once, at the end
 * (SAM's mask decoder does it on the small mask tensor). The same values as ConvTranspose, up to summation order.
 */
export function convTransposePatches(g: Graph, x: Value, weight: Value, bias: Value | null): Value {
  const [ci, co, k, k2] = weight.shape as number[];
  if (k !== k2 || x.shape[2] !== ci)
    throw new Error(`convTransposePatches: weight ${JSON.stringify(weight.shape)} does not fit input ${JSON.stringify(x.shape)}`);
  const w = g.reshape(g.transpose(weight, [0, 2, 3, 1]), [ci!, k! * k! * co!]); // columns in (a, b, co) order
  let y = g.matmul(x, w);
  if (bias) y = g.add(y, g.reshape(g.expand(g.unsqueeze(bias, [0]), [k! * k!, co!]), [k! * k! * co!]));
  return g.reshape(y, [0, -1, co!]);
}

// ---- SAM image-encoder helpers -------------------------------------------------------------------------

/** SAM's window_partition: [B, H, W, C] → ([B*nW, ws, ws, C], padded H, W); pads bottom/right with zeros. */
export function windowPartition(g: Graph, x: Value, ws: number): { windows: Value; hp: number; wp: number } {
  const [b, h, w, c] = x.shape as number[];
  const padH = (ws - (h! % ws)) % ws,
    padW = (ws - (w! % ws)) % ws;
  if (padH || padW) x = g.pad(x, [0, 0, 0, 0, 0, padH, padW, 0]);
  const hp = h! + padH,
    wp = w! + padW;
  const r = g.reshape(x, [b!, hp / ws, ws, wp / ws, ws, c!]);
  return { windows: g.reshape(g.transpose(r, [0, 1, 3, 2, 4, 5]), [-1, ws, ws, c!]), hp, wp };
}

/** SAM's window_unpartition: back to [B, H, W, C], dropping the padding. */
export function windowUnpartition(g: Graph, windows: Value, ws: number, hp: number, wp: number, h: number, w: number): Value {
  const c = windows.shape[3] as number;
  const r = g.reshape(windows, [-1, hp / ws, wp / ws, ws, ws, c]);
  let x = g.reshape(g.transpose(r, [0, 1, 3, 2, 4, 5]), [-1, hp, wp, c]);
  if (hp > h || wp > w) x = g.slice(x, [0, 0], [h, w], [1, 2]);
  return x;
}

/**
 * SAM's get_rel_pos indices: row i, column j of the [q, k] grid picks entry
 * long(i·max(k/q,1) − j·max(q/k,1) + (k−1)·max(q/k,1)) of the [2·max(q,k)−1, C] table. (When a stored table
 * has another length the official code first resizes it linearly; the model loader does that.)
 */
export function relPosIndices(q: number, k: number): BigInt64Array {
  const qScale = Math.max(k / q, 1),
    kScale = Math.max(q / k, 1);
  const out = new BigInt64Array(q * k);
  for (let i = 0; i < q; i++) for (let j = 0; j < k; j++) out[i * k + j] = BigInt(Math.trunc(i * qScale - j * kScale + (k - 1) * kScale));
  return out;
}

/**
 * SAM's add_decomposed_rel_pos: attn [B, q_h*q_w, k_h*k_w] += rel_h + rel_w, where
 * rel_h[b,h,w,k] = Σc q[b,h,w,c]·Rh[h,k,c] and rel_w likewise over the width axis.
 * `q` is [B, q_h*q_w, C]; `relPosH` [2*q_h-1, C] and `relPosW` [2*q_w-1, C] are the stored tables.
 */
export function addDecomposedRelPos(
  g: Graph,
  attn: Value,
  q: Value,
  relPosH: Value,
  relPosW: Value,
  qSize: [number, number],
  kSize: [number, number],
): Value {
  const [qh, qw] = qSize,
    [kh, kw] = kSize;
  const c = q.shape[2] as number;
  const rh = g.gather(relPosH, g.constant('int64', [qh, kh], relPosIndices(qh, kh))); // [qh, kh, C]
  const rw = g.gather(relPosW, g.constant('int64', [qw, kw], relPosIndices(qw, kw))); // [qw, kw, C]
  const rq = g.reshape(q, [-1, qh, qw, c]);
  const relH = g.matmul(rq, g.transpose(rh, [0, 2, 1])); // [B, qh, qw, kh]
  const relW = g.transpose(g.matmul(g.transpose(rq, [0, 2, 1, 3]), g.transpose(rw, [0, 2, 1])), [0, 2, 1, 3]); // [B, qh, qw, kw]
  const a = g.reshape(attn, [-1, qh, qw, kh, kw]);
  const sum = g.add(g.add(a, g.unsqueeze(relH, [4])), g.unsqueeze(relW, [3]));
  return g.reshape(sum, [-1, qh * qw, kh * kw]);
}

/**
 * SAM attention scores with the decomposed relative positions folded into the product:
 * [q·s, relH, relW] · [k, onehot(kh), onehot(kw)]ᵀ = s·q·kᵀ + relH[kh] + relW[kw], one MatMul instead of a
 * MatMul plus two broadcast Adds over the [B, HW, HW] scores (1 GiB each in ViT-H's global blocks; those
 * Adds were 22 % of the encoder's time). Same result as addDecomposedRelPos(matmul(q·s, kᵀ), q, …).
 * `q`, `k` are [B, qh·qw, C] and [B, kh·kw, C].
 */
export function relPosAttentionScores(
  g: Graph,
  q: Value,
  k: Value,
  scale: number,
  relPosH: Value,
  relPosW: Value,
  qSize: [number, number],
  kSize: [number, number],
): Value {
  const [qAug, kAugT] = relPosAugmented(g, q, k, scale, relPosH, relPosW, qSize, kSize);
  return g.matmul(qAug, kAugT);
}

/** The two factors of relPosAttentionScores: [q·s, relH, relW] and [k, onehot(kh), onehot(kw)]ᵀ. */
function relPosAugmented(
  g: Graph,
  q: Value,
  k: Value,
  scale: number,
  relPosH: Value,
  relPosW: Value,
  qSize: [number, number],
  kSize: [number, number],
): [Value, Value] {
  const [qh, qw] = qSize,
    [kh, kw] = kSize;
  const c = q.shape[2] as number;
  const rh = g.gather(relPosH, g.constant('int64', [qh, kh], relPosIndices(qh, kh))); // [qh, kh, C]
  const rw = g.gather(relPosW, g.constant('int64', [qw, kw], relPosIndices(qw, kw))); // [qw, kw, C]
  const rq = g.reshape(q, [-1, qh, qw, c]);
  const relH = g.reshape(g.matmul(rq, g.transpose(rh, [0, 2, 1])), [-1, qh * qw, kh]); // [B, Q, kh]
  const relW = g.reshape(g.transpose(g.matmul(g.transpose(rq, [0, 2, 1, 3]), g.transpose(rw, [0, 2, 1])), [0, 2, 1, 3]), [-1, qh * qw, kw]);
  const qAug = g.concat([g.mul(q, g.scalar(scale)), relH, relW], 2);
  // Key j = (jh, jw) gets one-hot columns for jh and jw.
  const onehot = new Float32Array(kh * kw * (kh + kw));
  for (let jh = 0; jh < kh; jh++)
    for (let jw = 0; jw < kw; jw++) {
      const row = (jh * kw + jw) * (kh + kw);
      onehot[row + jh] = 1;
      onehot[row + kh + jw] = 1;
    }
  const oh = g.expandTo(g.constant('float32', [1, kh * kw, kh + kw], onehot), [g.dimOf(k, 0), kh * kw, kh + kw]);
  return [qAug, g.transpose(g.concat([k, oh], 2), [0, 2, 1])];
}

/**
 * softmax(relPosAttentionScores) · v, computed `queryChunks` query rows at a time: each row's softmax only
 * needs its own scores, so the result is the same, but the [B, Q, K] score and probability tensors exist one
 * chunk at a time (ViT-H's global blocks: 1 GiB each whole, ×2 with the softmax output) — this is what keeps
 * SAM's encoder inside the memory budget beside a resident LLM.
 */
export function relPosAttention(
  g: Graph,
  q: Value,
  k: Value,
  v: Value,
  scale: number,
  relPosH: Value,
  relPosW: Value,
  qSize: [number, number],
  kSize: [number, number],
  queryChunks = 1,
): Value {
  const [qAug, kAugT] = relPosAugmented(g, q, k, scale, relPosH, relPosW, qSize, kSize);
  const rows = qSize[0] * qSize[1];
  const n = Math.max(1, Math.min(queryChunks, rows));
  if (n === 1) return g.matmul(g.softmax(g.matmul(qAug, kAugT), -1), v);
  const step = Math.ceil(rows / n),
    parts: Value[] = [];
  for (let start = 0; start < rows; start += step) {
    const qc = g.slice(qAug, [start], [Math.min(rows, start + step)], [1]);
    parts.push(g.matmul(g.softmax(g.matmul(qc, kAugT), -1), v));
  }
  return g.concat(parts, 1);
}
