/**
 * Training rows of `npm run bench` (train-tiny, train-7b): one optimiser step's time and peak RSS beside the
 * official code's time for the fixture's step, and the FLOP rate of the training step against the forward alone.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { decodeImage } from '../src/image/decode.js';
import { imageRows } from '../src/inference/pipeline.js';
import { LisaModel } from '../src/models/lisa.js';
import { collateConversation, padBatch } from '../src/inference/collate.js';
import { readFixtureBatch } from '../src/train/fixture-step.js';
import { buildTrainForward, prepareBatch, type TrainBatch } from '../src/train/model-forward.js';
import { AdamW, clipGradNorm } from '../src/train/optim.js';
import { LISA_TRAIN_SPEC, TrainingSet } from '../src/train/params.js';
import { GradientEngine } from '../src/train/step.js';
import { initLora } from '../src/train/trainer.js';
import { graphFlops } from './flops.js';
import type { Row } from './row.js';

const FIXTURES = join(import.meta.dirname, '..', '..', '..', 'shared', 'fixtures');
const now = (): number => performance.now() / 1000;
const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

/** Times the forward alone (the same graph before autodiff) and the whole step; FLOPs from the forward's products. */
async function measure(
  model: LisaModel,
  set: TrainingSet,
  batch: TrainBatch,
  reps: number,
): Promise<{ fwd: number; step: number; optim: number; flops: number; build: number }> {
  const say = (m: string): void => {
    process.stderr.write(`# train bench: ${m} (${(process.memoryUsage().rss / 2 ** 30).toFixed(2)} GiB RSS)\n`);
  };
  const rows = imageRows(model);
  const fwd = buildTrainForward(model, set, prepareBatch(model, batch, rows).structure, rows);
  const flops = graphFlops(fwd.graph); // the forward's products, counted before any gradient node exists
  const forward = new GradientEngine(model, set);
  say('forward session');
  await forward.compute(batch, { backward: false });
  say('forward built and run');
  const tf: number[] = [];
  for (let i = 0; i < reps; i++) {
    const t = now();
    await forward.compute(batch, { backward: false });
    tf.push(now() - t);
  }
  await forward.release();
  say('forward measured');
  const engine = new GradientEngine(model, set);
  let t = now();
  await engine.compute(batch); // builds the forward + backward session
  const build = now() - t;
  say(`forward + backward session built and run in ${build.toFixed(1)} s`);
  const ts: number[] = [],
    to: number[] = [];
  const adam = new AdamW();
  for (let i = 0; i < reps; i++) {
    t = now();
    const { grads } = await engine.compute(batch);
    ts.push(now() - t);
    t = now();
    clipGradNorm(
      [...grads.values()].filter((g): g is Float32Array => g !== null),
      1,
    );
    adam.step(set.list(), grads);
    to.push(now() - t);
  }
  await engine.release();
  return { fwd: median(tf), step: median(ts), optim: median(to), flops, build };
}

function rowsFor(name: string, m: Awaited<ReturnType<typeof measure>>, official: number | null, note: string): Row[] {
  const total = m.step + m.optim;
  // Backward ≈ 2× forward FLOPs, so the step's rate is 3F / t_step; the goal compares it to F / t_forward.
  const fwdRate = m.flops / m.fwd / 1e9,
    stepRate = (3 * m.flops) / m.step / 1e9;
  return [
    {
      name: `${name} step`,
      seconds: total,
      baseline: official ? 'official train_ds.py step on this CPU (fwd 1.24 + bwd 0.96 s, fixture manifest)' : '',
      baseline_seconds: official,
      ratio: official ? official / total : null,
      unit: 'steps/s',
      value: 1 / total,
      limit: null,
      note: `forward+backward ${m.step.toFixed(3)} s, clip+AdamW ${m.optim.toFixed(3)} s, session build ${m.build.toFixed(1)} s; ${note}`,
    },
    {
      name: `${name} forward`,
      seconds: m.fwd,
      baseline: '',
      baseline_seconds: null,
      ratio: null,
      unit: 'GFLOP/s',
      value: fwdRate,
      limit: null,
      note: `${(m.flops / 1e9).toFixed(2)} GFLOP of matrix products`,
    },
    {
      name: `${name} step rate`,
      seconds: m.step,
      baseline: 'forward alone (goal ≥ 40 %)',
      baseline_seconds: null,
      ratio: stepRate / fwdRate,
      unit: 'GFLOP/s',
      value: stepRate,
      limit: null,
    },
  ];
}

/** The fixture's official step (2 images, 3 conversations, 4 masks) on the tiny checkpoint. */
export async function trainBenchTiny(threads: number): Promise<Row[]> {
  const ckpt = join(FIXTURES, 'lisa-tiny', 'checkpoint'),
    fix = join(FIXTURES, 'train-step');
  const model = LisaModel.load(ckpt, { visionTower: join(ckpt, 'clip-vit-tiny-patch14'), threads, precision: 'fp32' });
  const set = new TrainingSet(model.ckpt, LISA_TRAIN_SPEC);
  set.dropoutActive = false;
  initLora(set, 1);
  for (const p of set.list()) if (p.name.includes('.lora_B.')) p.value.fill(0.01);
  const batch = await readFixtureBatch(model, fix, JSON.parse(readFileSync(join(fix, 'manifest.json'), 'utf8')));
  const m = await measure(model, set, batch, 5);
  return rowsFor('train-tiny', m, 1.24 + 0.96, 'the fixture batch');
}

/** One LoRA step of the 7B layout with the base frozen in int4: one ReasonSeg-like sample (~350 tokens, one mask). */
export async function trainBench7b(modelDir: string, clipDir: string, threads: number): Promise<Row[]> {
  const t0 = now();
  const model = LisaModel.load(modelDir, { visionTower: clipDir, threads, precision: 'int4', keepVisionSessions: false });
  const set = new TrainingSet(model.ckpt, LISA_TRAIN_SPEC);
  set.dropoutActive = true;
  initLora(set, 1);
  const image = await decodeImage(join(FIXTURES, 'lisa-tiny', 'golden', 'inputs', 'truck.jpg'));
  let t = now();
  const enc = await model.encodeImage(image);
  const encode = now() - t;
  const question =
    '<image>\nThe person who owns this vehicle needs to move a heavy sofa and several boxes to a new apartment across the city this weekend. Which part of the picture would they load the furniture into, and why would it be suitable for that job? Please output segmentation mask and explain why.';
  const answer = 'Sure, [SEG]. The open cargo bed at the back of the truck is flat, wide and has low sides, so a sofa and boxes fit there.';
  const col = collateConversation(model.tokenizer, { turns: [{ question, answer }] }, imageRows(model));
  const [h, w] = enc.originalSize;
  const gt = new Uint8Array(h * w);
  for (let y = Math.floor(h * 0.35); y < Math.floor(h * 0.8); y++) gt.fill(1, y * w + Math.floor(w * 0.1), y * w + Math.floor(w * 0.55));
  const batch: TrainBatch = {
    ...padBatch([col]),
    offset: [0, 1],
    images: [
      {
        projected: enc.projected,
        samEmbeddings: enc.samEmbeddings.data as Float32Array,
        resize: enc.resize,
        originalSize: enc.originalSize,
        gtMasks: gt,
        numMasks: 1,
      },
    ],
  };
  t = now();
  const m = await measure(model, set, batch, 1);
  const tokens = col.inputIds.length - 1 + imageRows(model);
  return [
    ...rowsFor(
      'train-7b',
      m,
      null,
      `${tokens} positions, int4 base, LoRA r=8 + lm_head/embed_tokens/mask_decoder/text_hidden_fcs ` +
        `(${(set.numel / 1e6).toFixed(0)} M trained values)`,
    ),
    {
      name: 'train-7b image encode',
      seconds: encode,
      baseline: 'frozen CLIP + SAM ViT-H, once per image (precomputable)',
      baseline_seconds: null,
      ratio: null,
      unit: 's',
      value: encode,
      limit: null,
    },
    {
      name: 'train-7b whole',
      seconds: now() - t0,
      baseline: 'load, encode, forward, one step',
      baseline_seconds: null,
      ratio: null,
      unit: 's',
      value: now() - t0,
      limit: 16,
      note: 'limit: peak RSS 16 GB',
    },
  ];
}
