import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import sharp from 'sharp';
import { mulberry32 } from '../src/inference/generate.js';
import { CocoPartSource, LabelMapSource, VqaSource } from '../src/train/data/datasets.js';
import { materializeMask } from '../src/train/data/examples.js';
import { ReasonSegSource, type TrainExample } from '../src/train/data/sources.js';
import { ANSWER_LIST, SHORT_QUESTION_LIST } from '../src/train/data/templates.js';
import { tempDir } from './helpers.js';

/**
 * LISA's dataset layouts, built small in a temporary folder: each source must give the official conversations
 * (templates, class names, label transforms) and masks.
 */

const tmp = tempDir('lisa-train-data-');
after(() => tmp[Symbol.dispose]());

async function writeImage(path: string, w: number, h: number): Promise<void> {
  mkdirSync(join(path, '..'), { recursive: true });
  await sharp({ create: { width: w, height: h, channels: 3, background: { r: 90, g: 120, b: 30 } } })
    .jpeg()
    .toFile(path);
}
async function writeLabel(path: string, w: number, h: number, value: (x: number, y: number) => number): Promise<void> {
  mkdirSync(join(path, '..'), { recursive: true });
  const px = Buffer.alloc(w * h);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) px[y * w + x] = value(x, y);
  await sharp(px, { raw: { width: w, height: h, channels: 1 } })
    .png()
    .toFile(path);
}
const shortQuestion = (name: string): RegExp =>
  new RegExp(`^(${SHORT_QUESTION_LIST.map((q) => q.replace('{class_name}', name).replace(/[?.]/g, '\\$&')).join('|')})$`);
const questions = (ex: TrainExample): string[] => ex.conversations.map((c) => c.turns[0]!.question);
async function masks(ex: TrainExample, h: number, w: number): Promise<number[]> {
  return Promise.all(ex.masks.map(async (m) => (await materializeMask(m, h, w, ex.where)).reduce((a, b) => a + b, 0)));
}

describe('training data sources', () => {
  it('ADE20K: label − 1 with 0 ignored, class names from the official list, masks = label == class', async () => {
    const root = join(tmp.path, 'ade');
    await writeImage(join(root, 'ade20k', 'images', 'training', 'a.jpg'), 8, 4);
    // label 1 → class 0 "wall" (left half), 5 → class 4 "tree" (a column), 0 → ignored
    await writeLabel(join(root, 'ade20k', 'annotations', 'training', 'a.png'), 8, 4, (x) => (x < 4 ? 1 : x === 4 ? 5 : 0));
    const src = new LabelMapSource(root, 'ade20k');
    assert.equal(src.length, 1);
    const ex = await src.example(0, mulberry32(1));
    const names = questions(ex).map((q) => (/wall/.test(q) ? 'wall' : /tree/.test(q) ? 'tree' : q));
    assert.deepEqual([...names].sort(), ['tree', 'wall']);
    questions(ex).forEach((q, i) => assert.match(q, shortQuestion(names[i]!)));
    ex.conversations.forEach((c) => assert.ok(ANSWER_LIST.includes(c.turns[0]!.answer)));
    assert.deepEqual(
      await masks(ex, 4, 8),
      names.map((n) => (n === 'wall' ? 16 : 4)),
    );
  });

  it('COCO-Stuff: images under coco/, the 28 "-" classes ignored', async () => {
    const root = join(tmp.path, 'stuff');
    await writeImage(join(root, 'coco', 'train2017', 'b.jpg'), 6, 2);
    // 0 = person; 95 = building-other (ignored); 255 = unlabeled
    await writeLabel(join(root, 'cocostuff', 'train2017', 'b.png'), 6, 2, (x) => (x < 2 ? 0 : x < 4 ? 95 : 255));
    const ex = await new LabelMapSource(root, 'cocostuff').example(0, mulberry32(2));
    assert.equal(ex.image, join(root, 'coco', 'train2017', 'b.jpg'));
    assert.equal(ex.conversations.length, 1);
    assert.match(questions(ex)[0]!, shortQuestion('person'));
    assert.deepEqual(await masks(ex, 2, 6), [4]);
  });

  it('PACO-LVIS: "obj:part" names cut at "_(" as "obj part" or "the part of the obj"; masks from polygons', async () => {
    const root = join(tmp.path, 'paco');
    mkdirSync(join(root, 'vlpart', 'paco', 'annotations'), { recursive: true });
    writeFileSync(
      join(root, 'vlpart', 'paco', 'annotations', 'paco_lvis_v1_train.json'),
      JSON.stringify({
        images: [{ id: 7, file_name: 'train2017/c.jpg', width: 10, height: 10 }],
        categories: [{ id: 3, name: 'dog_(animal):leg' }],
        annotations: [{ image_id: 7, category_id: 3, segmentation: [[2, 2, 6, 2, 6, 6, 2, 6]] }],
      }),
    );
    const src = new CocoPartSource(root, 'paco_lvis');
    const seen = new Set<string>();
    for (let s = 0; s < 20; s++)
      seen.add(
        questions(src.example(0, mulberry32(s)))[0]!.includes('the leg of the dog')
          ? 'of'
          : questions(src.example(0, mulberry32(s)))[0]!.includes('dog leg')
            ? 'space'
            : 'other',
      );
    assert.deepEqual([...seen].sort(), ['of', 'space']);
    const ex = src.example(0, mulberry32(3));
    assert.equal(ex.image, join(root, 'coco', 'train2017', 'c.jpg'));
    assert.equal((await masks(ex, 10, 10))[0], 16, 'pycocotools fills the 4x4 square');
  });

  it('LLaVA-Instruct VQA: multi-turn, <image> moved to the front of the first question, no masks', () => {
    const root = join(tmp.path, 'vqa');
    mkdirSync(join(root, 'llava_dataset'), { recursive: true });
    writeFileSync(
      join(root, 'llava_dataset', 'llava_instruct_150k.json'),
      JSON.stringify([
        {
          id: '1',
          image: '000000000009.jpg',
          conversations: [
            { from: 'human', value: 'What is on the plate?\n<image>' },
            { from: 'gpt', value: 'Broccoli.' },
            { from: 'human', value: 'Is it healthy?' },
            { from: 'gpt', value: 'Yes.' },
          ],
        },
      ]),
    );
    const ex = new VqaSource(root).example(0);
    assert.equal(ex.image, join(root, 'coco', 'train2017', '000000000009.jpg'));
    assert.deepEqual(ex.conversations[0]!.turns, [
      { question: '<image>\nWhat is on the plate?', answer: 'Broccoli.' },
      { question: 'Is it healthy?', answer: 'Yes.' },
    ]);
    assert.deepEqual(ex.masks, []);
  });

  it('ReasonSeg with explanations: an explanation-only answer carries no mask; the others ask and answer with one', async () => {
    const root = join(tmp.path, 'rs');
    await writeImage(join(root, 'train', 'd.jpg'), 10, 10);
    writeFileSync(
      join(root, 'train', 'd.json'),
      JSON.stringify({
        text: ['What keeps the rain off?'],
        is_sentence: true,
        shapes: [
          {
            label: 'target',
            points: [
              [1, 1],
              [5, 1],
              [5, 5],
              [1, 5],
            ],
          },
        ],
      }),
    );
    mkdirSync(join(root, 'explanatory'), { recursive: true });
    writeFileSync(
      join(root, 'explanatory', 'train.json'),
      JSON.stringify([{ image: 'd.jpg', query: 'What keeps the rain off?', outputs: 'The umbrella shields the person.' }]),
    );
    const only = new ReasonSegSource(root, 'train', 1).example(0, mulberry32(4));
    assert.deepEqual(only.conversations[0]!.turns[0], {
      question: '<image>\nWhat keeps the rain off?',
      answer: 'The umbrella shields the person.',
    });
    assert.deepEqual(only.masks, []);
    let explained = 0,
      plain = 0;
    for (let s = 0; s < 30; s++) {
      const ex = new ReasonSegSource(root, 'train', 0).example(0, mulberry32(s));
      const t = ex.conversations[0]!.turns[0]!;
      if (t.answer.endsWith(' The umbrella shields the person.')) {
        explained++;
        assert.match(t.question, /explain|explanation/);
      } else plain++;
      assert.equal(ex.masks.length, 1);
    }
    assert.ok(explained > 0 && plain > 0, `${explained} explained, ${plain} plain`);
    const mask = await materializeMask({ reasonseg: join(root, 'train', 'd.json') }, 10, 10, 'd');
    assert.equal(
      mask.reduce((a, b) => a + b, 0),
      25,
    );
  });
});

describe('refer_seg training data', () => {
  it('refCOCO train split: up to 3 sentences of the image, short template, the referred masks', async () => {
    const { copyFileSync, readFileSync } = await import('node:fs');
    const { ReferSegSource } = await import('../src/train/data/datasets.js');
    const { pickleDump, SHARED } = await import('./helpers.js');
    const root = join(tmp.path, 'refer');
    mkdirSync(join(root, 'refcoco'), { recursive: true });
    mkdirSync(join(root, 'images', 'mscoco', 'images', 'train2014'), { recursive: true });
    copyFileSync(
      join(SHARED, 'data', 'coco_39769_cats', '000000039769.png'),
      join(root, 'images', 'mscoco', 'images', 'train2014', 'x.png'),
    );
    const anns = JSON.parse(readFileSync(join(SHARED, 'data', 'coco_39769_cats', 'coco_annotations.json'), 'utf8')) as {
      id: number;
      category_id: number;
    }[];
    const cats = anns.filter((a) => a.category_id === 17);
    writeFileSync(
      join(root, 'refcoco', 'instances.json'),
      JSON.stringify({ images: [{ id: 1, file_name: 'x.png', width: 640, height: 480 }], annotations: anns }),
    );
    writeFileSync(
      join(root, 'refcoco', 'refs(unc).p'),
      pickleDump([
        { ref_id: 0, ann_id: cats[0]!.id, image_id: 1, split: 'train', sentences: [{ sent: 'The Cat On The LEFT', sent_id: 0 }] },
        { ref_id: 1, ann_id: cats[1]!.id, image_id: 1, split: 'val', sentences: [{ sent: 'right cat', sent_id: 1 }] },
      ]),
    );
    const ex = new ReferSegSource(root, 'refcoco').example(0, mulberry32(5));
    assert.equal(ex.conversations.length, 1, 'only the train split');
    assert.match(questions(ex)[0]!, shortQuestion('the cat on the left'));
    assert.ok((await masks(ex, 480, 640))[0]! > 1000);
  });
});
