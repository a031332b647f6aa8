import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { diceLoss, lisaLosses, sigmoidCeLoss } from '../src/inference/losses.js';
import { intersectionAndUnion, IouMeter, sampleAccIou } from '../src/eval/metrics.js';
import { readNpy } from '../src/io/npy.js';
import { FIXTURES } from './helpers.js';

interface F32 { value: number; f32_hex: string }
const M = JSON.parse(readFileSync(join(FIXTURES, 'metrics', 'manifest.json'), 'utf8')) as {
  sections: {
    iou: { pairs: { pair: number; sample: number; mask_index: number; intersection: number[]; union: number[]; acc_iou_term: F32[] }[]; samples: { sample: number; n_masks: number; acc_iou: F32[] }[]; giou: F32; ciou: F32; meters_after_all_reduce: { intersection_sum: F32[]; union_sum: F32[]; acc_iou_sum: F32[] } };
    loss: { pairs: { pair: number; num_masks: number; shape: number[]; dice_loss: F32; sigmoid_ce_loss: F32 }[]; model_forward_aggregation: { pairs: number[]; num_masks: number; mask_bce_loss: F32; mask_dice_loss: F32; mask_loss: F32 }[] };
  };
};
const hex = (x: number): string => { const b = Buffer.alloc(4); b.writeFloatBE(x); return b.toString('hex'); };
const dir = join(FIXTURES, 'metrics', 'iou');

function loadPair(sample: number, mask: number): { pred: Uint8Array; gt: Uint8Array } {
  const logits = readNpy(join(dir, `s${String(sample).padStart(2, '0')}_m${mask}_pred_logits.npy`)).data as Float32Array;
  const gt = readNpy(join(dir, `s${String(sample).padStart(2, '0')}_m${mask}_gt.npy`)).data as Uint8Array;
  return { pred: Uint8Array.from(logits, (v) => (v > 0 ? 1 : 0)), gt };
}

describe('official validation metrics', () => {
  const iou = M.sections.iou;
  it('intersection and union per pair (ignore pixels removed) equal validate()', () => {
    for (const p of iou.pairs) {
      const { pred, gt } = loadPair(p.sample, p.mask_index);
      const s = intersectionAndUnion(pred, gt);
      assert.deepEqual(s.intersection, p.intersection, `pair ${p.pair}`);
      assert.deepEqual(s.union, p.union, `pair ${p.pair}`);
    }
  });

  it('per-sample acc_iou, the meters, gIoU and cIoU equal validate() bit for bit', () => {
    const meter = new IouMeter();
    for (const s of iou.samples) {
      const masks = iou.pairs.filter((p) => p.sample === s.sample).map((p) => { const { pred, gt } = loadPair(p.sample, p.mask_index); return intersectionAndUnion(pred, gt); });
      assert.equal(masks.length, s.n_masks);
      assert.deepEqual(sampleAccIou(masks).map(hex), s.acc_iou.map((x) => x.f32_hex), `sample ${s.sample}`);
      meter.add(masks);
    }
    const r = meter.summary();
    assert.deepEqual(r.intersectionSum.map(hex), iou.meters_after_all_reduce.intersection_sum.map((x) => x.f32_hex));
    assert.deepEqual(r.unionSum.map(hex), iou.meters_after_all_reduce.union_sum.map((x) => x.f32_hex));
    assert.deepEqual(r.accIouSum.map(hex), iou.meters_after_all_reduce.acc_iou_sum.map((x) => x.f32_hex));
    assert.equal(hex(r.giou), iou.giou.f32_hex);
    assert.equal(hex(r.ciou), iou.ciou.f32_hex);
    assert.equal(r.masks, 30);
  });
});

describe('LISA mask losses', () => {
  const loss = M.sections.loss;
  const load = (pair: number): { logits: Float32Array; targets: Uint8Array; pixels: number } => {
    const l = readNpy(join(FIXTURES, 'metrics', 'loss', `p${String(pair).padStart(2, '0')}_logits.npy`));
    const t = readNpy(join(FIXTURES, 'metrics', 'loss', `p${String(pair).padStart(2, '0')}_targets.npy`));
    return { logits: l.data as Float32Array, targets: Uint8Array.from(t.data as ArrayLike<number>, (v) => Number(v)), pixels: l.shape.length === 3 ? l.shape[1]! * l.shape[2]! : 0 };
  };
  const close = (a: number, b: number, what: string): void => assert.ok(Math.abs(a - b) <= 2e-6 * Math.max(1, Math.abs(b)), `${what}: ${a} vs ${b}`);

  it('dice and sigmoid BCE equal the official functions on every pair', () => {
    for (const p of loss.pairs) {
      const { logits, targets, pixels } = load(p.pair);
      close(diceLoss(logits, targets, p.shape[0]!, pixels, 1000, 1e-6), p.dice_loss.value, `dice pair ${p.pair}`);
      close(sigmoidCeLoss(logits, targets, p.shape[0]!, pixels), p.sigmoid_ce_loss.value, `bce pair ${p.pair}`);
    }
  });

  it("model_forward's weighting over images gives the official mask losses", () => {
    for (const agg of loss.model_forward_aggregation) {
      let bce = 0, dice = 0, n = 0;
      for (const pair of agg.pairs) {
        const p = loss.pairs.find((x) => x.pair === pair)!;
        const { logits, targets, pixels } = load(pair);
        const k = p.shape[0]!;
        bce += sigmoidCeLoss(logits, targets, k, pixels) * k;
        dice += diceLoss(logits, targets, k, pixels) * k;
        n += k;
      }
      const bceLoss = (2.0 * bce) / (n + 1e-8), diceTerm = (0.5 * dice) / (n + 1e-8);
      close(bceLoss, agg.mask_bce_loss.value, 'mask_bce_loss');
      close(diceTerm, agg.mask_dice_loss.value, 'mask_dice_loss');
      close(bceLoss + diceTerm, agg.mask_loss.value, 'mask_loss');
    }
    // lisaLosses is the same weighting for one image.
    const { logits, targets, pixels } = load(0);
    const one = lisaLosses(0, logits, targets, 1, pixels);
    close(one.mask_bce_loss, loss.model_forward_aggregation[0]!.mask_bce_loss.value, 'lisaLosses bce');
  });
});
