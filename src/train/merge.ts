import { copyFileSync, existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { readLisaConfig } from '../models/config.js';
import { LisaError } from '../errors.js';
import { f32ToBf16, f32ToF16, type DType } from '../io/dtype.js';
import type { Checkpoint } from '../io/checkpoint.js';
import { writeAtomic } from '../io/file.js';
import { writeSafetensors, type TensorToWrite } from '../io/safetensors.js';
import { loraDelta } from './lora.js';
import type { TrainingSet } from './params.js';

/** The files of a released checkpoint folder besides its weights (copied as they are). */
const SIDE_FILES = [
  'config.json',
  'generation_config.json',
  'tokenizer.model',
  'tokenizer_config.json',
  'special_tokens_map.json',
  'added_tokens.json',
  'tokenizer.json',
];

/** The frozen towers a lisa-ts model names in config.json's "lisa_ts" (detector, its weight shards, classes, SAM encoder). */
function towerFiles(dir: string): string[] {
  const towers = readLisaConfig(dir).towers;
  if (!towers) return [];
  const files = [towers.vision.model, towers.samImageEncoder];
  const manifest =
    (JSON.parse(readFileSync(towers.vision.model, 'utf8')) as { weightsManifest?: { paths: string[] }[] }).weightsManifest ?? [];
  for (const group of manifest) for (const p of group.paths) files.push(resolve(dirname(towers.vision.model), p));
  files.push(towers.vision.classesFile);
  return files.map((f) => relative(resolve(dir), f));
}

/** float32 values in a checkpoint dtype (bf16/fp16 round to nearest even, as torch's `.to(dtype)`). */
export function fromFloat32(dtype: DType, v: Float32Array): Uint8Array {
  if (dtype === 'float32') return new Uint8Array(v.buffer.slice(v.byteOffset, v.byteOffset + v.byteLength));
  if (dtype === 'bfloat16' || dtype === 'float16') {
    const out = new Uint16Array(v.length),
      conv = dtype === 'bfloat16' ? f32ToBf16 : f32ToF16;
    for (let i = 0; i < v.length; i++) out[i] = conv(v[i]!);
    return new Uint8Array(out.buffer);
  }
  throw new LisaError(`merge: cannot store trained values as ${dtype}`);
}

export interface MergeResult {
  dir: string;
  shards: number;
  tensors: number;
  merged: number;
  replaced: number;
  bytes: number;
}

/**
 * merge_lora_weights_and_save_hf_model.py: every trained tensor replaces the base's, every LoRA adapter folds
 * into its Linear (W + B·A·α/r, peft's merge_and_unload), everything else is copied; written in the released
 * layout — safetensors shards of at most `maxShardBytes` with `model.safetensors.index.json`, the base's tensor
 * names and dtypes, its config and tokenizer files. The folder appears whole or not at all (built beside it,
 * then renamed). Memory: one shard at a time.
 */
export function mergeToReleased(
  base: Checkpoint,
  baseDir: string,
  set: TrainingSet,
  outDir: string,
  maxShardBytes = 2 * 1024 ** 3,
): MergeResult {
  if (existsSync(outDir) && readdirSync(outDir).length > 0)
    throw new LisaError(`${outDir}: already exists and is not empty (merge writes a new folder)`);
  const staging = join(dirname(outDir), `.${outDir.split('/').pop()}.staging-${process.pid}`);
  rmSync(staging, { recursive: true, force: true });
  mkdirSync(staging, { recursive: true });
  try {
    const lora = new Set(set.loraModules.map((m) => `${m}.weight`));
    const names = [...base.tensors.keys()];
    // Shards in checkpoint order, each up to maxShardBytes.
    const shards: string[][] = [[]];
    let size = 0,
      total = 0;
    for (const n of names) {
      const b = base.tensors.get(n)!.byteLength;
      if (size > 0 && size + b > maxShardBytes) {
        shards.push([]);
        size = 0;
      }
      shards[shards.length - 1]!.push(n);
      size += b;
      total += b;
    }
    const weightMap: Record<string, string> = {};
    let merged = 0,
      replaced = 0;
    shards.forEach((group, i) => {
      const file =
        shards.length === 1
          ? 'model.safetensors'
          : `model-${String(i + 1).padStart(5, '0')}-of-${String(shards.length).padStart(5, '0')}.safetensors`;
      const tensors: TensorToWrite[] = group.map((n) => {
        const t = base.tensors.get(n)!;
        const trained = set.params.get(n);
        let data: Uint8Array;
        if (trained) {
          data = fromFloat32(t.dtype, trained.value);
          replaced++;
        } else if (lora.has(n)) {
          const w = t.float32().slice(),
            delta = loraDelta(set, n.slice(0, -'.weight'.length));
          for (let k = 0; k < w.length; k++) w[k] = Math.fround(w[k]! + delta[k]!);
          data = fromFloat32(t.dtype, w);
          merged++;
        } else data = t.bytes();
        weightMap[n] = file;
        return { name: n, dtype: t.dtype, shape: t.shape, data };
      });
      writeSafetensors(join(staging, file), tensors, { format: 'pt' });
    });
    if (shards.length > 1)
      writeAtomic(join(staging, 'model.safetensors.index.json'), [
        JSON.stringify({ metadata: { total_size: total }, weight_map: weightMap }, null, 2),
      ]);
    for (const f of SIDE_FILES) if (existsSync(join(baseDir, f))) copyFileSync(join(baseDir, f), join(staging, f));
    for (const f of towerFiles(baseDir)) {
      mkdirSync(dirname(join(staging, f)), { recursive: true });
      copyFileSync(join(baseDir, f), join(staging, f));
    }
    if (existsSync(outDir)) rmSync(outDir, { recursive: true });
    renameSync(staging, outDir);
    return { dir: outDir, shards: shards.length, tensors: names.length, merged, replaced, bytes: total };
  } catch (e) {
    rmSync(staging, { recursive: true, force: true });
    throw e;
  }
}
