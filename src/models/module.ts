import { LisaError } from '../errors.js';
import type { Graph } from '../graph/graph.js';
import type { Value } from '../graph/ir.js';
import { linear } from '../graph/nn.js';
import { quantizedLinear, type QuantSpec } from '../graph/quantize.js';
import { tensorWeight, transposedWeight } from '../graph/weights.js';
import type { Checkpoint } from '../io/checkpoint.js';
import type { TensorRef } from '../io/tensor-ref.js';

/**
 * A checkpoint seen from one module, like a PyTorch submodule's state dict: `w.sub('mlp').linear(g, x,
 * 'fc1')` reads `<prefix>.mlp.fc1.weight` / `.bias`. Model files use it so they read like the module they
 * mirror. Weights enter graphs as float32 (bf16 checkpoints are widened once, into the cache).
 */
export class ModuleWeights {
  /** `quant`: Linear layers below this module run as MatMulNBits with these settings (null: float32). */
  constructor(readonly ckpt: Checkpoint, readonly prefix: string, readonly quant: QuantSpec | null = null) {}

  sub(name: string | number): ModuleWeights {
    return new ModuleWeights(this.ckpt, this.prefix ? `${this.prefix}.${name}` : String(name), this.quant);
  }
  withQuant(quant: QuantSpec | null): ModuleWeights {
    return new ModuleWeights(this.ckpt, this.prefix, quant);
  }
  name(leaf: string): string { return this.prefix ? `${this.prefix}.${leaf}` : leaf; }
  has(leaf: string): boolean { return this.ckpt.tensors.has(this.name(leaf)); }
  ref(leaf: string): TensorRef {
    const n = this.name(leaf);
    const t = this.ckpt.tensors.get(n);
    if (!t) throw new LisaError(`${this.ckpt.path}: checkpoint has no tensor ${n}`);
    return t;
  }
  shape(leaf: string): readonly number[] { return this.ref(leaf).shape; }
  /** The tensor as a float32 graph weight. */
  param(g: Graph, leaf: string): Value { return tensorWeight(g, this.ref(leaf), { dtype: 'float32' }); }
  /** nn.Linear: x @ weight.T + bias (bias when the checkpoint has one); block-quantised when `quant` is set. */
  linear(g: Graph, x: Value, leaf: string): Value {
    const m = this.sub(leaf);
    const bias = m.has('bias') ? m.param(g, 'bias') : null;
    if (this.quant) {
      const y = quantizedLinear(g, x, m.ref('weight'), this.quant);
      return bias ? g.add(y, bias) : y;
    }
    return linear(g, x, transposedWeight(g, m.ref('weight')), bias);
  }
  /** nn.LayerNorm over the last dim. */
  layerNorm(g: Graph, x: Value, leaf: string, eps: number): Value {
    const m = this.sub(leaf);
    return g.layerNorm(x, m.param(g, 'weight'), m.param(g, 'bias'), eps);
  }
}
