import { LisaError } from '../errors.js';
import type { Graph } from '../graph/graph.js';
import type { Value } from '../graph/ir.js';
import { linear } from '../graph/nn.js';
import { quantizedLinear, type QuantSpec } from '../graph/quantize.js';
import { tensorWeight, transposedWeight } from '../graph/weights.js';
import type { Checkpoint } from '../io/checkpoint.js';
import type { TensorRef } from '../io/tensor-ref.js';

/**
 * How a training graph sees its parameters: a trainable tensor is a graph input (fed from the trainer's
 * buffers each step) instead of an initializer, and a LoRA adapter adds its low-rank branch to a Linear.
 * Inference graphs have none (every weight an initializer).
 */
export interface TrainableParams {
  /** The graph input standing for checkpoint tensor `name` when it is trained, else null (frozen). */
  param(g: Graph, name: string, shape: readonly number[]): Value | null;
  /** peft's LoRA on the Linear `module` (e.g. model.layers.0.self_attn.q_proj): B(A(dropout(x)))·scaling, or null. */
  lora(g: Graph, module: string, x: Value, inFeatures: number, outFeatures: number): Value | null;
}

/**
 * A checkpoint seen from one module, like a PyTorch submodule's state dict: `w.sub('mlp').linear(g, x,
 * 'fc1')` reads `<prefix>.mlp.fc1.weight` / `.bias`. Model files use it so they read like the module they
 * mirror. Weights enter graphs as float32 (bf16 checkpoints are widened once, into the cache).
 */
export class ModuleWeights {
  /** `quant`: Linear layers below this module run as MatMulNBits with these settings (null: float32). */
  constructor(
    readonly ckpt: Checkpoint,
    readonly prefix: string,
    readonly quant: QuantSpec | null = null,
    readonly train: TrainableParams | null = null,
  ) {}

  sub(name: string | number): ModuleWeights {
    return new ModuleWeights(this.ckpt, this.prefix ? `${this.prefix}.${name}` : String(name), this.quant, this.train);
  }
  withQuant(quant: QuantSpec | null): ModuleWeights {
    return new ModuleWeights(this.ckpt, this.prefix, quant, this.train);
  }
  withTrain(train: TrainableParams | null): ModuleWeights {
    return new ModuleWeights(this.ckpt, this.prefix, this.quant, train);
  }
  name(leaf: string): string {
    return this.prefix ? `${this.prefix}.${leaf}` : leaf;
  }
  has(leaf: string): boolean {
    return this.ckpt.tensors.has(this.name(leaf));
  }
  ref(leaf: string): TensorRef {
    const n = this.name(leaf);
    const t = this.ckpt.tensors.get(n);
    if (!t) throw new LisaError(`${this.ckpt.path}: checkpoint has no tensor ${n}`);
    return t;
  }
  shape(leaf: string): readonly number[] {
    return this.ref(leaf).shape;
  }
  /** The tensor as a float32 graph weight (a graph input when it is trained). */
  param(g: Graph, leaf: string): Value {
    const t = this.ref(leaf);
    return this.train?.param(g, t.name, t.shape) ?? tensorWeight(g, t, { dtype: 'float32' });
  }
  /**
   * nn.Linear: x @ weight.T + bias (bias when the checkpoint has one); block-quantised when `quant` is set and
   * the weight is frozen; plus peft's LoRA branch when the training set puts an adapter here.
   */
  linear(g: Graph, x: Value, leaf: string): Value {
    const m = this.sub(leaf);
    const bias = m.has('bias') ? m.param(g, 'bias') : null;
    const ref = m.ref('weight');
    const trained = this.train?.param(g, ref.name, ref.shape) ?? null;
    let y: Value;
    if (trained) y = g.matmul(x, g.transpose(trained, [1, 0]));
    else if (this.quant) y = quantizedLinear(g, x, ref, this.quant);
    else y = linear(g, x, transposedWeight(g, ref), null);
    if (bias) y = g.add(y, bias);
    const [out, inF] = ref.shape as [number, number];
    const lora = this.train?.lora(g, m.prefix, x, inF, out) ?? null;
    return lora ? g.add(y, lora) : y;
  }
  /** nn.LayerNorm over the last dim. */
  layerNorm(g: Graph, x: Value, leaf: string, eps: number): Value {
    const m = this.sub(leaf);
    return g.layerNorm(x, m.param(g, 'weight'), m.param(g, 'bias'), eps);
  }
}
