/**
 * Design probe (training photos only): how well the detector's heatmap peak separates present from absent
 * classes, over every (photo, class) pair of coco128-seg — what chose `presence_threshold` (MODEL.md).
 *
 *   node dist/recipes/default-model/presence.js MODEL_DIR ../shared/data/coco128-seg
 */
import { decodeImage } from '../../src/image/decode.js';
import { readYoloSeg } from '../../src/eval/yolo-seg.js';
import { LisaModel } from '../../src/models/lisa.js';

const [modelDir, dataDir] = process.argv.slice(2);
const model = LisaModel.load(modelDir!, { threads: 2 });
const set = readYoloSeg(dataDir!);
const present: number[] = [],
  absent: number[] = [];
for (const img of set.images) {
  const enc = await model.encodeImage(await decodeImage(img.image), { sam: false });
  const here = new Set(img.instances.map((i) => i.cls));
  enc.detector!.peaks.forEach((p, c) => (here.has(c) ? present : absent).push(p.score));
}
for (const t of [0.05, 0.08, 0.1, 0.12, 0.15, 0.2, 0.25, 0.3]) {
  const kept = present.filter((v) => v >= t).length / present.length,
    rejected = absent.filter((v) => v < t).length / absent.length;
  console.log(
    `threshold ${t}: present kept ${kept.toFixed(3)}, absent rejected ${rejected.toFixed(3)} (${present.length + absent.length} pairs)`,
  );
}
await model.release();
