import type { Graph } from '../graph/graph.js';
import type { Value } from '../graph/ir.js';
import type { ModuleWeights } from './module.js';

/**
 * LLaVA's mm_projector as LISA's released checkpoints have it (`mm_projector_type` linear): one Linear from the CLIP
 * width to the LLM's. `w` is `model`; `features` are the selected CLIP layer's patch rows [.., mm_hidden_size].
 */
export function mmProjector(g: Graph, w: ModuleWeights, features: Value): Value {
  return w.linear(g, features, 'mm_projector');
}
