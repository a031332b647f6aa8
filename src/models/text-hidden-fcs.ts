import type { Graph } from '../graph/graph.js';
import type { Value } from '../graph/ir.js';
import type { ModuleWeights } from './module.js';

/**
 * LISA's text_hidden_fcs[0] (model/LISA.py): Linear(H, H) → ReLU → Linear(H, out_dim) → Dropout(0.0), the
 * projection γ from a [SEG] hidden state to SAM's prompt space. `w` is `model.text_hidden_fcs.0`.
 */
export function textHiddenFcs(g: Graph, w: ModuleWeights, hidden: Value): Value {
  return w.linear(g, g.relu(w.linear(g, hidden, '0')), '2');
}
