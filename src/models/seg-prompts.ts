import type { Detection } from './detector-tower.js';
import type { SegPromptConfig } from './config.js';

/** One SAM prompt chosen for a [SEG]: a detector box, or (when no box fits) the class's heatmap peak as a point. */
export type SegPrompt = { box: Detection } | { point: { x: number; y: number } };

/** softmax(W·e + b) over the detector's classes: which class a [SEG] embedding asks for. */
export function segClassProbs(weight: Float32Array, bias: Float32Array, e: Float32Array): Float32Array {
  const classes = bias.length,
    d = e.length;
  const logits = new Float32Array(classes);
  let max = -Infinity;
  for (let c = 0; c < classes; c++) {
    let s = bias[c]!;
    for (let k = 0; k < d; k++) s += weight[c * d + k]! * e[k]!;
    logits[c] = s;
    max = Math.max(max, s);
  }
  let z = 0;
  for (let c = 0; c < classes; c++) z += logits[c] = Math.exp(logits[c]! - max);
  for (let c = 0; c < classes; c++) logits[c]! /= z;
  return logits;
}

/**
 * "Similarity as points" (READ, Qian et al. 2024) on a detector: the [SEG]'s class distribution weights the
 * detector's class heatmap, whose peaks are its detections; each detection scores p(class | [SEG]) · score, and
 * those reaching max(min_score, relative_score · best) become SAM box prompts (at most max_boxes; their masks are
 * unioned). With `fallback` a [SEG] always gets a prompt: the best detection of its most likely class, else that
 * class's heatmap peak as a point.
 */
export function selectSegPrompts(
  probs: Float32Array,
  detections: readonly Detection[],
  peaks: readonly { score: number; x: number; y: number }[],
  cfg: SegPromptConfig,
  fallback = true,
): SegPrompt[] {
  const scored = detections.map((d) => ({ d, s: probs[d.cls]! * d.score })).sort((a, b) => b.s - a.s);
  const best = scored[0]?.s ?? 0;
  const keep = scored.filter((x) => x.s >= Math.max(cfg.minScore, cfg.relativeScore * best)).slice(0, cfg.maxBoxes);
  if (keep.length > 0 || !fallback) return keep.map((x) => ({ box: x.d }));
  let top = 0;
  probs.forEach((p, c) => {
    if (p > probs[top]!) top = c;
  });
  const own = detections.filter((d) => d.cls === top).sort((a, b) => b.score - a.score)[0];
  if (own) return [{ box: own }];
  const peak = peaks[top]!;
  return [{ point: { x: peak.x, y: peak.y } }];
}
