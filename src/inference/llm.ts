import { f32, hostTensor, type HostTensor } from '../graph/tensor.js';
import type { LlamaCausalLM } from '../models/llama-causal-lm.js';

/** Keys and values of every layer for the positions seen so far. */
export interface KvCache {
  keys: HostTensor[];
  values: HostTensor[];
  length: number;
}

export interface LlmStep {
  hidden: Float32Array; // final-norm hidden states [S, H]
  logits: Float32Array; // [S, V]
  layers: Float32Array[]; // each decoder layer's output [S, H]
  cache: KvCache;
}

export function emptyCache(lm: LlamaCausalLM): KvCache {
  const c = lm.config;
  const shape = [1, c.numKvHeads, 0, c.hiddenSize / c.numHeads];
  const empty = (): HostTensor => f32(shape, new Float32Array(0));
  return { keys: Array.from({ length: c.numLayers }, empty), values: Array.from({ length: c.numLayers }, empty), length: 0 };
}

/** Runs the decoder on `seq` new embedding rows after the cached positions (positions cache.length …). */
export async function llmForward(lm: LlamaCausalLM, embeds: Float32Array, seq: number, cache: KvCache = emptyCache(lm)): Promise<LlmStep> {
  const c = lm.config;
  const s = await lm.sessionPromise();
  const feeds: Record<string, HostTensor> = {
    inputs_embeds: f32([1, seq, c.hiddenSize], embeds),
    position_ids: hostTensor('int64', [1, seq], BigInt64Array.from({ length: seq }, (_, i) => BigInt(cache.length + i))),
  };
  for (let i = 0; i < c.numLayers; i++) { feeds[`past_key_${i}`] = cache.keys[i]!; feeds[`past_value_${i}`] = cache.values[i]!; }
  const out = await s.run(feeds);
  return {
    hidden: out.hidden!.data as Float32Array,
    logits: out.logits!.data as Float32Array,
    layers: Array.from({ length: c.numLayers }, (_, i) => out[`layer_${i}`]!.data as Float32Array),
    cache: {
      keys: Array.from({ length: c.numLayers }, (_, i) => out[`present_key_${i}`]!),
      values: Array.from({ length: c.numLayers }, (_, i) => out[`present_value_${i}`]!),
      length: cache.length + seq,
    },
  };
}
