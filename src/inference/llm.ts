import { f32, hostTensor, type HostTensor } from '../graph/tensor.js';
import type { LlamaCausalLM } from '../models/llama-causal-lm.js';

/**
 * Keys and values of every layer for the positions seen so far, sequence-major ([T, kvHeads, headDim] rows
 * in growable buffers): appending a step is a copy of its rows, and feeding the cache back to onnxruntime is
 * a zero-copy view. A cache state is consumed by the next forward (which may append into the same buffers).
 */
export class KvCache {
  /** `shared`: the buffers may be in use by another cache state, so appending copies them first. */
  private constructor(readonly keys: Float32Array[], readonly values: Float32Array[], readonly length: number, readonly rowSize: number, private readonly shared = false) {}

  static empty(layers: number, rowSize: number): KvCache {
    return new KvCache(Array.from({ length: layers }, () => new Float32Array(0)), Array.from({ length: layers }, () => new Float32Array(0)), 0, rowSize);
  }

  /** The first `length` positions (a prefix shared with a new prompt); safe to keep and reuse. */
  truncate(length: number): KvCache {
    return new KvCache(this.keys, this.values, Math.min(length, this.length), this.rowSize, true);
  }

  /** This cache plus `rows` new positions per layer. */
  append(newKeys: Float32Array[], newValues: Float32Array[], rows: number): KvCache {
    const need = (this.length + rows) * this.rowSize;
    const grow = (buf: Float32Array, add: Float32Array): Float32Array => {
      let b = buf;
      if (b.length < need || this.shared) { b = new Float32Array(Math.max(need, Math.ceil(buf.length * 1.5), 64 * this.rowSize)); b.set(buf.subarray(0, this.length * this.rowSize)); }
      b.set(add, this.length * this.rowSize);
      return b;
    };
    return new KvCache(this.keys.map((k, i) => grow(k, newKeys[i]!)), this.values.map((v, i) => grow(v, newValues[i]!)), this.length + rows, this.rowSize);
  }

  feed(layer: number, kvHeads: number, headDim: number): { key: HostTensor; value: HostTensor } {
    const n = this.length * this.rowSize;
    return {
      key: f32([1, this.length, kvHeads, headDim], this.keys[layer]!.subarray(0, n)),
      value: f32([1, this.length, kvHeads, headDim], this.values[layer]!.subarray(0, n)),
    };
  }
}

export interface LlmStep {
  hidden: Float32Array; // final-norm hidden states [S, H]
  logits: Float32Array; // [S, V]
  /** Each decoder layer's output [S, H]; only with `debug`. */
  layers: Float32Array[];
  cache: KvCache;
}

export function emptyCache(lm: LlamaCausalLM): KvCache {
  const c = lm.config;
  return KvCache.empty(c.numLayers, c.numKvHeads * (c.hiddenSize / c.numHeads));
}

/** Runs the decoder on `seq` new embedding rows after the cached positions (positions cache.length …). */
export async function llmForward(lm: LlamaCausalLM, embeds: Float32Array, seq: number, cache: KvCache = emptyCache(lm), debug = false): Promise<LlmStep> {
  const c = lm.config;
  const hd = c.hiddenSize / c.numHeads;
  const s = await lm.sessionPromise(debug);
  const feeds: Record<string, HostTensor> = {
    inputs_embeds: f32([1, seq, c.hiddenSize], embeds),
    position_ids: hostTensor('int64', [1, seq], BigInt64Array.from({ length: seq }, (_, i) => BigInt(cache.length + i))),
  };
  for (let i = 0; i < c.numLayers; i++) {
    const kv = cache.feed(i, c.numKvHeads, hd);
    feeds[`past_key_${i}`] = kv.key;
    feeds[`past_value_${i}`] = kv.value;
  }
  const out = await s.run(feeds);
  const newKeys = Array.from({ length: c.numLayers }, (_, i) => out[`new_key_${i}`]!.data as Float32Array);
  const newValues = Array.from({ length: c.numLayers }, (_, i) => out[`new_value_${i}`]!.data as Float32Array);
  return {
    hidden: out.hidden!.data as Float32Array,
    logits: out.logits!.data as Float32Array,
    layers: debug ? Array.from({ length: c.numLayers }, (_, i) => out[`layer_${i}`]!.data as Float32Array) : [],
    cache: cache.append(newKeys, newValues, seq),
  };
}
