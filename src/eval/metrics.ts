/**
 * The official validation metrics (train_ds.py validate + utils.intersectionAndUnionGPU + AverageMeter),
 * with their float32 arithmetic reproduced step by step so gIoU and cIoU come out bit for bit.
 */

const f = Math.fround;

export interface MaskStats {
  /** [background, foreground] pixel counts, ignore (255) pixels removed. */
  intersection: [number, number];
  union: [number, number];
  target: [number, number];
}

/**
 * intersectionAndUnionGPU(pred, gt, K=2, ignore_index=255): pred where gt is 255 becomes 255; histc over
 * [0, 1] with 2 bins counts only values 0 and 1 (so 255 and any other label, such as 2 from overlapping
 * COCO polygons, are left out).
 */
export function intersectionAndUnion(pred: Uint8Array, gt: Uint8Array): MaskStats {
  if (pred.length !== gt.length) throw new Error(`prediction has ${pred.length} pixels, ground truth ${gt.length}`);
  const inter: [number, number] = [0, 0], out: [number, number] = [0, 0], tgt: [number, number] = [0, 0];
  for (let i = 0; i < gt.length; i++) {
    const t = gt[i]!;
    if (t === 255) continue;
    const o = pred[i]! ? 1 : 0;
    out[o]++;
    if (t === 0 || t === 1) { tgt[t]++; if (o === t) inter[t]++; }
  }
  return { intersection: inter, union: [out[0] + tgt[0] - inter[0], out[1] + tgt[1] - inter[1]], target: tgt };
}

/** One sample's masks → its acc_iou (float32), as validate(): Σ inter/(union + 1e-5), +1 where union = 0, ÷ n. */
export function sampleAccIou(masks: readonly MaskStats[]): [number, number] {
  const acc: [number, number] = [0, 0];
  const eps = f(1e-5);
  for (const m of masks) {
    for (const c of [0, 1] as const) {
      acc[c] = f(acc[c] + f(f(m.intersection[c]) / f(f(m.union[c]) + eps)));
      if (m.union[c] === 0) acc[c] = f(acc[c] + 1);
    }
  }
  const n = masks.length;
  return [f(acc[0] / n), f(acc[1] / n)];
}

export interface IouSummary {
  giou: number;
  ciou: number;
  intersectionSum: [number, number];
  unionSum: [number, number];
  accIouSum: [number, number];
  masks: number;
  samples: number;
}

/** AverageMeter over samples, then all_reduce on one process: float32 sums, avg = sum / (count + 1e-5). */
export class IouMeter {
  private inter: [number, number] = [0, 0];
  private union: [number, number] = [0, 0];
  private accSum: [number, number] = [0, 0];
  private count = 0;
  private samples = 0;

  add(masks: readonly MaskStats[]): void {
    if (masks.length === 0) return;
    const acc = sampleAccIou(masks);
    const n = masks.length;
    for (const c of [0, 1] as const) {
      for (const m of masks) { this.inter[c] += m.intersection[c]; this.union[c] += m.union[c]; }
      this.accSum[c] = f(this.accSum[c] + f(acc[c] * n));
    }
    this.count += n;
    this.samples++;
  }

  summary(): IouSummary {
    const count = f(this.count);
    const denom = f(count + 1e-5);
    const inter = this.inter.map(f) as [number, number], union = this.union.map(f) as [number, number];
    return {
      giou: f(this.accSum[1] / denom),
      ciou: f(inter[1] / f(union[1] + 1e-10)),
      intersectionSum: inter,
      unionSum: union,
      accIouSum: [...this.accSum] as [number, number],
      masks: this.count,
      samples: this.samples,
    };
  }
}

/** As the paper reports: percent, one decimal. */
export function pct(x: number): string {
  return (100 * x).toFixed(1);
}
