import { backward } from '../graph/autodiff.js';
import type { Value } from '../graph/ir.js';
import { cachedPromise, type EngineSession } from '../graph/session.js';
import { f32, type HostTensor } from '../graph/tensor.js';
import type { LisaModel } from '../models/lisa.js';
import { imageRows as clipImageRows } from '../inference/pipeline.js';
import type { LossWeights } from './losses.js';
import { buildTrainForward, prepareBatch, type PrepareOptions, type TrainBatch } from './model-forward.js';
import type { TrainingSet } from './params.js';
import { dropoutMask } from './dropout.js';

export const EMBED_TOKENS = 'model.embed_tokens.weight';
const LOSS_NAMES = ['loss', 'ce_loss', 'mask_bce_loss', 'mask_dice_loss', 'mask_loss', 'class_loss'] as const;
export type LossName = (typeof LOSS_NAMES)[number];

export interface Gradients {
  losses: Record<LossName, number>;
  /** d loss / d param for every trained tensor; null where the loss does not reach it (autograd's None). */
  grads: Map<string, Float32Array | null>;
  /** Intermediates for checks (pred_embeddings, final_hidden, low_res_masks) when asked for. */
  extras: Record<string, HostTensor>;
}

export interface GradientOptions {
  lossWeights?: LossWeights;
  /** Also fetch pred_embeddings, final_hidden and low_res_masks. */
  extras?: boolean;
  /** Seed of this micro-batch's LoRA dropout masks (train_ds.py's torch RNG is not reproducible here; ours is seeded). */
  dropoutSeed?: number;
  /** false: the forward and losses only (no gradients; for measuring the forward alone). */
  backward?: boolean;
  /** Masks, class loss and shape buckets (default: LISA's step, exact shapes). */
  prepare?: PrepareOptions;
}

/** Compiled step graphs kept at once (one per batch shape; the oldest is released). */
const MAX_SESSIONS = 48;

/**
 * The forward + backward of one micro-batch as one onnxruntime session (built once per batch shape and cached):
 * feeds the trained tensors, fetches the losses and the gradients of every trained tensor. The embedding
 * table's gradient comes back for the batch's rows only and is scattered here (a 7B table is 131 M values).
 */
export class GradientEngine {
  private readonly sessions = new Map<string, Promise<{ session: EngineSession; params: string[] }>>();

  constructor(
    readonly model: LisaModel,
    readonly set: TrainingSet,
  ) {}

  private session(
    signature: string,
    build: () => { graphParams: string[]; make: () => Promise<EngineSession> },
  ): Promise<{ session: EngineSession; params: string[] }> {
    return cachedPromise(this.sessions, signature, () => {
      const { graphParams, make } = build();
      return make().then((session) => ({ session, params: graphParams }));
    });
  }

  async compute(batch: TrainBatch, opts: GradientOptions = {}): Promise<Gradients> {
    const rows = clipImageRows(this.model);
    const prep = prepareBatch(this.model, batch, rows, opts.prepare);
    const withBackward = opts.backward !== false;
    const key = `${prep.signature}|${this.set.dropoutActive}|${opts.extras === true}|${withBackward}`;
    while (this.sessions.size >= MAX_SESSIONS && !this.sessions.has(key)) {
      const [oldest, s] = this.sessions.entries().next().value!;
      this.sessions.delete(oldest);
      await (await s).session.release();
    }
    const { session, params } = await this.session(key, () => {
      const fwd = buildTrainForward(this.model, this.set, prep.structure, rows, opts.lossWeights);
      const g = fwd.graph;
      for (const n of LOSS_NAMES) g.output(fwd.losses[n], n);
      const paramInputs = g.inputs.filter((v) => v.name.startsWith('param:'));
      const wrt: Value[] = [...paramInputs];
      const embedTrained = this.set.params.has(EMBED_TOKENS);
      if (embedTrained) wrt.push(fwd.embedRows);
      const grads = withBackward ? backward(g, fwd.losses.loss, wrt) : wrt.map(() => null);
      const graphParams: string[] = [];
      paramInputs.forEach((v, i) => {
        if (grads[i]) {
          g.output(grads[i]!, `grad:${v.name.slice('param:'.length)}`);
          graphParams.push(v.name.slice('param:'.length));
        }
      });
      if (embedTrained && grads[wrt.length - 1]) g.output(grads[wrt.length - 1]!, 'grad:embed_rows');
      if (opts.extras) {
        g.output(fwd.predEmbeddings, 'pred_embeddings');
        g.output(fwd.hidden, 'final_hidden');
        g.output(fwd.lowResMasks, 'low_res_masks');
        fwd.predMasks.forEach((v, i) => g.output(v, `pred_masks_${i}`));
      }
      // A quantised base is kept unpacked when gradients flow through it: its codes are read by the backward's
      // dequantisation anyway, and a prepacked copy beside them would double the base's memory (4.9 GB at 7B).
      const prepack = !(withBackward && this.model.llm.quant);
      return { graphParams, make: () => this.model.engine.load(g, { prepack }) };
    });
    const feeds: Record<string, HostTensor> = { ...prep.feeds };
    feeds.embed_rows = f32([prep.tokenIds.length, this.model.config.llama.hiddenSize], this.embedRows(prep.tokenIds));
    for (const v of session.inputs) {
      if (v.name.startsWith('param:')) {
        const p = this.set.params.get(v.name.slice('param:'.length))!;
        feeds[v.name] = f32(p.shape, p.value);
      } else if (v.name.startsWith('lora_dropout:')) {
        feeds[v.name] = f32(
          v.shape as number[],
          dropoutMask(v.shape as number[], this.set.spec.lora!.dropout, opts.dropoutSeed ?? 0, v.name),
        );
      }
    }
    const out = await session.run(feeds);
    const losses = Object.fromEntries(LOSS_NAMES.map((n) => [n, Number(out[n]!.data[0])])) as Record<LossName, number>;
    const grads = new Map<string, Float32Array | null>();
    for (const p of this.set.list()) grads.set(p.name, null);
    for (const name of params) grads.set(name, out[`grad:${name}`]!.data as Float32Array);
    const rowsGrad = out['grad:embed_rows'];
    if (rowsGrad) grads.set(EMBED_TOKENS, this.scatterEmbed(prep.tokenIds, rowsGrad.data as Float32Array, grads.get(EMBED_TOKENS) ?? null));
    const extras: Record<string, HostTensor> = {};
    for (const [n, t] of Object.entries(out)) if (!n.startsWith('grad:') && !(LOSS_NAMES as readonly string[]).includes(n)) extras[n] = t;
    return { losses, grads, extras };
  }

  /** embed_tokens rows for the batch: the trained table's current values, or the checkpoint's when frozen. */
  private embedRows(ids: readonly number[]): Float32Array {
    const p = this.set.params.get(EMBED_TOKENS);
    if (!p) return this.model.embedTokens(ids);
    const h = p.shape[1]!,
      out = new Float32Array(ids.length * h);
    ids.forEach((id, i) => out.set(p.value.subarray(id * h, (id + 1) * h), i * h));
    return out;
  }

  private scatterEmbed(ids: readonly number[], rows: Float32Array, dense: Float32Array | null): Float32Array {
    const p = this.set.params.get(EMBED_TOKENS)!;
    const h = p.shape[1]!,
      out = dense ?? new Float32Array(p.value.length);
    ids.forEach((id, i) => {
      for (let j = 0; j < h; j++) out[id * h + j]! += rows[i * h + j]!;
    });
    return out;
  }

  async release(): Promise<void> {
    for (const s of this.sessions.values()) await (await s).session.release();
    this.sessions.clear();
  }
}
