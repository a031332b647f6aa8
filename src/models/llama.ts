import type { Graph } from '../graph/graph.js';
import type { Value } from '../graph/ir.js';
import { cacheMask, cachedAttention, rotaryFused } from '../graph/nn.js';
import type { LlamaConfig } from './config.js';
import type { ModuleWeights } from './module.js';

/**
 * rotary cos/sin tables [maxPos, headDim] as HF LLaMA (transformers 4.31) builds them, in float32:
 * inv_freq = 1 / base^(arange(0, d, 2) / d); freqs = t ⊗ inv_freq; emb = cat(freqs, freqs).
 */
export function rotaryTables(headDim: number, maxPos: number, base: number): { cos: Float32Array; sin: Float32Array } {
  const f = Math.fround;
  const half = headDim / 2;
  const invFreq = Array.from({ length: half }, (_, i) => f(1 / f(base ** f((2 * i) / headDim))));
  const cos = new Float32Array(maxPos * headDim),
    sin = new Float32Array(maxPos * headDim);
  for (let t = 0; t < maxPos; t++)
    for (let i = 0; i < headDim; i++) {
      const a = f(t * invFreq[i % half]!);
      cos[t * headDim + i] = Math.cos(a);
      sin[t * headDim + i] = Math.sin(a);
    }
  return { cos, sin };
}

/**
 * Self-attention over this call's queries/keys/values [B, S, heads·hd] (rotary applied; a KV cache or the whole
 * sequence); returns [B, S, heads·hd].
 */
export type SelfAttention = (q: Value, k: Value, v: Value, layer: number) => Value;

export interface LlamaModelIO {
  hidden: Value; // final-norm hidden states [B, S, H]
  /** Each layer's keys (after rotary) and values, [B, S, kvHeads·headDim]. */
  keys: Value[];
  values: Value[];
  layerOutputs: Value[];
}

/** The rotary caches [maxPos, hd/2] for onnxruntime's fused RotaryEmbedding (rotate_half layout). */
function rotaryCaches(g: Graph, cfg: LlamaConfig): { cos: Value; sin: Value } {
  const hd = cfg.hiddenSize / cfg.numHeads;
  // HF's emb = cat(freqs, freqs) repeats the half tables: one fused op instead of slices, a negation, a concat
  // and broadcast mul/adds.
  const tables = rotaryTables(hd, cfg.maxPositionEmbeddings, cfg.ropeTheta);
  const half = (t: Float32Array): Float32Array => {
    const out = new Float32Array(cfg.maxPositionEmbeddings * (hd / 2));
    for (let p = 0; p < cfg.maxPositionEmbeddings; p++) out.set(t.subarray(p * hd, p * hd + hd / 2), p * (hd / 2));
    return out;
  };
  return {
    cos: g.constant('float32', [cfg.maxPositionEmbeddings, hd / 2], half(tables.cos), 'rotary_cos'),
    sin: g.constant('float32', [cfg.maxPositionEmbeddings, hd / 2], half(tables.sin), 'rotary_sin'),
  };
}

/**
 * HF LlamaModel (transformers 4.31) over `inputsEmbeds` [B, S, H] at `positionIds` [B, S] int64: decoder layers
 * (RMSNorm, rotary q/k, `attend`, SwiGLU MLP) and the final norm. Inference attends over a KV cache
 * (llamaDecoder), training over the whole padded batch (train/model-forward.ts): one layer definition for both.
 */
export function llamaModel(
  g: Graph,
  w: ModuleWeights,
  cfg: LlamaConfig,
  inputsEmbeds: Value,
  positionIds: Value,
  attend: SelfAttention,
): LlamaModelIO {
  const heads = cfg.numHeads,
    kvHeads = cfg.numKvHeads;
  const rot = rotaryCaches(g, cfg);
  const model = w.sub('model');
  let x = inputsEmbeds;
  const keys: Value[] = [],
    values: Value[] = [],
    layerOutputs: Value[] = [];
  for (let i = 0; i < cfg.numLayers; i++) {
    const l = model.sub('layers').sub(i);
    const h = g.rmsNorm(x, l.param(g, 'input_layernorm.weight'), cfg.rmsNormEps);
    const q = rotaryFused(g, l.linear(g, h, 'self_attn.q_proj'), positionIds, rot.cos, rot.sin, heads);
    const k = rotaryFused(g, l.linear(g, h, 'self_attn.k_proj'), positionIds, rot.cos, rot.sin, kvHeads);
    const v = l.linear(g, h, 'self_attn.v_proj');
    keys.push(k);
    values.push(v);
    x = g.add(x, l.linear(g, attend(q, k, v, i), 'self_attn.o_proj'));
    const m = g.rmsNorm(x, l.param(g, 'post_attention_layernorm.weight'), cfg.rmsNormEps);
    x = g.add(x, l.linear(g, g.mul(g.silu(l.linear(g, m, 'mlp.gate_proj')), l.linear(g, m, 'mlp.up_proj')), 'mlp.down_proj'));
    layerOutputs.push(x);
  }
  return { hidden: g.rmsNorm(x, model.param(g, 'norm.weight'), cfg.rmsNormEps), keys, values, layerOutputs };
}

/** lm_head on hidden rows [.., H] → logits [.., V]; tied to embed_tokens when the checkpoint has no head. */
export function lmHead(g: Graph, w: ModuleWeights, cfg: LlamaConfig, rows: Value): Value {
  // The head stays at 8 bits when the body is 4-bit: its errors land directly on the logits.
  const head = w.quant ? w.withQuant({ ...w.quant, bits: 8 }) : w;
  return w.has('lm_head.weight') || !cfg.tieWordEmbeddings
    ? head.linear(g, rows, 'lm_head')
    : head.sub('model').linear(g, rows, 'embed_tokens');
}

export interface LlamaGraphIO {
  hidden: Value; // final-norm hidden states [B, S, H]
  logits: Value; // [B, R, V] for the R positions in `logitRows`
  /** This call's keys (after rotary) and values per layer, [B, S, kvHeads·headDim]: the cache grows by these. */
  newKeys: Value[];
  newValues: Value[];
  layerOutputs: Value[];
}

/**
 * LlamaModel + lm_head over `inputsEmbeds` [1, S, H] with a KV cache: `pastKeys[i]`/`pastValues[i]` are the
 * P cached positions [P, kvHeads, headDim], seq-major, and `pastMask` [1, P] is 0 over them (an empty cache: one
 * row, masked with F32_MIN; see cachedAttention); positions are P..P+S-1 given as
 * `positionIds` [1, S] int64. Only the S new key/value rows are outputs: onnxruntime-node copies every output
 * (pre-allocated ones too), so the cache lives with the caller, who appends them and feeds views of its
 * buffers back as inputs (zero-copy). The reference (LISA's generate) runs without a cache; with one, every
 * position's values are the same.
 */
export function llamaDecoder(
  g: Graph,
  w: ModuleWeights,
  cfg: LlamaConfig,
  inputsEmbeds: Value,
  positionIds: Value,
  pastKeys: Value[],
  pastValues: Value[],
  pastMask: Value,
  logitRows: Value,
): LlamaGraphIO {
  const mask = cacheMask(g, pastMask, inputsEmbeds); // the same for every layer: built once
  const io = llamaModel(g, w, cfg, inputsEmbeds, positionIds, (q, k, v, i) =>
    cachedAttention(g, q, k, v, pastKeys[i]!, pastValues[i]!, mask),
  );
  // lm_head only on the rows asked for: generation needs the last one (a 7B prompt's 320 rows of logits are
  // 84 GFLOP and a 41 MB output), teacher forcing and dumps all of them.
  const logits = lmHead(g, w, cfg, g.gather(io.hidden, logitRows, 1));
  return { hidden: io.hidden, logits, newKeys: io.keys, newValues: io.values, layerOutputs: io.layerOutputs };
}
