import assert from 'node:assert/strict';
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { LisaError } from '../src/errors.js';
import { rasterizePolygons, readYoloSeg } from '../src/eval/yolo-seg.js';
import { mulberry32 } from '../src/inference/generate.js';
import { segClassProbs, selectSegPrompts } from '../src/models/seg-prompts.js';
import { absentAnswer, CocoSegSource, CONVERSATIONS_PER_IMAGE } from '../src/train/data/coco-seg.js';
import { COCO_KNOWLEDGE } from '../src/train/data/coco-knowledge.js';
import { countSeg } from '../src/train/data/sources.js';
import { WordNet } from '../src/train/data/wordnet.js';
import { SHARED, tempDir } from './helpers.js';

const COCO128 = join(SHARED, 'data', 'coco128-seg');

describe('coco128-seg layout and ground truth', () => {
  it('fills a polygon at pixel centres (a pixel is in when its centre is)', () => {
    // x, y in [0.1, 0.5] of a 10 × 10 image: centres 1.5 … 4.5 are inside, so columns and rows 1–4.
    const m = rasterizePolygons(
      [
        [
          [0.1, 0.1],
          [0.5, 0.1],
          [0.5, 0.5],
          [0.1, 0.5],
        ],
      ],
      10,
      10,
    );
    const on: number[] = [];
    m.forEach((v, i) => v && on.push(i));
    assert.equal(on.length, 16);
    assert.deepEqual([on[0], on[15]], [11, 44]);
    // A triangle's area comes out within a pixel row of the exact one; two polygons are unioned.
    const tri = rasterizePolygons(
      [
        [
          [0, 0],
          [1, 0],
          [0, 1],
        ],
      ],
      100,
      100,
    ).reduce((a, b) => a + b, 0);
    assert.ok(Math.abs(tri - 5000) <= 100, `triangle area ${tri}`);
    const two = rasterizePolygons(
      [
        [
          [0, 0],
          [0.5, 0],
          [0.5, 1],
          [0, 1],
        ],
        [
          [0.25, 0],
          [1, 0],
          [1, 1],
          [0.25, 1],
        ],
      ],
      8,
      8,
    );
    assert.equal(
      two.reduce((a, b) => a + b, 0),
      64,
    );
  });

  it('reads the real set: 80 classes, every instance a polygon inside the image', () => {
    const set = readYoloSeg(COCO128);
    assert.equal(set.classes.length, 80);
    assert.equal(set.classes[71], 'sink');
    assert.equal(set.images.length, 96);
    const n = set.images.reduce((k, im) => k + im.instances.length, 0);
    assert.ok(n > 500, `${n} instances`);
    for (const im of set.images) for (const i of im.instances) assert.ok(i.polygon.length >= 3);
  });

  it('names the file and line of a bad label', () => {
    using t = tempDir();
    mkdirSync(join(t.path, 'images'));
    mkdirSync(join(t.path, 'labels'));
    writeFileSync(join(t.path, 'classes.json'), '["cat", "dog"]');
    writeFileSync(join(t.path, 'images', 'a.jpg'), '');
    writeFileSync(join(t.path, 'labels', 'a.txt'), '0 0.1 0.1 0.2 0.1 0.2 0.2\n7 0.1 0.1 0.2 0.1 0.2 0.2\n');
    assert.throws(
      () => readYoloSeg(t.path),
      (e: Error) => e instanceof LisaError && /a\.txt:2: class 7 is not an index into the 2 classes/.test(e.message),
    );
    writeFileSync(join(t.path, 'labels', 'a.txt'), '1 0.1 0.1 1.5 0.1 0.2 0.2\n');
    assert.throws(() => readYoloSeg(t.path), /a\.txt:1: polygon coordinates must be normalised/);
  });
});

describe('training conversations over coco128-seg', () => {
  const src = new CocoSegSource(COCO128);
  it('has knowledge for every class', () => {
    for (const c of src.set.classes) assert.ok(COCO_KNOWLEDGE.has(c), c);
  });

  it('three conversations per photo; one mask and one class per [SEG]; absent classes answered without [SEG]', async () => {
    const rand = mulberry32(5);
    let absent = 0,
      segs = 0,
      implicit = 0;
    for (let k = 0; k < 200; k++) {
      const index = Math.floor(rand() * src.length);
      const ex = src.example(index, rand);
      const present = new Set(src.set.images[index]!.instances.map((i) => i.cls));
      assert.equal(ex.conversations.length, CONVERSATIONS_PER_IMAGE);
      const n = ex.conversations.reduce((a, c) => a + countSeg(c.turns[0]!.answer), 0);
      assert.equal(ex.masks.length, n);
      assert.deepEqual(ex.classes!.length, n);
      for (const c of ex.classes!) assert.ok(present.has(c), 'a [SEG] is always about a class in the photo');
      for (const c of ex.conversations) {
        const { question, answer } = c.turns[0]!;
        assert.ok(question.startsWith('<image>\n'));
        if (countSeg(answer) === 0) {
          absent++;
          const name = /^The (.+) is not in this image\.$/.exec(answer)?.[1];
          assert.ok(name, answer);
          assert.ok(!present.has(src.set.classes.indexOf(name!)), `${name} is in the photo`);
          assert.equal(answer, absentAnswer(name!));
        }
        if (!src.set.classes.some((cl) => question.includes(cl))) implicit++;
      }
      segs += n;
      // The masks are the classes' instances: non-empty at the photo's size.
      const m = await (ex.masks[0] as { draw?: (h: number, w: number) => Promise<Uint8Array> } | undefined)?.draw?.(480, 640);
      if (m) assert.ok(m.some((v) => v === 1));
    }
    assert.ok(absent > 100 && absent < 250, `${absent} absent of 600`);
    assert.ok(segs > 300, `${segs} masks`);
    assert.ok(implicit > 100, `${implicit} questions without a class name`);
  });

  it('the same seed draws the same conversations', () => {
    const a = src.example(3, mulberry32(9)),
      b = src.example(3, mulberry32(9));
    assert.deepEqual(a.conversations, b.conversations);
  });
});

describe('WordNet (Debian wordnet-base)', () => {
  it('reads the frequent sense of the wanted kind, with its gloss and hypernym', () => {
    const wn = WordNet.open();
    assert.ok(wn, 'wordnet-base is installed (.ci/run installs it)');
    const sink = wn.noun('sink', 'artifact')!;
    assert.match(sink.gloss, /basin/);
    assert.ok(sink.words.includes('sink'));
    const mouse = wn.noun('mouse', 'artifact')!;
    assert.match(mouse.gloss, /cursor|computer/);
    assert.ok(wn.noun('cat', 'animal')!.hypernym.length > 0);
    assert.equal(wn.noun('no such word at all', 'artifact'), null);
    wn.close();
    assert.equal(WordNet.open('/nonexistent'), null);
  });
});

describe('[SEG] → detector boxes (similarity as points)', () => {
  const det = (cls: number, score: number, x = 0): { x1: number; y1: number; x2: number; y2: number; score: number; cls: number } => ({
    x1: x,
    y1: 0,
    x2: x + 10,
    y2: 10,
    score,
    cls,
  });
  const peaks = [
    { score: 0.1, x: 1, y: 2 },
    { score: 0.05, x: 3, y: 4 },
    { score: 0.01, x: 5, y: 6 },
  ];
  const cfg = { minScore: 0.15, relativeScore: 0.5, maxBoxes: 8, presenceThreshold: 0.1 };
  it('is the softmax of the class head', () => {
    const p = segClassProbs(Float32Array.from([1, 0, 0, 1, 1, 1]), Float32Array.from([0, 0, -100]), Float32Array.from([2, 0]));
    assert.ok(Math.abs(p[0]! - 1 / (1 + Math.exp(-2))) < 1e-6);
    assert.ok(p[2]! < 1e-30);
  });
  it('keeps boxes over max(min_score, relative · best), weighted by the class probability', () => {
    const probs = Float32Array.from([0.9, 0.1, 0]);
    const got = selectSegPrompts(probs, [det(0, 0.8, 0), det(0, 0.3, 20), det(1, 0.9, 40), det(0, 0.1, 60)], peaks, cfg);
    assert.deepEqual(
      got.map((p) => ('box' in p ? p.box.x1 : -1)),
      [0],
    ); // 0.72 kept; 0.27 < 0.36; class 1: 0.09; 0.09
    const relaxed = selectSegPrompts(probs, [det(0, 0.8, 0), det(0, 0.5, 20)], peaks, cfg);
    assert.equal(relaxed.length, 2);
  });
  it('falls back to the best box of the likeliest class, then to its heatmap peak; none without fallback', () => {
    const probs = Float32Array.from([0.1, 0.8, 0.1]);
    const low = [det(1, 0.1, 5), det(1, 0.05, 9), det(0, 0.1, 30)];
    assert.deepEqual(selectSegPrompts(probs, low, peaks, cfg), [{ box: low[0] }]);
    assert.deepEqual(selectSegPrompts(probs, [det(0, 0.1)], peaks, cfg), [{ point: { x: 3, y: 4 } }]);
    assert.deepEqual(selectSegPrompts(probs, low, peaks, cfg, false), []);
  });
});

describe('config.json "lisa_ts": the towers of a lisa-ts model', () => {
  const base = {
    model_type: 'llava',
    train_mask_decoder: true,
    hidden_size: 8,
    intermediate_size: 16,
    num_hidden_layers: 1,
    num_attention_heads: 2,
    vocab_size: 10,
  };
  const towers = {
    vision_tower: { type: 'tfjs-detector', model: 'det.json', input_size: 512, classes: 'classes.json' },
    sam_image_encoder: 'enc.onnx',
    seg_prompts: { type: 'detector-boxes', min_score: 0.15, relative_score: 0.3, max_boxes: 8, presence_threshold: 0.1 },
  };
  it('resolves the named files in the folder, and names the field of a mistake', async () => {
    const { readLisaConfig } = await import('../src/models/config.js');
    using t = tempDir();
    for (const f of ['det.json', 'enc.onnx']) writeFileSync(join(t.path, f), '{}');
    writeFileSync(join(t.path, 'classes.json'), '["cat", "dog"]');
    writeFileSync(join(t.path, 'config.json'), JSON.stringify({ ...base, lisa_ts: towers }));
    const c = readLisaConfig(t.path);
    assert.deepEqual(c.towers!.vision.classes, ['cat', 'dog']);
    assert.equal(c.towers!.samImageEncoder, join(t.path, 'enc.onnx'));
    assert.equal(c.towers!.segPrompts.maxBoxes, 8);
    const bad = (lisa_ts: unknown, re: RegExp): void => {
      writeFileSync(join(t.path, 'config.json'), JSON.stringify({ ...base, lisa_ts }));
      assert.throws(
        () => readLisaConfig(t.path),
        (e: Error) => e instanceof LisaError && re.test(e.message),
        JSON.stringify(lisa_ts),
      );
    };
    bad({ ...towers, sam_image_encoder: 'missing.onnx' }, /lisa_ts\.sam_image_encoder names missing\.onnx, which is not in/);
    bad({ ...towers, vision_tower: { ...towers.vision_tower, type: 'yolo' } }, /lisa_ts\.vision_tower\.type must be "tfjs-detector"/);
    bad({ ...towers, vision_tower: { ...towers.vision_tower, input_size: 0 } }, /field "input_size" must be a positive integer/);
    bad({ ...towers, seg_prompts: 3 }, /lisa_ts\.seg_prompts must be an object/);
    writeFileSync(join(t.path, 'classes.json'), '{"cat": 1}');
    bad(towers, /classes\.json: must be a JSON list of class names/);
  });
});

describe('generation: the [SEG] gate', () => {
  it('decides [SEG] wherever it is among the two likeliest tokens, and changes nothing elsewhere', async () => {
    const { LisaModel } = await import('../src/models/lisa.js');
    const { llmForward } = await import('../src/inference/llm.js');
    const { generate } = await import('../src/inference/generate.js');
    using cache = tempDir();
    const ckpt = join(SHARED, 'fixtures', 'lisa-tiny', 'checkpoint');
    const model = LisaModel.load(ckpt, { visionTower: join(ckpt, 'clip-vit-tiny-patch14'), cacheDir: cache.path, threads: 1 });
    const ids = model.tokenizer.encode('A chat between a curious human and an artificial intelligence assistant.');
    const run = async (segGate?: { token: number; allow: (h: Float32Array, t: readonly number[]) => Promise<boolean> }): Promise<number[]> => {
      const prefill = await llmForward(model.llm, model.embedTokens(ids), ids.length, undefined, false, 'last');
      return (await generate(model.llm, prefill, ids.length, { maxNewTokens: 6, ...(segGate ? { segGate } : {}) })).tokens;
    };
    const free = await run();
    // The random model's second choice at step 0, found from its logits.
    const prefill = await llmForward(model.llm, model.embedTokens(ids), ids.length, undefined, false, 'last');
    const v = model.config.llama.vocabSize;
    const row = prefill.logits.subarray(prefill.logits.length - v);
    const second = [...row.keys()].sort((a, b) => row[b]! - row[a]!)[1]!;
    const asked: number[] = [];
    const yes = await run({ token: second, allow: async (h) => (asked.push(h.length), true) });
    assert.equal(yes[0], second, 'allowed: the gated token replaces the first choice');
    assert.equal(asked[0], model.config.llama.hiddenSize, 'the gate sees the hidden state that produces the token');
    const no = await run({ token: free[0]!, allow: async () => false });
    assert.notEqual(no[0], free[0], 'refused: the next best token');
    const never = await run({ token: v - 1, allow: async () => true });
    assert.deepEqual(never, free, 'a token outside the top two is never forced');
    await model.release();
    model.close();
  });
});
