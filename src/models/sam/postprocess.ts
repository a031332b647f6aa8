import type { Graph } from '../../graph/graph.js';
import { attr, type Value } from '../../graph/ir.js';

/**
 * Sam.postprocess_masks: bilinear to the encoder's input size (1024²), crop to the resized image (h, w),
 * bilinear to the original (H, W); align_corners=False, no antialias, float32 logits. `crop` and
 * `originalSize` are int64 [2] run-time inputs, so one graph serves every image size.
 */
export function postprocessMasks(g: Graph, masks: Value, crop: Value, originalSize: Value, imgSize = 1024): Value {
  const lead = g.slice(g.shapeOf(masks), [0], [2], [0]);
  const resize = (x: Value, hw: Value): Value => g.node('Resize', [x, null, null, g.concat([lead, hw], 0)], {
    mode: attr.s('linear'), coordinate_transformation_mode: attr.s('pytorch_half_pixel'), antialias: attr.i(0),
  })[0]!;
  const full = resize(masks, g.ints([imgSize, imgSize]));
  const cropped = g.node('Slice', [full, g.ints([0, 0]), crop, g.ints([2, 3])])[0]!;
  return resize(cropped, originalSize);
}
