import type { Graph } from '../../graph/graph.js';
import type { Value } from '../../graph/ir.js';
import { attention, mergeHeads, splitHeads } from '../../graph/nn.js';
import type { ModuleWeights } from '../module.js';

/** SAM's transformer Attention: projections to an internal width (downsampled for cross-attention), heads, out_proj. */
function samAttention(g: Graph, w: ModuleWeights, q: Value, k: Value, v: Value, numHeads: number): Value {
  const internal = w.shape('q_proj.weight')[0]!;
  const hd = internal / numHeads;
  const qh = splitHeads(g, w.linear(g, q, 'q_proj'), numHeads, hd);
  const kh = splitHeads(g, w.linear(g, k, 'k_proj'), numHeads, hd);
  const vh = splitHeads(g, w.linear(g, v, 'v_proj'), numHeads, hd);
  return w.linear(g, mergeHeads(g, attention(g, qh, kh, vh), numHeads, hd), 'out_proj');
}

/**
 * TwoWayTransformer: tokens [N, T, C] attend to the image [N, HW, C] and back, `depth` blocks then a final
 * token-to-image attention. Returns the processed tokens and image keys.
 */
export function twoWayTransformer(g: Graph, w: ModuleWeights, imageEmbedding: Value, imagePe: Value, pointEmbedding: Value, numHeads = 8): { queries: Value; keys: Value } {
  const c = imageEmbedding.shape[1] as number;
  const flat = (x: Value): Value => g.transpose(g.reshape(x, [0, c, -1]), [0, 2, 1]);
  let keys = flat(imageEmbedding);
  const keyPe = flat(imagePe);
  let queries = pointEmbedding;
  let depth = 0;
  while (w.has(`layers.${depth}.norm1.weight`)) depth++;
  for (let i = 0; i < depth; i++) {
    const l = w.sub('layers').sub(i);
    if (i === 0) queries = samAttention(g, l.sub('self_attn'), queries, queries, queries, numHeads); // skip_first_layer_pe
    else {
      const q = g.add(queries, pointEmbedding);
      queries = g.add(queries, samAttention(g, l.sub('self_attn'), q, q, queries, numHeads));
    }
    queries = l.layerNorm(g, queries, 'norm1', 1e-5);
    let q = g.add(queries, pointEmbedding), k = g.add(keys, keyPe);
    queries = l.layerNorm(g, g.add(queries, samAttention(g, l.sub('cross_attn_token_to_image'), q, k, keys, numHeads)), 'norm2', 1e-5);
    queries = l.layerNorm(g, g.add(queries, l.linear(g, g.relu(l.linear(g, queries, 'mlp.lin1')), 'mlp.lin2')), 'norm3', 1e-5);
    q = g.add(queries, pointEmbedding); k = g.add(keys, keyPe);
    keys = l.layerNorm(g, g.add(keys, samAttention(g, l.sub('cross_attn_image_to_token'), k, q, queries, numHeads)), 'norm4', 1e-5);
  }
  const q = g.add(queries, pointEmbedding), k = g.add(keys, keyPe);
  queries = w.layerNorm(g, g.add(queries, samAttention(g, w.sub('final_attn_token_to_image'), q, k, keys, numHeads)), 'norm_final_attn', 1e-5);
  return { queries, keys };
}
