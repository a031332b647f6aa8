import { F32_MIN } from '../graph/nn.js';
import { f32, hostTensor, type HostTensor } from '../graph/tensor.js';
import type { LlamaCausalLM } from '../models/llama-causal-lm.js';

/**
 * Keys and values of every layer for the positions seen so far, head-major with spare capacity
 * ([kvHeads, capacity, headDim] per layer): the buffers are fed to onnxruntime as they are (zero-copy) with a
 * mask over the unused slots, and a step's rows are copied into place, so nothing copies the whole cache per
 * token. A cache state is consumed by the next forward (which may append into the same buffers).
 */
export class KvCache {
  /** `shared`: the buffers may be in use by another cache state, so appending copies them first. */
  private constructor(
    readonly keys: Float32Array[],
    readonly values: Float32Array[],
    readonly length: number,
    readonly capacity: number,
    readonly kvHeads: number,
    readonly headDim: number,
    private readonly shared = false,
  ) {}

  static empty(layers: number, kvHeads: number, headDim: number): KvCache {
    // One masked slot: the graph's softmax takes a max over the cache axis, which must not be empty.
    const buf = (): Float32Array => new Float32Array(kvHeads * headDim);
    return new KvCache(Array.from({ length: layers }, buf), Array.from({ length: layers }, buf), 0, 1, kvHeads, headDim);
  }

  /** The first `length` positions (a prefix shared with a new prompt); safe to keep and reuse. */
  truncate(length: number): KvCache {
    return new KvCache(this.keys, this.values, Math.min(length, this.length), this.capacity, this.kvHeads, this.headDim, true);
  }

  /** This cache plus `rows` new positions per layer, given as [kvHeads, rows, headDim]. */
  append(newKeys: Float32Array[], newValues: Float32Array[], rows: number): KvCache {
    const { kvHeads: h, headDim: d, length: len } = this;
    const need = len + rows;
    // Room for growth: a decode step that has to grow the buffers copies the whole cache (1 s at 320
    // positions of a 7B, measured), so grow ahead.
    const cap = need > this.capacity ? Math.max(need + 128, Math.ceil(this.capacity * 1.5)) : this.capacity;
    const place = (buf: Float32Array, add: Float32Array): Float32Array => {
      let b = buf;
      if (cap !== this.capacity || this.shared) {
        b = new Float32Array(h * cap * d);
        for (let i = 0; i < h; i++) b.set(buf.subarray(i * this.capacity * d, (i * this.capacity + len) * d), i * cap * d);
      }
      for (let i = 0; i < h; i++) b.set(add.subarray(i * rows * d, (i + 1) * rows * d), (i * cap + len) * d);
      return b;
    };
    return new KvCache(
      this.keys.map((k, i) => place(k, newKeys[i]!)),
      this.values.map((v, i) => place(v, newValues[i]!)),
      need,
      cap,
      h,
      d,
    );
  }

  /** Bytes of the buffers this state refers to (shared buffers counted by every state that holds them). */
  get bytes(): number {
    return [...this.keys, ...this.values].reduce((n, b) => n + b.byteLength, 0);
  }

  feed(layer: number): { key: HostTensor; value: HostTensor } {
    const shape = [1, this.kvHeads, this.capacity, this.headDim];
    return { key: f32(shape, this.keys[layer]!), value: f32(shape, this.values[layer]!) };
  }

  /** [1, capacity]: 0 over the cached positions, F32_MIN over the spare slots. */
  mask(): HostTensor {
    const m = new Float32Array(this.capacity).fill(F32_MIN);
    m.fill(0, 0, this.length);
    return f32([1, this.capacity], m);
  }
}

export interface LlmStep {
  hidden: Float32Array; // final-norm hidden states [S, H]
  logits: Float32Array; // [S - logitsFrom, V]: every position's, or only the last one's
  /** The position (within this call) of the first logits row: 0, or S − 1 with `logits: 'last'`. */
  logitsFrom: number;
  /** Each decoder layer's output [S, H]; only with `debug`. */
  layers: Float32Array[];
  cache: KvCache;
}

/** The logits row of `position` (counted within the step's input) of a step that kept rows from logitsFrom on. */
export function logitsRow(step: LlmStep, position: number, vocab: number): Float32Array {
  return step.logits.subarray((position - step.logitsFrom) * vocab, (position - step.logitsFrom + 1) * vocab);
}

export function emptyCache(lm: LlamaCausalLM): KvCache {
  const c = lm.config;
  return KvCache.empty(c.numLayers, c.numKvHeads, c.hiddenSize / c.numHeads);
}

/** Runs the decoder on `seq` new embedding rows after the cached positions (positions cache.length …). */
export async function llmForward(
  lm: LlamaCausalLM,
  embeds: Float32Array,
  seq: number,
  cache: KvCache = emptyCache(lm),
  debug = false,
  logits: 'all' | 'last' = 'all',
): Promise<LlmStep> {
  const logitsFrom = logits === 'last' ? seq - 1 : 0;
  const c = lm.config;
  const s = await lm.sessionPromise(debug);
  const feeds: Record<string, HostTensor> = {
    inputs_embeds: f32([1, seq, c.hiddenSize], embeds),
    position_ids: hostTensor(
      'int64',
      [1, seq],
      BigInt64Array.from({ length: seq }, (_, i) => BigInt(cache.length + i)),
    ),
    past_mask: cache.mask(),
    logit_rows: hostTensor(
      'int64',
      [seq - logitsFrom],
      BigInt64Array.from({ length: seq - logitsFrom }, (_, i) => BigInt(logitsFrom + i)),
    ),
  };
  for (let i = 0; i < c.numLayers; i++) {
    const kv = cache.feed(i);
    feeds[`past_key_${i}`] = kv.key;
    feeds[`past_value_${i}`] = kv.value;
  }
  const out = await s.run(feeds);
  const newKeys = Array.from({ length: c.numLayers }, (_, i) => out[`new_key_${i}`]!.data as Float32Array);
  const newValues = Array.from({ length: c.numLayers }, (_, i) => out[`new_value_${i}`]!.data as Float32Array);
  return {
    hidden: out.hidden!.data as Float32Array,
    logits: out.logits!.data as Float32Array,
    logitsFrom,
    layers: debug ? Array.from({ length: c.numLayers }, (_, i) => out[`layer_${i}`]!.data as Float32Array) : [],
    cache: cache.append(newKeys, newValues, seq),
  };
}
