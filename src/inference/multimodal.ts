import { LisaError } from '../errors.js';
import { IMAGE_TOKEN_INDEX } from '../text/tokenizer.js';

/** Label value the loss ignores. */
export const IGNORE_INDEX = -100;

/**
 * LLaVA's prepare_inputs_labels_for_multimodal for one image: the embedding rows of `ids` with the image's
 * projected features (`imageRows` × H) spliced in place of the single -200 placeholder. Returns the spliced
 * rows and where the image starts (p) and how many rows it took, so positions can be mapped back.
 */
export function spliceImage(ids: readonly number[], embedText: (ids: number[]) => Float32Array, image: Float32Array, imageRows: number, hidden: number): { embeds: Float32Array; length: number; imageStart: number } {
  const p = ids.indexOf(IMAGE_TOKEN_INDEX);
  if (p < 0) throw new LisaError('the prompt has no <image> placeholder');
  if (ids.indexOf(IMAGE_TOKEN_INDEX, p + 1) >= 0) throw new LisaError('the prompt has more than one <image> placeholder; LISA takes exactly one image');
  const before = embedText(ids.slice(0, p) as number[]);
  const after = embedText(ids.slice(p + 1) as number[]);
  const length = ids.length - 1 + imageRows;
  const embeds = new Float32Array(length * hidden);
  embeds.set(before, 0);
  embeds.set(image.subarray(0, imageRows * hidden), p * hidden);
  embeds.set(after, (p + imageRows) * hidden);
  return { embeds, length, imageStart: p };
}

/** The labels spliced the same way: image rows are ignored by the loss. */
export function spliceLabels(labels: readonly number[], ids: readonly number[], imageRows: number): number[] {
  const p = ids.indexOf(IMAGE_TOKEN_INDEX);
  return [...labels.slice(0, p), ...new Array<number>(imageRows).fill(IGNORE_INDEX), ...labels.slice(p + 1)];
}

/**
 * LISA's [SEG] rule: for every [SEG] at index k ≥ 1 of `ids` (prompt + generated), the hidden state used is
 * the one at spliced position (k − 1) + (imageRows − 1): the position *before* [SEG], whose logits produced
 * it. This is `seg_token_mask = ids[1:] == seg` shifted by the hard-coded 255 of the official code, written
 * with the real image row count (256 for CLIP ViT-L/14 at 224).
 */
export function segHiddenPositions(ids: readonly number[], segTokenIdx: number, imageRows: number): number[] {
  const out: number[] = [];
  for (let k = 1; k < ids.length; k++) if (ids[k] === segTokenIdx) out.push(k - 1 + imageRows - 1);
  return out;
}
