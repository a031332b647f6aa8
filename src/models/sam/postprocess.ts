import type { Graph } from '../../graph/graph.js';
import type { Value } from '../../graph/ir.js';

const f = Math.fround;

/**
 * Source indices and weights of torch's upsample_bilinear2d (align_corners=False) along one axis, computed
 * in float32 as PyTorch's CPU kernel does: src = max(scale·(dst + 0.5) − 0.5, 0) with scale = in/out,
 * i0 = floor(src), i1 = min(i0 + 1, in − 1), λ = src − i0, weights (1 − λ, λ).
 */
export function torchLinearWeights(inSize: number, outSize: number): { i0: BigInt64Array; i1: BigInt64Array; w0: Float32Array; w1: Float32Array } {
  const scale = f(inSize / outSize);
  const i0 = new BigInt64Array(outSize), i1 = new BigInt64Array(outSize);
  const w0 = new Float32Array(outSize), w1 = new Float32Array(outSize);
  for (let d = 0; d < outSize; d++) {
    let src = f(f(scale * f(d + 0.5)) - 0.5);
    if (src < 0) src = 0;
    const a = Math.trunc(src);
    const lambda = Math.min(Math.max(f(src - a), 0), 1);
    i0[d] = BigInt(a);
    i1[d] = BigInt(a < inSize - 1 ? a + 1 : a);
    w0[d] = f(1 - lambda);
    w1[d] = lambda;
  }
  return { i0, i1, w0, w1 };
}

export interface AxisResize { i0: Value; i1: Value; w0: Value; w1: Value }

/** Blends along `axis`: x[i0]·w0 + x[i1]·w1 (weights broadcast along that axis). */
function blend(g: Graph, x: Value, axis: number, r: AxisResize): Value {
  const rank = x.shape.length;
  const shapeW = (w: Value): Value => g.reshape(w, Array.from({ length: rank }, (_, i) => (i === axis ? -1 : 1)));
  return g.add(g.mul(g.gather(x, r.i0, axis), shapeW(r.w0)), g.mul(g.gather(x, r.i1, axis), shapeW(r.w1)));
}

export function constAxisResize(g: Graph, inSize: number, outSize: number): AxisResize {
  const w = torchLinearWeights(inSize, outSize);
  return { i0: g.constant('int64', [outSize], w.i0), i1: g.constant('int64', [outSize], w.i1), w0: g.constant('float32', [outSize], w.w0), w1: g.constant('float32', [outSize], w.w1) };
}

/** Bilinear resize of [..., H, W] exactly as torch's CPU kernel: the width pass inside, the height pass outside. */
export function torchBilinear(g: Graph, x: Value, rows: AxisResize, cols: AxisResize): Value {
  const r = x.shape.length;
  return blend(g, blend(g, x, r - 1, cols), r - 2, rows);
}

/**
 * Sam.postprocess_masks: bilinear to the encoder's input size (1024²), crop to the resized image (h, w),
 * bilinear to the original (H, W); align_corners=False, float32 logits. The second resize reads only rows
 * < h and columns < w, which is the crop. Its indices and weights are run-time inputs (`torchLinearWeights`
 * of h→H and w→W), so one graph serves every image size.
 */
export function postprocessMasks(g: Graph, masks: Value, second: { rows: AxisResize; cols: AxisResize }, imgSize = 1024): Value {
  const low = masks.shape[masks.shape.length - 1] as number;
  const full = torchBilinear(g, masks, constAxisResize(g, low, imgSize), constAxisResize(g, low, imgSize));
  return torchBilinear(g, full, second.rows, second.cols);
}
