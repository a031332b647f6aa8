import type { Graph } from '../graph/graph.js';
import type { Value } from '../graph/ir.js';
import { attention, mergeHeads, splitHeads } from '../graph/nn.js';
import type { ClipVisionConfig } from './config.js';
import type { ModuleWeights } from './module.js';

/**
 * HF CLIPVisionModel (the `openai/clip-vit-large-patch14` layout, `vision_model.*`): patch embedding,
 * class token, positions, pre-LayerNorm, pre-norm encoder layers with quick-GELU MLPs. Returns the hidden
 * states tuple as HF does: [embeddings after pre_layrnorm, layer 1 output, …], up to `upToLayer` layers.
 */
export function clipVisionHiddenStates(
  g: Graph,
  w: ModuleWeights,
  cfg: ClipVisionConfig,
  pixelValues: Value,
  upToLayer = cfg.numLayers,
): Value[] {
  const vm = w.sub('vision_model');
  const emb = vm.sub('embeddings');
  const c = cfg.hiddenSize;
  const patches = g.conv(pixelValues, emb.param(g, 'patch_embedding.weight'), null, { strides: [cfg.patchSize, cfg.patchSize] });
  const seq = g.transpose(g.reshape(patches, [0, c, -1]), [0, 2, 1]); // [B, P, C]
  const cls = g.expandTo(g.reshape(emb.param(g, 'class_embedding'), [1, 1, c]), [g.dimOf(pixelValues, 0), 1, c]);
  let x = g.add(g.concat([cls, seq], 1), emb.param(g, 'position_embedding.weight'));
  x = vm.layerNorm(g, x, 'pre_layrnorm', cfg.layerNormEps);
  const states = [x];
  const heads = cfg.numHeads,
    hd = c / heads;
  for (let i = 0; i < upToLayer; i++) {
    const l = vm.sub('encoder.layers').sub(i);
    const h = l.layerNorm(g, x, 'layer_norm1', cfg.layerNormEps);
    // HF scales the queries before the product (q_proj(x) * head_dim^-0.5).
    const q = splitHeads(g, g.mul(l.linear(g, h, 'self_attn.q_proj'), g.scalar(hd ** -0.5)), heads, hd);
    const k = splitHeads(g, l.linear(g, h, 'self_attn.k_proj'), heads, hd);
    const v = splitHeads(g, l.linear(g, h, 'self_attn.v_proj'), heads, hd);
    x = g.add(x, l.linear(g, mergeHeads(g, attention(g, q, k, v, { scale: 1 }), heads, hd), 'self_attn.out_proj'));
    const m = l.layerNorm(g, x, 'layer_norm2', cfg.layerNormEps);
    const act = cfg.hiddenAct === 'quick_gelu' ? g.quickGelu(l.linear(g, m, 'mlp.fc1')) : g.gelu(l.linear(g, m, 'mlp.fc1'));
    x = g.add(x, l.linear(g, act, 'mlp.fc2'));
    states.push(x);
  }
  return states;
}
