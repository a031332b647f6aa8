import type { Graph } from '../../graph/graph.js';
import type { Value } from '../../graph/ir.js';
import type { ModuleWeights } from '../module.js';
import { convTransposePatches } from '../../graph/nn.js';
import { twoWayTransformer } from './two-way-transformer.js';

/** MaskDecoder's MLP: Linear layers with ReLU between them. */
function mlp(g: Graph, w: ModuleWeights, x: Value): Value {
  let n = 0;
  while (w.has(`layers.${n}.weight`)) n++;
  for (let i = 0; i < n; i++) {
    x = w.linear(g, x, `layers.${i}`);
    if (i < n - 1) x = g.relu(x);
  }
  return x;
}

/**
 * SAM's MaskDecoder.predict_masks for N prompts on one image: tokens = [iou_token, mask_tokens×4, sparse…];
 * src = image embedding + dense prompt (no_mask_embed); two-way transformer; upscale ×4; hypernetwork MLPs
 * per mask token. Returns all 4 masks [N, 4, 256, 256] and IoU predictions [N, 4]; callers slice
 * (multimask_output=False → mask 0, as LISA; True → masks 1..3).
 */
export function samMaskDecoder(
  g: Graph,
  w: ModuleWeights,
  imageEmbeddings: Value,
  imagePe: Value,
  sparse: Value,
  noMaskEmbed: Value,
): { masks: Value; iou: Value } {
  const [, c, h, wd] = imageEmbeddings.shape as number[];
  // The prompt count: static when the caller's graph knows it (training), a run-time size otherwise.
  const n = typeof sparse.shape[0] === 'number' ? sparse.shape[0] : g.dimOf(sparse, 0);
  const numMaskTokens = w.shape('mask_tokens.weight')[0]!;
  const outputTokens = g.concat([w.param(g, 'iou_token.weight'), w.param(g, 'mask_tokens.weight')], 0); // [1+M, C]
  const tokens = g.concat([g.expandTo(g.unsqueeze(outputTokens, [0]), [n, 1 + numMaskTokens, c!]), sparse], 1);
  const dense = g.reshape(noMaskEmbed, [1, c!, 1, 1]);
  const src = g.expandTo(g.add(imageEmbeddings, dense), [n, c!, h!, wd!]);
  const pos = g.expandTo(imagePe, [n, c!, h!, wd!]);
  const { queries, keys } = twoWayTransformer(g, w.sub('transformer'), src, pos, tokens);
  const iouTokenOut = g.squeeze(g.slice(queries, [0], [1], [1]), [1]);
  // output_upscaling: ConvTranspose2d(k=2, s=2) → LayerNorm2d → GELU → ConvTranspose2d(k=2, s=2) → GELU, run on
  // pixel rows, channels last (the transformer's keys [N, hw, C] already are): each transpose convolution is one
  // GEMM, LayerNorm2d a LayerNormalization over the last axis. Rows end in (i, j, a, b, a2, b2) order; the masks,
  // the smallest tensor, are put in raster order at the end.
  const up = w.sub('output_upscaling');
  let u = convTransposePatches(g, keys, up.param(g, '0.weight'), up.param(g, '0.bias'));
  u = g.gelu(up.layerNorm(g, u, '1', 1e-6));
  u = g.gelu(convTransposePatches(g, u, up.param(g, '3.weight'), up.param(g, '3.bias'))); // [N, 16·hw, uc]
  const hyper: Value[] = [];
  for (let i = 0; i < numMaskTokens; i++) {
    const tok = g.slice(queries, [1 + i], [2 + i], [1]); // [N, 1, C]
    hyper.push(mlp(g, w.sub('output_hypernetworks_mlps').sub(i), tok));
  }
  const hyperIn = g.concat(hyper, 1); // [N, M, uc]
  const rows = g.reshape(g.matmul(hyperIn, g.transpose(u, [0, 2, 1])), [-1, numMaskTokens, h!, wd!, 2, 2, 2, 2]);
  const masks = g.reshape(g.transpose(rows, [0, 1, 2, 4, 6, 3, 5, 7]), [-1, numMaskTokens, 4 * h!, 4 * wd!]);
  const iou = mlp(g, w.sub('iou_prediction_head'), iouTokenOut);
  return { masks, iou };
}
