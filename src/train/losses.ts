import type { Graph } from '../graph/graph.js';
import type { Value } from '../graph/ir.js';

/**
 * LISA's training losses as graph nodes (model/LISA.py), so that autodiff differentiates them with the model.
 * The host versions in inference/losses.ts (float64) compute the same numbers for `lisa dump`.
 */

/** The loss weights of train_ds.py (--ce_loss_weight 1.0, --bce_loss_weight 2.0, --dice_loss_weight 0.5). */
export interface LossWeights {
  ce: number;
  bce: number;
  dice: number;
  /** The [SEG] class loss of a detector-tower model (not in LISA). */
  cls?: number;
}
export const LISA_LOSS_WEIGHTS: LossWeights = { ce: 1.0, bce: 2.0, dice: 0.5 };

/**
 * HF LlamaForCausalLM's CrossEntropyLoss over the shifted labels, on the rows that have a target:
 * `logits` [N, V] are the logits at the positions whose next label is not ignored, `targets` [N] int64 those
 * labels. Mean of logsumexp − target logit.
 */
export function crossEntropy(g: Graph, logits: Value, targets: Value, weight: Value | null = null): Value {
  const vocab = logits.shape[1] as number;
  const lsm = g.logSoftmax(logits, -1);
  const cols = g.range(g.constant('int64', [], [0]), g.constant('int64', [], [vocab]), g.constant('int64', [], [1]));
  const onehot = g.cast(g.equal(g.unsqueeze(targets, [1]), g.unsqueeze(cols, [0])), logits.dtype);
  const picked = g.reduceSum(g.mul(lsm, onehot), [1], false); // [N]
  if (!weight) return g.neg(g.reduceMean(picked, [0], false));
  // Rows padded to a shape bucket carry weight 0: the mean over the real rows only.
  return g.neg(g.div(g.reduceSum(g.mul(picked, weight), [0], false), g.reduceSum(weight, [0], false)));
}

/** sigmoid_ce_loss: per-mask mean over pixels of BCE-with-logits, summed, / (n + 1e-8). `logits`, `targets` [n, H, W]. */
export function sigmoidCeLoss(g: Graph, logits: Value, targets: Value, n: number): Value {
  // max(x, 0) − x·z + log(1 + exp(−|x|)): the stable form of F.binary_cross_entropy_with_logits.
  const bce = g.add(g.sub(g.relu(logits), g.mul(logits, targets)), g.log(g.add(g.scalar(1), g.exp(g.neg(g.abs(logits))))));
  return g.div(g.reduceSum(g.reduceMean(bce, [1, 2], false), [0], false), g.scalar(n + 1e-8));
}

/** dice_loss(scale=1000, eps=1e-6): Σ over masks of 1 − (2·Σ p/s·z + ε)/(Σ p/s + Σ z/s + ε), / (numMasks + 1e-8). */
export function diceLoss(g: Graph, logits: Value, targets: Value, n: number, scale = 1000, eps = 1e-6): Value {
  const p = g.div(g.sigmoid(logits), g.scalar(scale));
  const numerator = g.mul(g.scalar(2), g.reduceSum(g.mul(p, targets), [1, 2], false));
  const denominator = g.add(g.reduceSum(p, [1, 2], false), g.reduceSum(g.div(targets, g.scalar(scale)), [1, 2], false));
  const loss = g.sub(g.scalar(1), g.div(g.add(numerator, g.scalar(eps)), g.add(denominator, g.scalar(eps))));
  return g.div(g.reduceSum(loss, [0], false), g.scalar(n + 1e-8));
}

export interface LossParts {
  loss: Value;
  ce_loss: Value;
  mask_bce_loss: Value;
  mask_dice_loss: Value;
  mask_loss: Value;
  /** The default model's [SEG] class loss (seg_class_head), 0 for LISA. */
  class_loss: Value;
}

/**
 * model_forward's total: per image b, bce += sigmoid_ce(pred_b, gt_b)·n_b and dice likewise; then
 * mask_bce = w_bce·bce/(Σn + 1e-8), mask_dice = w_dice·dice/(Σn + 1e-8), ce = w_ce·CE, loss = ce + both.
 * An image without masks (a VQA sample, an explanatory answer) adds nothing.
 */
export function lisaLoss(
  g: Graph,
  ce: Value | null,
  perImage: readonly { pred: Value; gt: Value; numMasks: number }[],
  w: LossWeights = LISA_LOSS_WEIGHTS,
  classLoss: Value | null = null,
): LossParts {
  let bce: Value = g.scalar(0),
    dice: Value = g.scalar(0),
    count = 0;
  for (const { pred, gt, numMasks: n } of perImage) {
    if (n === 0) continue;
    bce = g.add(bce, g.mul(sigmoidCeLoss(g, pred, gt, n), g.scalar(n)));
    dice = g.add(dice, g.mul(diceLoss(g, pred, gt, n), g.scalar(n)));
    count += n;
  }
  const mask_bce_loss = g.div(g.mul(bce, g.scalar(w.bce)), g.scalar(count + 1e-8));
  const mask_dice_loss = g.div(g.mul(dice, g.scalar(w.dice)), g.scalar(count + 1e-8));
  const mask_loss = g.add(mask_bce_loss, mask_dice_loss);
  const ce_loss = ce ? g.mul(ce, g.scalar(w.ce)) : g.scalar(0);
  const class_loss = classLoss ? g.mul(classLoss, g.scalar(w.cls ?? 1)) : g.scalar(0);
  const loss = classLoss ? g.add(g.add(ce_loss, mask_loss), class_loss) : g.add(ce_loss, mask_loss);
  return { loss, ce_loss, mask_bce_loss, mask_dice_loss, mask_loss, class_loss };
}
