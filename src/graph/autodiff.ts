import { LisaError } from '../errors.js';
import type { Graph } from './graph.js';
import type { Value } from './ir.js';
import { getSchema } from './ops.js';
import './gradients.js';

const DIFFERENTIABLE = new Set(['float32', 'float64', 'float16']);

/**
 * Reverse-mode autodiff over the graph IR: appends to `g` the nodes computing d(loss)/d(v) for every v in
 * `wrt` (graph inputs or intermediate values), walking the forward nodes backwards with each op's rule
 * (graph/gradients.ts). Only nodes on a path from `wrt` to `loss` are differentiated, and rules skip the
 * inputs that need no gradient (frozen weights). Gradients reaching a value from several uses are summed.
 * Returns one gradient per `wrt` entry, or null where the loss does not depend on it (autograd's None).
 */
export function backward(g: Graph, loss: Value, wrt: readonly Value[]): (Value | null)[] {
  if (loss.shape.length !== 0) throw new Error(`backward: the loss must be a scalar, got shape ${JSON.stringify(loss.shape)}`);
  const nodes = [...g.nodes];
  // Forward: which values depend on a wrt value (float ones only: indices and shapes carry no gradient).
  const depends = new Set<number>(wrt.map((v) => v.id));
  for (const n of nodes) {
    if (!n.inputs.some((x) => x && depends.has(x.id))) continue;
    for (const o of n.outputs) if (DIFFERENTIABLE.has(o.dtype)) depends.add(o.id);
  }
  if (!depends.has(loss.id)) return wrt.map(() => null);
  const grads = new Map<number, Value>();
  grads.set(loss.id, g.scalar(1, loss.dtype));
  for (let i = nodes.length - 1; i >= 0; i--) {
    const n = nodes[i]!;
    const outGrads = n.outputs.map((o) => grads.get(o.id) ?? null);
    if (outGrads.every((x) => x === null)) continue;
    const wanted = n.inputs.map((x) => x !== null && depends.has(x.id));
    if (!wanted.some(Boolean)) continue;
    const r = getSchema(n.domain, n.op).grad;
    if (!r) throw new LisaError(`training: op ${n.domain || 'ai.onnx'}.${n.op} has no gradient rule (src/graph/gradients.ts)`);
    const inGrads = r(g, n, outGrads, wanted);
    n.inputs.forEach((x, k) => {
      const gx = inGrads[k];
      if (!x || !wanted[k] || !gx) return;
      const prev = grads.get(x.id);
      grads.set(x.id, prev ? g.add(prev, gx) : gx);
    });
  }
  return wrt.map((v) => grads.get(v.id) ?? null);
}
