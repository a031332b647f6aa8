import type { HostTensor } from '../graph/tensor.js';
import { encodeRle, maskArea, maskBbox, type BinaryMask, type CocoRle } from '../image/mask-encoding.js';

/** One output mask, as users consume it. */
export interface SegMask {
  /** Which [SEG] of the answer produced it (0-based), or -1 for a visual-prompt-only mask. */
  segIndex: number;
  width: number;
  height: number;
  /** 1 = object, row-major, original image size. */
  mask: Uint8Array;
  rle: CocoRle;
  bbox: [number, number, number, number];
  area: number;
  /** The mask decoder's IoU prediction for this mask. */
  score: number;
  /** With a detector tower (the default model): the class its [SEG] asked for, e.g. "sink". */
  label?: string;
}

/** Thresholds [N, H, W] logits at 0 (the official rule) and encodes each mask. */
export function toSegMasks(logits: HostTensor, scores: ArrayLike<number>, segIndexes: readonly number[]): SegMask[] {
  const [n, h, w] = logits.shape as [number, number, number];
  const data = logits.data as Float32Array;
  const out: SegMask[] = [];
  for (let i = 0; i < n; i++) {
    const mask = new Uint8Array(h * w);
    for (let p = 0; p < h * w; p++) mask[p] = data[i * h * w + p]! > 0 ? 1 : 0;
    const m: BinaryMask = { width: w, height: h, data: mask };
    out.push({
      segIndex: segIndexes[i]!,
      width: w,
      height: h,
      mask,
      rle: encodeRle(m),
      bbox: maskBbox(m),
      area: maskArea(m),
      score: scores[i]!,
    });
  }
  return out;
}
