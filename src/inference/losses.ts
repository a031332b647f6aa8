/**
 * LISA's training losses (model/LISA.py), computed in float64 over float32 inputs.
 */

/** Mean cross-entropy of shifted labels: logits at t predict labels[t + 1]; IGNORE (-100) skipped. */
export function shiftedCrossEntropy(logits: Float32Array, labels: readonly number[], vocab: number): { loss: number; count: number } {
  let sum = 0, count = 0;
  for (let t = 0; t + 1 < labels.length; t++) {
    const target = labels[t + 1]!;
    if (target === -100) continue;
    const row = logits.subarray(t * vocab, (t + 1) * vocab);
    sum += logSumExp(row) - row[target]!;
    count++;
  }
  return { loss: count ? sum / count : NaN, count };
}

export function logSumExp(row: ArrayLike<number>): number {
  let m = -Infinity;
  for (let i = 0; i < row.length; i++) m = Math.max(m, row[i]!);
  let s = 0;
  for (let i = 0; i < row.length; i++) s += Math.exp(row[i]! - m);
  return m + Math.log(s);
}

/** sigmoid_ce_loss: per-mask mean of BCE-with-logits over pixels, summed, / (numMasks + 1e-8). */
export function sigmoidCeLoss(logits: Float32Array, targets: Uint8Array, numMasks: number, pixels: number): number {
  let total = 0;
  for (let m = 0; m < numMasks; m++) {
    let s = 0;
    for (let i = m * pixels; i < (m + 1) * pixels; i++) {
      const x = logits[i]!, z = targets[i]!;
      s += Math.max(x, 0) - x * z + Math.log1p(Math.exp(-Math.abs(x)));
    }
    total += s / pixels;
  }
  return total / (numMasks + 1e-8);
}

/** dice_loss with scale 1000 and eps 1e-6, summed over masks, / (numMasks + 1e-8). */
export function diceLoss(logits: Float32Array, targets: Uint8Array, numMasks: number, pixels: number, scale = 1000, eps = 1e-6): number {
  let total = 0;
  for (let m = 0; m < numMasks; m++) {
    let num = 0, a = 0, b = 0;
    for (let i = m * pixels; i < (m + 1) * pixels; i++) {
      const p = 1 / (1 + Math.exp(-logits[i]!)), z = targets[i]!;
      num += (p / scale) * z;
      a += p / scale;
      b += z / scale;
    }
    total += 1 - (2 * num + eps) / (a + b + eps);
  }
  return total / (numMasks + 1e-8);
}

export interface LisaLosses { loss: number; ce_loss: number; mask_bce_loss: number; mask_dice_loss: number; mask_loss: number }

/** LISA's weighting (ce 1.0, bce 2.0, dice 0.5) for one image's masks. */
export function lisaLosses(ce: number, predMasks: Float32Array, gtMasks: Uint8Array, numMasks: number, pixels: number, weights = { ce: 1.0, bce: 2.0, dice: 0.5 }): LisaLosses {
  const bceSum = sigmoidCeLoss(predMasks, gtMasks, numMasks, pixels) * numMasks;
  const diceSum = diceLoss(predMasks, gtMasks, numMasks, pixels) * numMasks;
  const mask_bce_loss = (weights.bce * bceSum) / (numMasks + 1e-8);
  const mask_dice_loss = (weights.dice * diceSum) / (numMasks + 1e-8);
  const mask_loss = mask_bce_loss + mask_dice_loss;
  const ce_loss = ce * weights.ce;
  return { loss: ce_loss + mask_loss, ce_loss, mask_bce_loss, mask_dice_loss, mask_loss };
}
