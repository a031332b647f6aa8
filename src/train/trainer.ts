import { createHash } from 'node:crypto';
import { appendFileSync, existsSync, mkdirSync, readFileSync, rmSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { LisaError } from '../errors.js';
import type { EvalItem } from '../eval/datasets.js';
import { runEval } from '../eval/runner.js';
import { mulberry32 } from '../inference/generate.js';
import { imageRows as clipImageRows } from '../inference/pipeline.js';
import { writeAtomic } from '../io/file.js';
import { differingKeys } from '../io/settings.js';
import { LisaModel } from '../models/lisa.js';
import { latestCheckpoint, loadCheckpoint, saveCheckpoint, type RunState } from './checkpoint.js';
import { buildBatch, EncodingCache } from './data/examples.js';
import type { TrainExample, TrainSource } from './data/sources.js';
import { mergeToReleased } from './merge.js';
import { AdamW, clipGradNorm, getLr, LISA_ADAMW, type WarmupDecayLR } from './optim.js';
import { TrainingSet, type TrainSpec } from './params.js';
import { GradientEngine, type LossName } from './step.js';
import { LISA_LOSS_WEIGHTS, type LossWeights } from './losses.js';
import type { PrepareOptions } from './model-forward.js';

export interface TrainOptions {
  out: string;
  sources: { source: TrainSource; weight: number }[];
  /** Optimiser steps in all. */
  steps: number;
  /** Images per micro-batch (train_ds.py: 2). */
  batchSize: number;
  /** Micro-batches per optimiser step (train_ds.py: 10); their gradients are averaged, as DeepSpeed's loss scaling. */
  gradAccum: number;
  lr: number;
  warmupSteps: number;
  seed: number;
  /** Checkpoint every N steps (and at the end, and on Ctrl-C). */
  saveEvery: number;
  /** Validation after every epoch of this many steps (train_ds.py: 500), when `val` is given. */
  stepsPerEpoch: number;
  val?: { items: EvalItem[]; visionTower: string | undefined };
  spec: TrainSpec;
  /** Trained tensors (name parts) to start from random init instead of the checkpoint. */
  reinit?: readonly string[];
  maxGradNorm?: number;
  /** train_ds.py's --ce/bce/dice_loss_weight (default 1, 2, 0.5), plus the class loss of a detector-tower model. */
  lossWeights?: LossWeights;
  /** Pad batches to shape buckets of this many positions, so few step graphs are compiled (default 1: exact). */
  bucket?: number;
  onStep?: (log: StepLog) => void;
  onMessage?: (line: string) => void;
  /** Polled after each step: true saves a checkpoint and returns (Ctrl-C). */
  shouldStop?: () => boolean;
}

export interface StepLog extends Record<LossName, number> {
  step: number;
  lr: number;
  grad_norm: number;
  samples: number;
  seconds: number;
  samples_per_s: number;
  val_giou?: number;
  val_ciou?: number;
}

/** A 32-bit seed from the run seed and a path of integers (step, micro-batch, purpose). */
export function seedOf(...parts: (number | string)[]): number {
  return createHash('sha256').update(parts.join(':')).digest().readUInt32LE(0);
}

/**
 * peft's LoRA init: A ~ kaiming_uniform(a=√5) = U(±1/√fan_in), B = 0, so the adapted model starts equal to the base.
 * Drawn from the run's seeded generator (torch's RNG stream is not reproduced).
 */
export function initLora(set: TrainingSet, seed: number): void {
  for (const p of set.list()) {
    if (p.name.includes('.lora_A.')) {
      const rand = mulberry32(seedOf(seed, 'lora', p.name)),
        bound = 1 / Math.sqrt(p.shape[1]!);
      for (let i = 0; i < p.value.length; i++) p.value[i] = Math.fround((2 * rand() - 1) * bound);
    } else if (p.name.includes('.lora_B.')) p.value.fill(0);
  }
}

/**
 * Training from scratch, part by part: every trained tensor whose name contains one of `parts` gets PyTorch's
 * default init for its kind (Linear/conv weights kaiming_uniform(a=√5) = U(±1/√fan_in), their biases U(±1/√fan_in),
 * norm weights 1 and biases 0, embeddings and learned tokens N(0, 1)) from the run's seeded generator — e.g.
 * `text_hidden_fcs`, as train_ds.py's initialize_lisa_modules() re-creates it for a LLaVA base.
 */
export function reinitialize(set: TrainingSet, parts: readonly string[], seed: number): string[] {
  const done: string[] = [];
  for (const p of set.list()) {
    if (!parts.some((s) => p.name.includes(s)) || p.name.includes('.lora_')) continue;
    const rand = mulberry32(seedOf(seed, 'init', p.name));
    const uniform = (bound: number): void => {
      for (let i = 0; i < p.value.length; i++) p.value[i] = Math.fround((2 * rand() - 1) * bound);
    };
    const leaf = p.name.split('.').pop()!,
      owner = p.name.slice(0, -leaf.length - 1);
    const isNorm = /norm|ln_|layernorm|output_upscaling\.1\b/.test(owner);
    if (p.shape.length >= 2 && /embed|_token\b|tokens\b|embedding/.test(owner)) {
      for (let i = 0; i < p.value.length; i += 2) {
        const u = Math.max(rand(), 1e-12),
          v = rand(),
          r = Math.sqrt(-2 * Math.log(u));
        p.value[i] = Math.fround(r * Math.cos(2 * Math.PI * v));
        if (i + 1 < p.value.length) p.value[i + 1] = Math.fround(r * Math.sin(2 * Math.PI * v));
      }
    } else if (p.shape.length >= 2) {
      // nn.Linear [out, in]: fan_in = in; ConvTranspose2d [in, out, k, k]: torch's fan_in is size(1)·k·k.
      const fanIn = p.shape.length === 2 ? p.shape[1]! : p.shape[1]! * p.shape.slice(2).reduce((a, b) => a * b, 1);
      uniform(1 / Math.sqrt(fanIn));
    } else if (isNorm) p.value.fill(leaf === 'weight' ? 1 : 0);
    else {
      const w = set.params.get(`${owner}.weight`);
      const fanIn = !w ? 0 : w.shape.length === 2 ? w.shape[1]! : w.shape[1]! * w.shape.slice(2).reduce((a, b) => a * b, 1);
      if (fanIn) uniform(1 / Math.sqrt(fanIn));
      else p.value.fill(0);
    }
    done.push(p.name);
  }
  return done;
}

/** The examples of one micro-batch: a source by the mixture's weights (dataset.py's np.random.choice), then a random image. */
export async function sampleMicroBatch(sources: TrainOptions['sources'], batchSize: number, rand: () => number): Promise<TrainExample[]> {
  const total = sources.reduce((n, s) => n + s.weight, 0);
  const out: TrainExample[] = [];
  for (let i = 0; i < batchSize; i++) {
    let r = rand() * total,
      k = 0;
    while (k < sources.length - 1 && r >= sources[k]!.weight) {
      r -= sources[k]!.weight;
      k++;
    }
    const src = sources[k]!.source;
    out.push(await src.example(Math.floor(rand() * src.length), rand));
  }
  return out;
}

/**
 * The training loop of train_ds.py: per step, `gradAccum` micro-batches of `batchSize` images (each up to 3
 * conversations), gradients averaged, clipped at 1.0, AdamW at the WarmupDecayLR rate; a JSONL log line per step;
 * a checkpoint every `saveEvery` steps; validation (gIoU/cIoU, teacher-forced as the official validate) after each
 * epoch with the best checkpoint kept. Resumes from `out`'s latest checkpoint, and refuses one made with other
 * settings. The data and dropout of step k depend only on (seed, k): a resumed run repeats an uninterrupted one.
 */
export async function train(model: LisaModel, opts: TrainOptions): Promise<RunState> {
  const out = resolve(opts.out);
  mkdirSync(out, { recursive: true });
  const set = new TrainingSet(model.ckpt, opts.spec);
  const adam = new AdamW({ ...LISA_ADAMW, lr: opts.lr });
  // Step k runs at get_lr(k + 1) of a schedule ending one step after the last, so no step runs at 0.
  const schedule: WarmupDecayLR = { totalSteps: opts.steps + 1, warmupSteps: opts.warmupSteps, warmupMinLr: 0, warmupMaxLr: opts.lr };
  const settings = {
    model: model.dir,
    spec: opts.spec,
    steps: opts.steps,
    batchSize: opts.batchSize,
    gradAccum: opts.gradAccum,
    lr: opts.lr,
    warmupSteps: opts.warmupSteps,
    seed: opts.seed,
    data: opts.sources.map((s) => ({ name: s.source.name, length: s.source.length, weight: s.weight })),
    precision: model.precision,
    reinit: opts.reinit ?? [],
    ...(opts.lossWeights ? { lossWeights: opts.lossWeights } : {}),
    ...(opts.bucket && opts.bucket > 1 ? { bucket: opts.bucket } : {}),
  };
  let state: RunState = { step: 0, settings, best: null };
  const latest = latestCheckpoint(out);
  const logPath = join(out, 'log.jsonl');
  if (latest) {
    state = loadCheckpoint(latest, set, adam);
    if (JSON.stringify(state.settings) !== JSON.stringify(settings)) {
      throw new LisaError(
        `${out}: holds a run with other settings (${differingKeys(state.settings, settings).join(', ')}); use another --out, or ` +
          `the same settings to resume`,
      );
    }
    // Steps logged after the checkpoint (a run killed between two saves) are redone: drop their lines.
    if (existsSync(logPath)) {
      const kept = readFileSync(logPath, 'utf8')
        .split('\n')
        .filter((l) => {
          try {
            return l && (JSON.parse(l) as StepLog).step <= state.step;
          } catch {
            return false;
          }
        });
      writeAtomic(logPath, [kept.map((l) => `${l}\n`).join('')]);
    }
    opts.onMessage?.(`resuming from ${latest} (step ${state.step} of ${opts.steps})`);
  } else {
    initLora(set, opts.seed);
    if (opts.reinit?.length) {
      const n = reinitialize(set, opts.reinit, opts.seed);
      if (n.length === 0) throw new LisaError(`--reinit ${opts.reinit.join(',')}: no trained tensor has such a name`);
      opts.onMessage?.(`random init for ${n.length} trained tensors (${opts.reinit.join(', ')})`);
    }
    rmSync(logPath, { force: true });
  }
  const engine = new GradientEngine(model, set);
  const weights = opts.lossWeights ?? LISA_LOSS_WEIGHTS;
  const prepare: PrepareOptions = {
    masks: weights.bce !== 0 || weights.dice !== 0,
    classes: (weights.cls ?? 0) > 0 && set.params.has('model.seg_class_head.weight'),
    bucket: opts.bucket ?? 1,
  };
  const cache = new EncodingCache(model, 256, prepare.masks);
  const rows = clipImageRows(model);
  try {
    while (state.step < opts.steps) {
      const t0 = performance.now();
      const step = state.step;
      const lr = getLr(schedule, step + 1);
      let grads: Map<string, Float32Array | null> | null = null;
      const sums: Record<LossName, number> = { loss: 0, ce_loss: 0, mask_bce_loss: 0, mask_dice_loss: 0, mask_loss: 0, class_loss: 0 };
      let samples = 0;
      for (let m = 0; m < opts.gradAccum; m++) {
        const examples = await sampleMicroBatch(opts.sources, opts.batchSize, mulberry32(seedOf(opts.seed, step, m, 'data')));
        const batch = await buildBatch(model, cache, examples, rows);
        samples += batch.inputIds.length;
        const r = await engine.compute(batch, { dropoutSeed: seedOf(opts.seed, step, m, 'dropout'), lossWeights: weights, prepare });
        for (const k of Object.keys(sums) as LossName[]) sums[k] += r.losses[k] / opts.gradAccum;
        grads = accumulate(grads, r.grads, 1 / opts.gradAccum);
      }
      const present = [...grads!.values()].filter((g): g is Float32Array => g !== null);
      const { norm } = clipGradNorm(present, opts.maxGradNorm ?? 1.0);
      adam.step(set.list(), grads!, lr);
      state = { ...state, step: step + 1 };
      const seconds = (performance.now() - t0) / 1000;
      const log: StepLog = { step: state.step, ...sums, lr, grad_norm: norm, samples, seconds, samples_per_s: samples / seconds };
      if (opts.val && state.step % opts.stepsPerEpoch === 0) {
        const v = await validate(model, set, out, opts.val.items, opts.val.visionTower);
        log.val_giou = v.giou;
        log.val_ciou = v.ciou;
        if (!state.best || v.giou > state.best.giou) state = { ...state, best: { giou: v.giou, step: state.step } };
      }
      appendFileSync(logPath, `${JSON.stringify(log)}\n`);
      opts.onStep?.(log);
      const stop = opts.shouldStop?.() === true;
      if (state.step % opts.saveEvery === 0 || state.step === opts.steps || stop || log.val_giou !== undefined)
        saveCheckpoint(out, set, adam, state);
      if (stop) {
        opts.onMessage?.(`stopped at step ${state.step}; checkpoint saved, the same command resumes`);
        break;
      }
    }
  } finally {
    await engine.release();
  }
  return state;
}

function accumulate(
  acc: Map<string, Float32Array | null> | null,
  grads: Map<string, Float32Array | null>,
  scale: number,
): Map<string, Float32Array | null> {
  const out = acc ?? new Map<string, Float32Array | null>();
  for (const [name, g] of grads) {
    const prev = out.get(name) ?? null;
    if (!g) {
      if (!out.has(name)) out.set(name, null);
      continue;
    }
    // Plain loops (a Float32Array store rounds like Math.fround); a closure per element cost ~1 s a step at 9 M values.
    if (!prev) {
      if (scale === 1) out.set(name, g);
      else {
        const a = new Float32Array(g.length);
        for (let i = 0; i < g.length; i++) a[i] = g[i]! * scale;
        out.set(name, a);
      }
      continue;
    }
    for (let i = 0; i < g.length; i++) {
      const t = Math.fround(g[i]! * scale);
      prev[i] = prev[i]! + t;
    }
  }
  return out;
}

/**
 * train_ds.py's validate(): the trained weights merged into a released-layout folder, loaded like any
 * checkpoint, and scored with `lisa eval`'s teacher-forced protocol (gIoU, cIoU).
 */
async function validate(
  model: LisaModel,
  set: TrainingSet,
  out: string,
  items: EvalItem[],
  visionTower: string | undefined,
): Promise<{ giou: number; ciou: number }> {
  const dir = join(out, '.validation-model');
  rmSync(dir, { recursive: true, force: true });
  mergeToReleased(model.ckpt, model.dir, set, dir);
  const merged = LisaModel.load(dir, {
    visionTower,
    cacheDir: model.engine.cacheDir,
    threads: model.engine.threads,
    precision: model.precision,
  });
  try {
    const evalDir = join(out, '.validation-results');
    rmSync(evalDir, { recursive: true, force: true });
    const r = await runEval(merged, items, { protocol: 'teacher-forced', outDir: evalDir });
    return { giou: r.overall.giou, ciou: r.overall.ciou };
  } finally {
    await merged.release();
    merged.close();
    rmSync(dir, { recursive: true, force: true });
  }
}

/** The CLIP tower folder a loaded model uses (for loading merged checkpoints beside it). */
export function visionTowerDir(model: LisaModel): string | undefined {
  if (!model.clipCkpt) return undefined; // its towers are in its folder
  const p = model.clipCkpt.path;
  return p.endsWith('.json') || /\.(bin|safetensors)$/.test(p) ? dirname(p) : p;
}
