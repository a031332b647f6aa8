import { LisaError } from '../errors.js';
import type { TrainingSet } from './params.js';

/**
 * peft 0.4.0's Linear.merge: W' = W + (B @ A)·scaling (fan_in_fan_out=False), in float32 — what
 * merge_and_unload() writes for every adapted Linear. Returns the [out, in] delta.
 */
export function loraDelta(set: TrainingSet, module: string): Float32Array {
  const a = set.params.get(`${module}.lora_A.default.weight`),
    b = set.params.get(`${module}.lora_B.default.weight`);
  if (!a || !b) throw new LisaError(`no LoRA adapter on ${module}`);
  const [r, inF] = a.shape as [number, number],
    out = b.shape[0]!;
  const s = Math.fround(set.scaling);
  const delta = new Float32Array(out * inF);
  const acc = new Float64Array(inF);
  for (let o = 0; o < out; o++) {
    acc.fill(0);
    for (let k = 0; k < r; k++) {
      const bk = b.value[o * r + k]!;
      for (let i = 0; i < inF; i++) acc[i]! += bk * a.value[k * inF + i]!;
    }
    for (let i = 0; i < inF; i++) delta[o * inF + i] = Math.fround(Math.fround(acc[i]!) * s);
  }
  return delta;
}
