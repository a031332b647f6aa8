import { LisaError } from '../errors.js';
import { Graph } from '../graph/graph.js';
import type { Value } from '../graph/ir.js';
import { cachedPromise, type Engine, type EngineSession } from '../graph/session.js';
import type { Checkpoint } from '../io/checkpoint.js';
import { RandomAccessFile } from '../io/file.js';
import { toFloat32, type DType } from '../io/dtype.js';
import type { QuantSpec } from '../graph/quantize.js';
import type { LlamaConfig } from './config.js';
import { llamaDecoder } from './llama.js';
import { ModuleWeights } from './module.js';

/**
 * LlamaForCausalLM as one onnxruntime session with a KV cache (inputs_embeds, position_ids, past_key_i,
 * past_value_i, past_mask, logit_rows → hidden, logits, new_key_i, new_value_i [, layer_i]), plus the token embedding
 * lookup, which runs here: a row read is cheaper than a graph, and LLaVA splices image rows in anyway.
 */
export class LlamaCausalLM {
  private readonly sessions = new Map<boolean, Promise<EngineSession>>();
  private table: { dtype: DType; rows: number; row: (id: number) => Uint8Array; close: () => void } | null = null;

  constructor(
    readonly config: LlamaConfig,
    readonly ckpt: Checkpoint,
    readonly engine: Engine,
    readonly name = 'llm',
    readonly quant: QuantSpec | null = null,
  ) {}

  /** `debug`: also output every decoder layer's hidden states (for lisa dump; slower to fetch). */
  graph(debug = false): Graph {
    const c = this.config;
    const g = new Graph(debug ? `${this.name}_debug` : this.name);
    const hd = c.hiddenSize / c.numHeads;
    const embeds = g.input('inputs_embeds', 'float32', [1, 'seq', c.hiddenSize]);
    const pos = g.input('position_ids', 'int64', [1, 'seq']);
    const pk: Value[] = [],
      pv: Value[] = [];
    for (let i = 0; i < c.numLayers; i++) {
      pk.push(g.input(`past_key_${i}`, 'float32', ['past', c.numKvHeads, hd]));
      pv.push(g.input(`past_value_${i}`, 'float32', ['past', c.numKvHeads, hd]));
    }
    const mask = g.input('past_mask', 'float32', [1, 'past']);
    const rows = g.input('logit_rows', 'int64', ['rows']);
    const io = llamaDecoder(g, new ModuleWeights(this.ckpt, '', this.quant), c, embeds, pos, pk, pv, mask, rows);
    g.output(io.hidden, 'hidden');
    g.output(io.logits, 'logits');
    io.newKeys.forEach((k, i) => g.output(k, `new_key_${i}`));
    io.newValues.forEach((v, i) => g.output(v, `new_value_${i}`));
    if (debug) io.layerOutputs.forEach((x, i) => g.output(x, `layer_${i}`));
    return g;
  }

  sessionPromise(debug = false): Promise<EngineSession> {
    // The arena is on here (off by default for SAM's huge one-off intermediates): fresh allocations cost page
    // faults, and on the 7B prefill everything but MatMulNBits went from 7.1 s to 2.0 s of kernel time with it.
    // Decode is unaffected (median 197 vs 195 ms/token with and without, measured).
    return cachedPromise(this.sessions, debug, () => this.engine.load(this.graph(debug), { memoryArena: true }));
  }

  /**
   * embed_tokens rows for `ids`, widened to float32. Rows are read from the checkpoint file as needed when the
   * tensor is stored contiguously (a 7B table is 262 MB in bf16 and a prompt needs a few hundred rows of it);
   * otherwise the table is read once.
   */
  embedTokens(ids: readonly number[]): Float32Array {
    if (!this.table) {
      const t = this.ckpt.get('model.embed_tokens.weight');
      const rows = t.shape[0]!,
        rowBytes = t.byteLength / rows,
        span = t.span;
      if (span) {
        const file = new RandomAccessFile(span.path);
        this.table = {
          dtype: t.dtype,
          rows,
          row: (id) => file.read(span.offset + id * rowBytes, rowBytes, `embed_tokens row ${id}`),
          close: () => file.close(),
        };
      } else {
        const bytes = t.bytes();
        this.table = { dtype: t.dtype, rows, row: (id) => bytes.subarray(id * rowBytes, (id + 1) * rowBytes), close: () => {} };
      }
    }
    const { dtype, rows, row } = this.table;
    const h = this.config.hiddenSize;
    const out = new Float32Array(ids.length * h);
    ids.forEach((id, i) => {
      if (!Number.isInteger(id) || id < 0 || id >= rows)
        throw new LisaError(`token id ${id} is outside the embedding table (0..${rows - 1})`);
      out.set(toFloat32(dtype, row(id)), i * h);
    });
    return out;
  }

  openSessions(): Promise<EngineSession>[] {
    return [...this.sessions.values()];
  }

  async release(): Promise<void> {
    for (const s of this.sessions.values()) await (await s).release();
    this.sessions.clear();
    this.table?.close();
    this.table = null;
  }
}

/** Parameters in the decoder's linear layers (what quantisation applies to). */
export function llamaLinearParams(c: LlamaConfig): number {
  const hd = c.hiddenSize / c.numHeads;
  const attn = c.hiddenSize * c.hiddenSize * 2 + 2 * c.hiddenSize * c.numKvHeads * hd;
  return c.numLayers * (attn + 3 * c.hiddenSize * c.intermediateSize) + c.vocabSize * c.hiddenSize;
}
