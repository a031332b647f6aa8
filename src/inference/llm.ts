import { F32_MIN } from '../graph/nn.js';
import { f32, hostTensor, type HostTensor } from '../graph/tensor.js';
import type { LlamaCausalLM } from '../models/llama-causal-lm.js';

/**
 * Keys and values of every layer for the positions seen so far, seq-major with spare capacity
 * ([capacity, kvHeads, headDim] per layer): the first `length` rows are fed to onnxruntime as views of the
 * buffers (zero-copy, exactly the cached positions), and a step's rows are copied in after them (one copy
 * per layer), so nothing copies the whole cache per token. A cache state is consumed by the next forward
 * (which may append into the same buffers).
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
    // One zero row that mask() hides: onnxruntime faults on a zero-length axis.
    const buf = (): Float32Array => new Float32Array(kvHeads * headDim);
    return new KvCache(Array.from({ length: layers }, buf), Array.from({ length: layers }, buf), 0, 1, kvHeads, headDim);
  }

  /** Rows fed to the graph: the cached positions, or an empty cache's one masked row. */
  private get fedRows(): number {
    return Math.max(this.length, 1);
  }

  /** The first `length` positions (a prefix shared with a new prompt); safe to keep and reuse. */
  truncate(length: number): KvCache {
    return new KvCache(this.keys, this.values, Math.min(length, this.length), this.capacity, this.kvHeads, this.headDim, true);
  }

  /** This cache plus `rows` new positions per layer, given as [rows, kvHeads, headDim]. */
  append(newKeys: Float32Array[], newValues: Float32Array[], rows: number): KvCache {
    const row = this.kvHeads * this.headDim,
      len = this.length;
    const need = len + rows;
    // Room for growth: a decode step that has to grow the buffers copies the whole cache, so grow ahead.
    const cap = need > this.capacity ? Math.max(need + 128, Math.ceil(this.capacity * 1.5)) : this.capacity;
    const place = (buf: Float32Array, add: Float32Array): Float32Array => {
      let b = buf;
      if (cap !== this.capacity || this.shared) {
        b = new Float32Array(cap * row);
        b.set(buf.subarray(0, len * row));
      }
      b.set(add.subarray(0, rows * row), len * row);
      return b;
    };
    return new KvCache(
      this.keys.map((k, i) => place(k, newKeys[i]!)),
      this.values.map((v, i) => place(v, newValues[i]!)),
      need,
      cap,
      this.kvHeads,
      this.headDim,
    );
  }

  /** Bytes of the buffers this state refers to (shared buffers counted by every state that holds them). */
  get bytes(): number {
    return [...this.keys, ...this.values].reduce((n, b) => n + b.byteLength, 0);
  }

  /** Layer `layer`'s fed rows [rows, kvHeads, headDim], as views of the buffers. */
  feed(layer: number): { key: HostTensor; value: HostTensor } {
    const rows = this.fedRows;
    const view = (b: Float32Array): HostTensor =>
      f32([rows, this.kvHeads, this.headDim], b.subarray(0, rows * this.kvHeads * this.headDim));
    return { key: view(this.keys[layer]!), value: view(this.values[layer]!) };
  }

  /** [1, rows fed]: 0 over the cached positions; F32_MIN over an empty cache's one row. */
  mask(): HostTensor {
    return f32([1, this.fedRows], new Float32Array(this.fedRows).fill(this.length ? 0 : F32_MIN));
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
    past_mask: cache.mask(),
    position_ids: hostTensor(
      'int64',
      [1, seq],
      BigInt64Array.from({ length: seq }, (_, i) => BigInt(cache.length + i)),
    ),
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
