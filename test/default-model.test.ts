import assert from 'node:assert/strict';
import dns from 'node:dns';
import net from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { buildCoco80ValSet, VALIDATION_IMPLICIT } from '../src/eval/coco80-val-set.js';
import { loadDataset, type EvalItem } from '../src/eval/datasets.js';
import { intersectionAndUnion } from '../src/eval/metrics.js';
import { decodeImage } from '../src/image/decode.js';
import { Lisa } from '../src/inference/lisa.js';
import { defaultModelDir } from '../src/models/default-model.js';
import { SHARED, tempDir } from './helpers.js';

/**
 * The shipped default model (models/lisa-coco80) on validation photos it was never trained on, with thresholds
 * below the measured numbers (MODEL.md; bench/results-default-model-*.json), loaded with the network cut off.
 */
describe('the default model: real photos, no network', () => {
  const cache = tempDir('lisa-default-');
  const val = tempDir('lisa-default-val-');
  let lisa: Lisa;
  const items = new Map<string, EvalItem>();
  const restore: (() => void)[] = [];
  before(async () => {
    // Any connection or name lookup during loading or inference fails the test.
    const refuse = (): never => {
      throw new Error('the default model tried to reach the network');
    };
    const connect = net.Socket.prototype.connect;
    const lookup = dns.lookup;
    net.Socket.prototype.connect = refuse as unknown as typeof connect;
    (dns as { lookup: unknown }).lookup = refuse;
    restore.push(() => {
      net.Socket.prototype.connect = connect;
      (dns as { lookup: unknown }).lookup = lookup;
    });
    await buildCoco80ValSet(join(SHARED, 'data'), val.path);
    for (const kind of ['class', 'implicit']) {
      for (const it of loadDataset('reasonseg', join(val.path, kind), 'val').items) items.set(`${kind}/${it.id}`, it);
    }
    lisa = Lisa.load(undefined, { cacheDir: cache.path, threads: 2 });
  });
  after(async () => {
    await lisa?.close();
    for (const r of restore) r();
    cache[Symbol.dispose]();
    val[Symbol.dispose]();
  });

  /** IoU of the answer's first mask with the item's ground truth (0 when the answer has no [SEG]). */
  async function ask(key: string, question: string): Promise<{ iou: number; text: string; label: string | undefined }> {
    const item = items.get(key);
    assert.ok(item, key);
    const image = await decodeImage(item.image);
    const gt = await item.queries[0]!.gt(image.height, image.width);
    const r = await lisa.segment(image, question);
    const pred = r.masks[0]?.mask ?? new Uint8Array(image.width * image.height);
    const s = intersectionAndUnion(pred, gt);
    return { iou: s.intersection[1] / s.union[1], text: r.text, label: r.masks[0]?.label };
  }

  it('is found with no folder given, in the package', () => {
    assert.equal(lisa.model.dir, defaultModelDir());
    assert.equal(lisa.model.config.towers?.vision.classes.length, 80);
  });

  it('segments an object asked for by its class name', async () => {
    // Measured: cat 0.91, airplane 0.89 (bench/results-default-model-2026-12-02.json).
    const cat = await ask('class/coco_39769_cat', 'What is cat in this image? Please output segmentation mask.');
    assert.equal(cat.label, 'cat', cat.text);
    assert.match(cat.text, /^The cat is \[SEG\]/);
    assert.ok(cat.iou > 0.8, `cat IoU ${cat.iou} (${cat.text})`);
    const plane = await ask('class/voc_0_airplane', 'Can you segment the airplane in this image?');
    assert.ok(plane.iou > 0.75, `airplane IoU ${plane.iou} (${plane.text})`);
    // The LLM leans to "not" here; the detector sees a cow, so the [SEG] gate emits it (MODEL.md). Measured 0.99.
    const cow = await ask('class/voc_293_cow', 'What is cow in this image? Please output segmentation mask.');
    assert.ok(cow.iou > 0.9, `cow IoU ${cow.iou} (${cow.text})`);
  });

  it('segments an object asked for implicitly, and names it', async () => {
    // Measured 1.00; implicit questions are its weak side (gIoU 0.19 over the set).
    const r = await ask('implicit/voc_60_bird', `${VALIDATION_IMPLICIT.bird} Please output segmentation mask.`);
    assert.equal(r.label, 'bird', r.text);
    assert.ok(r.iou > 0.85, `IoU ${r.iou} (${r.text})`);
  });

  it('answers without [SEG] about a class the photo lacks', async () => {
    const image = await decodeImage(items.get('class/coco_39769_cat')!.image);
    const r = await lisa.segment(image, 'What is bus in this image? Please output segmentation mask.');
    assert.equal(r.masks.length, 0, r.text);
    assert.equal(r.text, 'The bus is not in this image.');
  });
});
