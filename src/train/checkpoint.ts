import { existsSync, mkdirSync, readdirSync, readFileSync, renameSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { LisaError } from '../errors.js';
import { writeAtomic } from '../io/file.js';
import { readSafetensors, writeSafetensors } from '../io/safetensors.js';
import type { AdamW } from './optim.js';
import type { TrainingSet } from './params.js';

/**
 * A training run's checkpoint: `<out>/checkpoint-<step>/` holding the trained tensors (`trainable.safetensors`,
 * peft's names for LoRA), the AdamW moments (`optimizer.safetensors`) and `state.json` (step, the run's
 * settings, history), and `<out>/latest.json` naming the newest. A checkpoint folder is built under a temporary
 * name and renamed, and latest.json is replaced atomically, so a run killed at any moment leaves the previous
 * checkpoint intact and a resume continues from it on the same trajectory (the data order and dropout masks
 * are functions of the seed and the step, not of a stream's position).
 */

export interface RunState {
  /** Optimiser steps done. */
  step: number;
  /** The settings that define the trajectory; a resume with other settings is refused. */
  settings: Record<string, unknown>;
  /** Best validation gIoU so far and its step. */
  best: { giou: number; step: number } | null;
}

export function checkpointDir(out: string, step: number): string {
  return join(out, `checkpoint-${step}`);
}

export function saveCheckpoint(out: string, set: TrainingSet, adam: AdamW, state: RunState, keep = 2): string {
  mkdirSync(out, { recursive: true });
  const final = checkpointDir(out, state.step);
  const tmp = join(out, `.checkpoint-${state.step}.tmp-${process.pid}`);
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp);
  const u8 = (a: Float32Array): Uint8Array => new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
  writeSafetensors(
    join(tmp, 'trainable.safetensors'),
    set.list().map((p) => ({ name: p.name, dtype: 'float32', shape: p.shape, data: u8(p.value) })),
  );
  const moments = [...adam.states].flatMap(([name, s]) => {
    const shape = set.params.get(name)!.shape;
    return [
      { name: `${name}.exp_avg`, dtype: 'float32' as const, shape, data: u8(s.expAvg) },
      { name: `${name}.exp_avg_sq`, dtype: 'float32' as const, shape, data: u8(s.expAvgSq) },
    ];
  });
  writeSafetensors(join(tmp, 'optimizer.safetensors'), moments, {
    steps: JSON.stringify(Object.fromEntries([...adam.states].map(([n, s]) => [n, s.step]))),
  });
  writeAtomic(join(tmp, 'state.json'), [JSON.stringify(state, null, 2)]);
  rmSync(final, { recursive: true, force: true });
  renameSync(tmp, final);
  writeAtomic(join(out, 'latest.json'), [JSON.stringify({ checkpoint: `checkpoint-${state.step}`, step: state.step })]);
  // Older checkpoints go, except the best one.
  const bestName = state.best ? `checkpoint-${state.best.step}` : null;
  const steps = readdirSync(out)
    .map((f) => /^checkpoint-(\d+)$/.exec(f))
    .filter((m): m is RegExpExecArray => m !== null)
    .map((m) => Number(m[1]))
    .sort((a, b) => b - a);
  for (const s of steps.slice(keep)) if (`checkpoint-${s}` !== bestName) rmSync(checkpointDir(out, s), { recursive: true, force: true });
  return final;
}

/** The newest checkpoint of a run folder, or null when it has none. */
export function latestCheckpoint(out: string): string | null {
  const p = join(out, 'latest.json');
  if (!existsSync(p)) return null;
  let name: unknown;
  try {
    name = (JSON.parse(readFileSync(p, 'utf8')) as { checkpoint?: unknown }).checkpoint;
  } catch {
    throw new LisaError(`${p}: not valid JSON`);
  }
  if (typeof name !== 'string' || !/^checkpoint-\d+$/.test(name) || !existsSync(join(out, name, 'state.json')))
    throw new LisaError(`${p}: names no complete checkpoint`);
  return join(out, name);
}

/** Loads a checkpoint into the training set and optimiser; returns its state. */
export function loadCheckpoint(dir: string, set: TrainingSet, adam: AdamW): RunState {
  const state = JSON.parse(readFileSync(join(dir, 'state.json'), 'utf8')) as RunState;
  const t = readSafetensors(join(dir, 'trainable.safetensors'));
  try {
    for (const p of set.list()) {
      const ref = t.tensors.find((x) => x.name === p.name);
      if (!ref)
        throw new LisaError(`${dir}/trainable.safetensors: no tensor ${p.name} (the checkpoint was made with another training set)`);
      const v = ref.float32();
      if (v.length !== p.value.length)
        throw new LisaError(`${dir}/trainable.safetensors: ${p.name} has ${v.length} values, expected ${p.value.length}`);
      p.value.set(v);
    }
  } finally {
    t.close();
  }
  const o = readSafetensors(join(dir, 'optimizer.safetensors'));
  try {
    const steps = JSON.parse(o.metadata?.steps ?? '{}') as Record<string, number>;
    adam.states.clear();
    for (const [name, step] of Object.entries(steps)) {
      const m = o.tensors.find((x) => x.name === `${name}.exp_avg`),
        v = o.tensors.find((x) => x.name === `${name}.exp_avg_sq`);
      if (!m || !v) throw new LisaError(`${dir}/optimizer.safetensors: moments of ${name} missing`);
      adam.states.set(name, { step, expAvg: m.float32().slice(), expAvgSq: v.float32().slice() });
    }
  } finally {
    o.close();
  }
  return state;
}
