/** Design probe (training images only): the detector → SAM path with a given class, under several box rules. */
import { decodeImage } from '../../src/image/decode.js';
import { readYoloSeg, rasterizePolygons } from '../../src/eval/yolo-seg.js';
import { intersectionAndUnion } from '../../src/eval/metrics.js';
import { LisaModel } from '../../src/models/lisa.js';
import { masksForClasses } from '../../src/inference/pipeline.js';

const [modelDir, dataDir, limit] = process.argv.slice(2);
const model = LisaModel.load(modelDir!, { threads: 2 });
const set = readYoloSeg(dataDir!);
const rules = {
  baseline: { cfg: { minScore: 0.2, relativeScore: 0, maxBoxes: 100, presenceThreshold: 0 }, fallback: false },
  fallback02: { cfg: { minScore: 0.2, relativeScore: 0, maxBoxes: 100, presenceThreshold: 0 }, fallback: true },
  rel03: { cfg: { minScore: 0.15, relativeScore: 0.3, maxBoxes: 8, presenceThreshold: 0 }, fallback: true },
  rel05: { cfg: { minScore: 0.1, relativeScore: 0.5, maxBoxes: 8, presenceThreshold: 0 }, fallback: true },
  top1: { cfg: { minScore: 1, relativeScore: 1, maxBoxes: 1, presenceThreshold: 0 }, fallback: true },
};
const acc: Record<string, { iou: number; i: number; u: number; n: number }> = {};
for (const k of Object.keys(rules)) acc[k] = { iou: 0, i: 0, u: 0, n: 0 };
for (const img of set.images.slice(0, Number(limit ?? 1e9))) {
  const image = await decodeImage(img.image);
  const enc = await model.encodeImage(image);
  for (const cls of [...new Set(img.instances.map((i) => i.cls))]) {
    const gt = rasterizePolygons(
      img.instances.filter((i) => i.cls === cls).map((i) => i.polygon),
      image.height,
      image.width,
    );
    const probs = new Float32Array(set.classes.length);
    probs[cls] = 1;
    for (const [k, r] of Object.entries(rules)) {
      const out = await masksForClasses(model, enc, [probs], r.cfg, false, r.fallback);
      const pred = Uint8Array.from(out.predMasks.data as Float32Array, (v) => (v > 0 ? 1 : 0));
      const s = intersectionAndUnion(pred, gt);
      const a = acc[k]!;
      a.iou += s.union[1] ? s.intersection[1] / s.union[1] : 1;
      a.i += s.intersection[1];
      a.u += s.union[1];
      a.n++;
    }
  }
}
for (const [k, a] of Object.entries(acc)) console.log(k, 'gIoU', (a.iou / a.n).toFixed(3), 'cIoU', (a.i / a.u).toFixed(3), 'pairs', a.n);
await model.release();
