import assert from 'node:assert/strict';
import { appendFileSync, copyFileSync, mkdirSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { loadDataset } from '../src/eval/datasets.js';
import { intersectionAndUnion } from '../src/eval/metrics.js';
import { runEval, type QueryRecord } from '../src/eval/runner.js';
import { buildSanitySet } from '../src/eval/sanity-set.js';
import { decodeImage } from '../src/image/decode.js';
import { Lisa } from '../src/inference/lisa.js';
import { FIXTURES, SHARED, pickleDump, tempDir } from './helpers.js';

const CKPT = join(FIXTURES, 'lisa-tiny', 'checkpoint');
const records = (dir: string): QueryRecord[] =>
  readFileSync(join(dir, 'results.jsonl'), 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .flatMap((l) => {
      try {
        return [JSON.parse(l) as QueryRecord];
      } catch {
        return [];
      }
    });

async function writeMaskPng(path: string, mask: Uint8Array, w: number, h: number): Promise<void> {
  await sharp(Buffer.from(mask.map((v) => (v === 1 ? 255 : 0))), { raw: { width: w, height: h, channels: 1 } })
    .png()
    .toFile(path);
}

describe('lisa eval on a ReasonSeg-layout sanity set', () => {
  const tmp = tempDir('lisa-eval-');
  const data = join(tmp.path, 'sanity');
  let lisa: Lisa;
  before(async () => {
    await buildSanitySet(join(SHARED, 'data'), data);
    lisa = Lisa.load(CKPT, { visionTower: join(CKPT, 'clip-vit-tiny-patch14'), cacheDir: join(tmp.path, 'cache'), threads: 2 });
  });
  after(async () => {
    await lisa.close();
    tmp[Symbol.dispose]();
  });

  it('builds 19 real samples with their ground truth', () => {
    const { items } = loadDataset('reasonseg', data, 'val');
    assert.equal(items.length, 19);
    assert.ok(items.every((i) => !i.error && i.queries.length === 1 && !i.queries[0]!.isSentence));
    assert.equal(items.find((i) => i.id === 'coco_39769')!.queries[0]!.text, 'cat');
  });

  it('teacher-forced records equal an independent computation, and an interrupted run resumes', async () => {
    const { items } = loadDataset('reasonseg', data, 'val');
    const out = join(tmp.path, 'tf');
    await runEval(lisa.model, items, { protocol: 'teacher-forced', outDir: out, limit: 2 });
    const first = records(out);
    assert.equal(first.length, 2);
    // Independently: the same query through the library API with the answer forced, scored here.
    const q = items[0]!.queries[0]!;
    const image = await decodeImage(items[0]!.image);
    const r = await lisa.segment(image, `What is ${q.text} in this image? Please output segmentation mask.`, { answer: '[SEG].' });
    const s = intersectionAndUnion(r.masks[0]!.mask, await q.gt(image.height, image.width));
    assert.deepEqual([first[0]!.intersection, first[0]!.union], [s.intersection, s.union]);
    // Interrupted mid-write: a cut line is ignored and that work redone; finished queries are not rerun.
    appendFileSync(join(out, 'results.jsonl'), '{"item":"labelme_2011_00');
    const report = await runEval(lisa.model, items, { protocol: 'teacher-forced', outDir: out, limit: 3 });
    const all = records(out);
    assert.deepEqual(all.slice(0, 2), first);
    assert.equal(all.length, 3);
    assert.equal(report.scored, 3);
    assert.match(readFileSync(join(out, 'report.md'), 'utf8'), /\| lisa-ts \| [\d.]+ \| [\d.]+ \| – \| – \|/);
  });

  it('refuses to resume a folder made with other settings, naming them', async () => {
    const { items } = loadDataset('reasonseg', data, 'val');
    const out = join(tmp.path, 'mixed-settings');
    await runEval(lisa.model, items, { protocol: 'generate', outDir: out, limit: 1, maxNewTokens: 2 });
    await assert.rejects(
      runEval(lisa.model, items, { protocol: 'teacher-forced', outDir: out, limit: 1 }),
      /holds results made with other settings \(protocol: "generate" → "teacher-forced", maxNewTokens: 2 → undefined\)/,
    );
    await assert.rejects(
      runEval(lisa.model, items, { protocol: 'generate', outDir: out, limit: 1, maxNewTokens: 2, settings: { split: 'test' } }),
      /split: undefined → "test"/,
    );
    const again = await runEval(lisa.model, items, { protocol: 'generate', outDir: out, limit: 1, maxNewTokens: 2 });
    assert.equal(again.scored, 1, 'the same settings resume');
  });

  it('--save-masks writes each prediction, and scoring them with --predictions gives the same numbers', async () => {
    const { items } = loadDataset('reasonseg', data, 'val');
    const masks = join(tmp.path, 'saved-masks');
    const a = await runEval(lisa.model, items, {
      protocol: 'teacher-forced',
      outDir: join(tmp.path, 'save-a'),
      limit: 3,
      saveMasks: masks,
    });
    const b = await runEval(null, items, { protocol: 'predictions', outDir: join(tmp.path, 'save-b'), limit: 3, predictions: masks });
    assert.equal(b.scored, 3);
    assert.deepEqual([b.overall.giou, b.overall.ciou], [a.overall.giou, a.overall.ciou]);
    assert.deepEqual(
      records(join(tmp.path, 'save-b')).map((r) => [r.intersection, r.union]),
      records(join(tmp.path, 'save-a')).map((r) => [r.intersection, r.union]),
    );
  });

  it('generate protocol records whether the answer had a [SEG]', async () => {
    const { items } = loadDataset('reasonseg', data, 'val');
    const report = await runEval(lisa.model, items, { protocol: 'generate', outDir: join(tmp.path, 'gen'), limit: 1, maxNewTokens: 3 });
    assert.equal(report.scored, 1);
    assert.equal(report.noSeg, 1, 'the random tiny model emits no [SEG] in 3 tokens');
    assert.deepEqual(report.overall.intersectionSum[1], 0);
  });

  it("scores other models' predictions, and reports bad samples without stopping", async () => {
    const root = join(tmp.path, 'mixed');
    const val = join(root, 'val');
    mkdirSync(val, { recursive: true });
    for (const f of readdirSync(join(data, 'val')).filter((x) => x.startsWith('labelme_2011_00000') || x.startsWith('coco')))
      copyFileSync(join(data, 'val', f), join(val, f));
    writeFileSync(join(val, 'broken.json'), '{"text": ["x"], "is_sentence": fal');
    copyFileSync(join(data, 'val', 'coco_39769.png'), join(val, 'broken.png'));
    writeFileSync(join(val, 'lonely.json'), JSON.stringify({ text: ['x'], is_sentence: false, shapes: [] }));
    const preds = join(tmp.path, 'preds');
    mkdirSync(preds);
    const { items } = loadDataset('reasonseg', root, 'val');
    for (const it of items.filter((i) => !i.error)) {
      const image = await decodeImage(it.image);
      const gt = await it.queries[0]!.gt(image.height, image.width);
      if (it.id === 'labelme_2011_000006')
        await writeMaskPng(join(preds, `${it.id}.png`), gt, 10, 10); // wrong size
      else if (it.id !== 'labelme_2011_000003') await writeMaskPng(join(preds, `${it.id}.png`), gt, image.width, image.height); // …_000003: missing
    }
    const report = await runEval(null, items, { protocol: 'predictions', predictions: preds, outDir: join(tmp.path, 'scored') });
    const errs = Object.fromEntries(report.errors.map((e) => [e.id, e.error]));
    assert.match(errs.broken!, /broken\.json: not valid JSON/);
    assert.match(errs.lonely!, /no image beside it/);
    assert.match(errs.labelme_2011_000003!, /no prediction/);
    assert.match(errs.labelme_2011_000006!, /is 10x10 but the image is 500x375/);
    assert.equal(report.scored, 1);
    assert.equal(report.overall.giou.toFixed(4), '1.0000', 'a perfect prediction scores 100');
  });
});

describe('refCOCO layout', () => {
  it('reads refs(unc).p with the safe unpickler, lowercases sentences and scores predictions', async () => {
    using tmp = tempDir('lisa-refer-');
    const root = tmp.path;
    mkdirSync(join(root, 'refcoco'));
    mkdirSync(join(root, 'images', 'mscoco', 'images', 'train2014'), { recursive: true });
    const img = await decodeImage(join(SHARED, 'data', 'coco_39769_cats', '000000039769.png'));
    copyFileSync(
      join(SHARED, 'data', 'coco_39769_cats', '000000039769.png'),
      join(root, 'images', 'mscoco', 'images', 'train2014', 'COCO_train2014_000000039769.png'),
    );
    const anns = JSON.parse(readFileSync(join(SHARED, 'data', 'coco_39769_cats', 'coco_annotations.json'), 'utf8')) as {
      id: number;
      category_id: number;
    }[];
    const cats = anns.filter((a) => a.category_id === 17);
    writeFileSync(
      join(root, 'refcoco', 'instances.json'),
      JSON.stringify({
        images: [{ id: 39769, file_name: 'COCO_train2014_000000039769.png', width: img.width, height: img.height }],
        annotations: anns,
      }),
    );
    const refs = [
      {
        ref_id: 0,
        ann_id: cats[0]!.id,
        image_id: 39769,
        split: 'val',
        sentences: [
          { sent: '  The Cat On The LEFT ', sent_id: 0 },
          { sent: 'left kitty', sent_id: 1 },
        ],
      },
      { ref_id: 1, ann_id: cats[1]!.id, image_id: 39769, split: 'testA', sentences: [{ sent: 'right cat', sent_id: 2 }] },
    ];
    writeFileSync(join(root, 'refcoco', 'refs(unc).p'), pickleDump(refs));
    const { items } = loadDataset('refcoco', root, 'val');
    assert.equal(items.length, 1);
    assert.deepEqual(
      items[0]!.queries.map((q) => q.text),
      ['the cat on the left', 'left kitty'],
    );
    assert.equal(loadDataset('refcoco', root, 'testA').items[0]!.queries.length, 1);
    const preds = join(root, 'preds');
    mkdirSync(preds);
    for (const q of items[0]!.queries)
      await writeMaskPng(join(preds, `${q.id}.png`), await q.gt(img.height, img.width), img.width, img.height);
    const report = await runEval(null, items, { protocol: 'predictions', predictions: preds, outDir: join(root, 'out') });
    assert.equal(report.scored, 2);
    assert.equal(report.overall.samples, 1, 'one image: the official per-image grouping');
    assert.ok(report.overall.intersectionSum[1] > 1000);
    assert.equal(report.overall.ciou, 1);
    writeFileSync(
      join(root, 'refcoco', 'refs(unc).p'),
      Buffer.concat([Buffer.from([0x80, 2]), Buffer.from('cos\nsystem\n'), Buffer.from([0x2e])]),
    );
    assert.throws(() => loadDataset('refcoco', root, 'val'), /refused.*os\.system/);
  });
});
