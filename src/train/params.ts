import { LisaError } from '../errors.js';
import type { Graph } from '../graph/graph.js';
import type { Value } from '../graph/ir.js';
import type { Checkpoint } from '../io/checkpoint.js';
import type { TrainableParams } from '../models/module.js';

/**
 * What is trained (train_ds.py:176-228): LoRA (peft 0.4.0) on every Linear whose name contains a target
 * (q_proj, v_proj) outside the vision modules, plus every checkpoint tensor whose name contains one of
 * `trainable` in full. Everything else is frozen and stays an initializer of the graph.
 */
export interface TrainSpec {
  lora: { r: number; alpha: number; dropout: number; targets: readonly string[] } | null;
  trainable: readonly string[];
}

export const LISA_TRAIN_SPEC: TrainSpec = {
  lora: { r: 8, alpha: 16, dropout: 0.05, targets: ['q_proj', 'v_proj'] },
  trainable: ['lm_head', 'embed_tokens', 'mask_decoder', 'text_hidden_fcs'],
};

/** find_linear_layers's exclusions: LoRA never goes into these. */
const LORA_EXCLUDED = ['visual_model', 'vision_tower', 'mm_projector', 'text_hidden_fcs'];

/** One trained tensor: its name (peft's short name for LoRA), shape and current value. */
export interface Param {
  name: string;
  shape: number[];
  value: Float32Array;
}

/** The graph input name of a trained tensor. */
export const paramInput = (name: string): string => `param:${name}`;
export const dropoutInput = (module: string): string => `lora_dropout:${module}`;

/**
 * The trainable tensors of one model and their current values (the trainer owns them; every step feeds them
 * to the graph as inputs). Implements the models' TrainableParams hook.
 */
export class TrainingSet implements TrainableParams {
  readonly params = new Map<string, Param>();
  /** LoRA modules in checkpoint order, e.g. model.layers.0.self_attn.q_proj. */
  readonly loraModules: string[] = [];
  /** Whether graphs built now take LoRA dropout masks (training) or not (evaluation, or dropout 0). */
  dropoutActive = true;
  private readonly inputs = new WeakMap<Graph, Map<string, Value>>();

  constructor(
    readonly ckpt: Checkpoint,
    readonly spec: TrainSpec,
  ) {
    for (const [name, t] of ckpt.tensors) {
      if (spec.trainable.some((s) => name.includes(s))) this.params.set(name, { name, shape: [...t.shape], value: t.float32() });
    }
    if (spec.lora) {
      const { r, targets } = spec.lora;
      if (!Number.isInteger(r) || r < 1) throw new LisaError(`LoRA rank must be a positive integer, got ${r}`);
      for (const [name, t] of ckpt.tensors) {
        if (!name.endsWith('.weight') || t.shape.length !== 2) continue;
        const module = name.slice(0, -'.weight'.length);
        if (!targets.some((s) => module.includes(s)) || LORA_EXCLUDED.some((s) => module.includes(s))) continue;
        if (this.params.has(name)) continue; // trained in full already
        const [out, inF] = t.shape as [number, number];
        this.loraModules.push(module);
        this.params.set(`${module}.lora_A.default.weight`, {
          name: `${module}.lora_A.default.weight`,
          shape: [r, inF],
          value: new Float32Array(r * inF),
        });
        this.params.set(`${module}.lora_B.default.weight`, {
          name: `${module}.lora_B.default.weight`,
          shape: [out, r],
          value: new Float32Array(out * r),
        });
      }
    }
  }

  get scaling(): number {
    return this.spec.lora ? this.spec.lora.alpha / this.spec.lora.r : 0;
  }

  private input(g: Graph, name: string, shape: readonly number[]): Value {
    let m = this.inputs.get(g);
    if (!m) {
      m = new Map();
      this.inputs.set(g, m);
    }
    let v = m.get(name);
    if (!v) {
      v = g.input(name, 'float32', shape);
      m.set(name, v);
    }
    return v;
  }

  param(g: Graph, name: string, shape: readonly number[]): Value | null {
    const p = this.params.get(name);
    if (!p || name.includes('.lora_')) return null;
    if (p.shape.length !== shape.length || p.shape.some((d, i) => d !== shape[i]))
      throw new LisaError(
        `training: ${name} is ${JSON.stringify(p.shape)} in the training set but ${JSON.stringify(shape)} in the checkpoint`,
      );
    return this.input(g, paramInput(name), shape);
  }

  lora(g: Graph, module: string, x: Value, inFeatures: number, outFeatures: number): Value | null {
    const a = this.params.get(`${module}.lora_A.default.weight`),
      b = this.params.get(`${module}.lora_B.default.weight`);
    if (!a || !b || !this.spec.lora) return null;
    if (a.shape[1] !== inFeatures || b.shape[0] !== outFeatures)
      throw new LisaError(`training: LoRA on ${module} does not fit its ${outFeatures}×${inFeatures} weight`);
    let xd = x;
    // nn.Dropout(p) in train mode: a seeded keep-mask scaled by 1/(1-p), fed per step (see train/dropout.ts).
    if (this.dropoutActive && this.spec.lora.dropout > 0) xd = g.mul(x, this.input(g, dropoutInput(module), x.shape as number[]));
    const ab = g.matmul(
      g.matmul(xd, g.transpose(this.input(g, paramInput(a.name), a.shape), [1, 0])),
      g.transpose(this.input(g, paramInput(b.name), b.shape), [1, 0]),
    );
    return g.mul(ab, g.scalar(this.scaling));
  }

  /** Trained tensors in a stable order (checkpoint order, then LoRA A/B per module). */
  list(): Param[] {
    return [...this.params.values()];
  }
  get numel(): number {
    return this.list().reduce((n, p) => n + p.value.length, 0);
  }
}
