import { LisaError } from '../errors.js';
import type { LlamaCausalLM } from '../models/llama-causal-lm.js';
import { llmForward, logitsRow, type KvCache, type LlmStep } from './llm.js';

export interface SamplingOptions {
  temperature: number;
  topP: number;
  seed: number;
}

export interface GenerateOptions {
  /** Default 512, as chat.py. */
  maxNewTokens?: number;
  /** Token id forced at a 0-based new-token index (transformers' forced_decoder_ids), e.g. [SEG] for testing. */
  forced?: ReadonlyMap<number, number>;
  /** Absent: greedy (the official setting). */
  sampling?: SamplingOptions | null;
  /** Called with each new token as it is chosen (for streaming). */
  onToken?: (id: number, index: number) => void;
  /** Keep each step's last-position logits (for debugging and the parity fixtures). */
  keepStepLogits?: boolean;
  /** Aborting stops after the current token (Ctrl-C in chat, a client that disconnects). */
  signal?: AbortSignal;
  /**
   * Decides whether `token` (the [SEG]) comes next wherever it is one of the two likeliest tokens, from the hidden
   * state that would produce it: true emits it, false takes the best other token (the default model: a [SEG]
   * exactly when its detector sees the class; pipeline.presenceGate). Elsewhere generation is unchanged.
   */
  segGate?: { token: number; allow: (hidden: Float32Array, tokensSoFar: readonly number[]) => Promise<boolean> };
}

/** Library callers get one clear error for an impossible setting instead of a silent clamp. */
export function checkGenerateOptions(opts: GenerateOptions): void {
  const m = opts.maxNewTokens;
  if (m !== undefined && !(Number.isInteger(m) && m >= 1)) throw new LisaError(`maxNewTokens must be an integer >= 1, got ${m}`);
  const sp = opts.sampling;
  if (!sp) return;
  if (!(Number.isFinite(sp.temperature) && sp.temperature >= 0))
    throw new LisaError(`temperature must be a number >= 0, got ${sp.temperature}`);
  if (!(Number.isFinite(sp.topP) && sp.topP > 0 && sp.topP <= 1)) throw new LisaError(`topP must be in (0, 1], got ${sp.topP}`);
  if (!Number.isInteger(sp.seed)) throw new LisaError(`seed must be an integer, got ${sp.seed}`);
}

export interface Generation {
  tokens: number[];
  /** Final-norm hidden state of the position that produced each new token [n, H]. */
  producerHidden: Float32Array;
  /** Final-norm hidden states of every position run: prompt rows then one row per fed new token. */
  allHidden: Float32Array;
  stepLogits: Float32Array[];
  stopped: 'eos' | 'max_new_tokens' | 'cancelled';
  cache: KvCache;
}

/** Deterministic PRNG (mulberry32) for reproducible sampling. */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Whether `token` is one of the two largest entries of `row`. */
function inTopTwo(row: Float32Array, token: number): boolean {
  const v = row[token]!;
  let above = 0;
  for (let j = 0; j < row.length && above < 2; j++) if (row[j]! > v) above++;
  return above < 2;
}

export function argmax(row: Float32Array): number {
  let best = 0;
  for (let j = 1; j < row.length; j++) if (row[j]! > row[best]!) best = j;
  return best;
}

/** Temperature, then nucleus (top-p) filtering as transformers' TopPLogitsWarper, then a draw. */
function sample(row: Float32Array, s: SamplingOptions, rand: () => number): number {
  const t = Math.max(s.temperature, 1e-6);
  let m = -Infinity;
  for (const v of row) m = Math.max(m, v / t);
  const order = Array.from(row.keys());
  const p = Float64Array.from(row, (v) => Math.exp(v / t - m));
  const z = p.reduce((a, b) => a + b, 0);
  order.sort((a, b) => p[b]! - p[a]!);
  let cum = 0,
    keep = 0;
  while (keep < order.length && (keep === 0 || cum < s.topP * z)) cum += p[order[keep++]!]!;
  let r = rand() * cum;
  for (let i = 0; i < keep; i++) {
    r -= p[order[i]!]!;
    if (r <= 0) return order[i]!;
  }
  return order[keep - 1]!;
}

/**
 * Generation with a KV cache. Greedy by default, which gives the same tokens as the official cache-less loop
 * (it re-runs the whole sequence every step; here each step runs one position). Stops at EOS (kept in the
 * output, as transformers does) or after maxNewTokens.
 */
export async function generate(lm: LlamaCausalLM, prefill: LlmStep, promptLength: number, opts: GenerateOptions = {}): Promise<Generation> {
  const c = lm.config;
  const h = c.hiddenSize,
    v = c.vocabSize;
  const max = opts.maxNewTokens ?? 512;
  checkGenerateOptions(opts);
  const rand = opts.sampling ? mulberry32(opts.sampling.seed) : null;
  const tokens: number[] = [];
  const producer: Float32Array[] = [];
  const hiddenRows: Float32Array[] = [prefill.hidden];
  const stepLogits: Float32Array[] = [];
  let cache = prefill.cache;
  let lastHidden = prefill.hidden.subarray((promptLength - 1) * h, promptLength * h);
  let lastLogits = logitsRow(prefill, promptLength - 1, v);
  let stopped: Generation['stopped'] = 'max_new_tokens';
  for (let i = 0; i < max; i++) {
    if (opts.signal?.aborted) {
      stopped = 'cancelled';
      break;
    }
    if (opts.keepStepLogits) stepLogits.push(new Float32Array(lastLogits));
    const forced = opts.forced?.get(i);
    const pick = (row: Float32Array): number => (rand && opts.sampling ? sample(row, opts.sampling, rand) : argmax(row));
    let id = forced ?? pick(lastLogits);
    const gate = opts.segGate;
    if (forced === undefined && gate && inTopTwo(lastLogits, gate.token)) {
      if (await gate.allow(lastHidden, tokens)) id = gate.token;
      else if (id === gate.token) {
        const row = new Float32Array(lastLogits);
        row[id] = -Infinity;
        id = pick(row);
      }
    }
    tokens.push(id);
    producer.push(new Float32Array(lastHidden));
    opts.onToken?.(id, i);
    if (id === c.eosTokenId) {
      stopped = 'eos';
      break;
    }
    if (i === max - 1) break;
    const step = await llmForward(lm, lm.embedTokens([id]), 1, cache);
    cache = step.cache;
    lastHidden = step.hidden;
    lastLogits = step.logits;
    hiddenRows.push(step.hidden);
  }
  const allHidden = new Float32Array(hiddenRows.reduce((n, r) => n + r.length, 0));
  let o = 0;
  for (const r of hiddenRows) {
    allHidden.set(r, o);
    o += r.length;
  }
  const producerHidden = new Float32Array(producer.length * h);
  producer.forEach((r, i) => producerHidden.set(r, i * h));
  return { tokens, producerHidden, allHidden, stepLogits, stopped, cache };
}
