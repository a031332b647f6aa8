import type { Graph } from '../src/graph/graph.js';
import type { Node } from '../src/graph/ir.js';

const prod = (xs: readonly (number | string)[]): number | null =>
  xs.reduce<number | null>((p, d) => (p !== null && typeof d === 'number' ? p * d : null), 1);

/** Multiply-add FLOPs (2 per MAC) of one node's matrix products, or 0 when it has none or a shape is not static. */
function nodeFlops(n: Node): number {
  const a = n.inputs[0],
    b = n.inputs[1],
    y = n.outputs[0]!;
  if (!a || !b) return 0;
  if (n.op === 'MatMul' || n.op === 'MatMulNBits') {
    const k = a.shape[a.shape.length - 1];
    const out = prod(y.shape);
    return typeof k === 'number' && out !== null ? 2 * out * k : 0;
  }
  if (n.op === 'Conv' || n.op === 'ConvTranspose') {
    const w = prod(b.shape);
    const spatial = n.op === 'Conv' ? prod(y.shape.slice(2)) : prod(a.shape.slice(2));
    const batch = typeof a.shape[0] === 'number' ? a.shape[0] : null;
    return w !== null && spatial !== null && batch !== null ? 2 * w * spatial * batch : 0;
  }
  return 0;
}

/** The matrix-product FLOPs of a graph's nodes (those with static shapes), e.g. a forward pass before autodiff. */
export function graphFlops(g: Graph): number {
  return g.nodes.reduce((s, n) => s + nodeFlops(n), 0);
}
