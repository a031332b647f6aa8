import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { LisaError } from '../errors.js';
import { decodeImage } from '../image/decode.js';
import { readNpy, writeNpy } from '../io/npy.js';
import type { LisaModel } from '../models/lisa.js';
import { loraDelta } from './lora.js';
import { type TrainBatch, type TrainImage } from './model-forward.js';
import { AdamW, clipGradNorm, LISA_ADAMW, type AdamWOptions } from './optim.js';
import { LISA_TRAIN_SPEC, TrainingSet, type TrainSpec } from './params.js';
import { GradientEngine, type LossName } from './step.js';

/**
 * `lisa train-step`: one optimiser step on a folder laid out like ../shared/fixtures/train-step (the training
 * twin of `lisa dump`): the collated `batch/`, the images of `inputs/` (matched by sha256), the LoRA initial
 * values of `<variant>/before/`, the settings of `manifest.json`. Writes loss/, grad/ (before clipping),
 * after/, optim_state/ and merged/ as the fixture names them.
 */

interface Manifest {
  train_ds?: { lora_config?: { r: number; lora_alpha: number; lora_dropout: number; lora_target_modules_arg?: string } };
  batch?: { samples?: { image_sha256: string }[] };
  variants?: Record<
    string,
    {
      optimizer?: { lr: number; betas: [number, number]; eps: number; weight_decay: number };
      lora_dropout_active?: boolean;
      clip?: { max_norm?: number };
    }
  >;
}

function readManifest(dir: string): Manifest {
  const path = join(dir, 'manifest.json');
  if (!existsSync(path)) throw new LisaError(`${dir}: no manifest.json (expected a folder laid out like fixtures/train-step)`);
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as Manifest;
  } catch (e) {
    throw new LisaError(`${path}: not valid JSON (${(e as Error).message})`);
  }
}

function npy(path: string): ReturnType<typeof readNpy> {
  if (!existsSync(path)) throw new LisaError(`${path}: missing`);
  return readNpy(path);
}
const ints = (a: ReturnType<typeof readNpy>): number[] => Array.from(a.data as ArrayLike<number | bigint>, Number);
const rowsOf = (a: ReturnType<typeof readNpy>): number[][] => {
  const [r, c] = a.shape as [number, number],
    flat = ints(a);
  return Array.from({ length: r }, (_, i) => flat.slice(i * c, (i + 1) * c));
};

/** The images of `inputs/` by sha256 of their bytes. */
function imagesBySha(dir: string): Map<string, string> {
  const out = new Map<string, string>();
  const inputs = join(dir, 'inputs');
  if (!existsSync(inputs)) return out;
  for (const f of readdirSync(inputs)) {
    const p = join(inputs, f);
    if (!statSync(p).isFile() || !/\.(png|jpe?g|webp)$/i.test(f)) continue;
    out.set(createHash('sha256').update(readFileSync(p)).digest('hex'), p);
  }
  return out;
}

export interface TrainStepResult {
  losses: Record<LossName, number>;
  gradNorm: number;
  clipCoef: number;
  written: number;
}

export async function runFixtureStep(model: LisaModel, fixtureDir: string, variant: string, outDir: string): Promise<TrainStepResult> {
  const m = readManifest(fixtureDir);
  const v = m.variants?.[variant];
  if (!v)
    throw new LisaError(`${fixtureDir}/manifest.json: no variant "${variant}" (has ${Object.keys(m.variants ?? {}).join(', ') || 'none'})`);
  const lc = m.train_ds?.lora_config;
  const targets = (lc?.lora_target_modules_arg ?? 'q_proj,v_proj').split(',');
  const spec: TrainSpec = lc
    ? { ...LISA_TRAIN_SPEC, lora: { r: lc.r, alpha: lc.lora_alpha, dropout: lc.lora_dropout, targets } }
    : LISA_TRAIN_SPEC;
  const set = new TrainingSet(model.ckpt, spec);
  set.dropoutActive = v.lora_dropout_active === true;
  // LoRA's initial A/B (peft draws them from torch's RNG: taken from the fixture, as `before/` records them).
  for (const p of set.list()) {
    if (!p.name.includes('.lora_')) continue;
    const a = npy(join(fixtureDir, variant, 'before', `${p.name}.npy`));
    if (a.data.length !== p.value.length)
      throw new LisaError(`${variant}/before/${p.name}.npy has ${a.data.length} values, the adapter needs ${p.value.length}`);
    p.value.set(a.data as Float32Array);
  }
  const batch = await readFixtureBatch(model, fixtureDir, m);
  const engine = new GradientEngine(model, set);
  try {
    const { losses, grads } = await engine.compute(batch);
    mkdirSync(outDir, { recursive: true });
    let written = 0;
    const write = (sub: string, name: string, shape: readonly number[], data: Float32Array): void => {
      mkdirSync(join(outDir, sub), { recursive: true });
      writeNpy(join(outDir, sub, `${name}.npy`), 'float32', shape, data);
      written++;
    };
    for (const [name, value] of Object.entries(losses)) write('loss', name, [], Float32Array.of(value));
    for (const p of set.list()) {
      const gr = grads.get(p.name);
      if (gr) write('grad', p.name, p.shape, gr);
    }
    const withGrad = set.list().filter((p) => grads.get(p.name));
    const clip = clipGradNorm(
      withGrad.map((p) => grads.get(p.name)!),
      v.clip?.max_norm ?? 1.0,
    );
    const o: AdamWOptions = v.optimizer
      ? { lr: v.optimizer.lr, betas: v.optimizer.betas, eps: v.optimizer.eps, weightDecay: v.optimizer.weight_decay }
      : LISA_ADAMW;
    const adam = new AdamW(o);
    adam.step(set.list(), grads);
    for (const [name, state] of adam.states) {
      const p = set.params.get(name)!;
      write('optim_state', `${name}.exp_avg`, p.shape, state.expAvg);
      write('optim_state', `${name}.exp_avg_sq`, p.shape, state.expAvgSq);
    }
    for (const p of set.list()) write('after', p.name, p.shape, p.value);
    for (const module of set.loraModules) {
      const w = model.ckpt.get(`${module}.weight`);
      const merged = w.float32().slice();
      const delta = loraDelta(set, module);
      for (let i = 0; i < merged.length; i++) merged[i] = Math.fround(merged[i]! + delta[i]!);
      write('merged', `${module}.weight`, w.shape, merged);
    }
    return { losses, gradNorm: clip.norm, clipCoef: clip.coef, written };
  } finally {
    await engine.release();
  }
}

/** The fixture's collated batch as a TrainBatch: ids, labels, masks from batch/, images encoded by the model's frozen towers. */
export async function readFixtureBatch(model: LisaModel, dir: string, m: Manifest): Promise<TrainBatch> {
  const b = join(dir, 'batch');
  const inputIds = rowsOf(npy(join(b, 'input_ids.npy'))),
    labels = rowsOf(npy(join(b, 'labels.npy')));
  const attentionMask = rowsOf(npy(join(b, 'attention_masks.npy')));
  const offset = ints(npy(join(b, 'offset.npy')));
  const samples = m.batch?.samples ?? [];
  const files = imagesBySha(dir);
  const images: TrainImage[] = [];
  for (let i = 0; i < offset.length - 1; i++) {
    const sha = samples[i]?.image_sha256;
    const file = sha ? files.get(sha) : undefined;
    if (!file) throw new LisaError(`${dir}: no image in inputs/ has the sha256 manifest.batch.samples[${i}].image_sha256 names`);
    const enc = await model.encodeImage(await decodeImage(file));
    const gt = npy(join(b, `gt_masks_${i}.npy`));
    const [n, hh, ww] = gt.shape as [number, number, number];
    if (hh !== enc.originalSize[0] || ww !== enc.originalSize[1])
      throw new LisaError(`batch/gt_masks_${i}.npy is ${hh}x${ww} but ${file} is ${enc.originalSize[0]}x${enc.originalSize[1]}`);
    images.push({
      projected: enc.projected,
      samEmbeddings: enc.samEmbeddings.data as Float32Array,
      resize: enc.resize,
      originalSize: enc.originalSize,
      gtMasks: Uint8Array.from(gt.data as ArrayLike<number>),
      numMasks: n,
    });
  }
  return { inputIds, labels, attentionMask, offset, images };
}
