import { LisaError } from '../../errors.js';
import type { Graph } from '../../graph/graph.js';
import type { Value } from '../../graph/ir.js';
import { relPosAttention, windowPartition, windowUnpartition } from '../../graph/nn.js';
import type { ModuleWeights } from '../module.js';

/** The largest attention-score block (per image) built at once; see relPosAttention. */
const ATTENTION_CHUNK_BYTES = 256 * 2 ** 20;

/** SAM image-encoder sizes. Not in any config file: inferred from tensor shapes, as the real checkpoints require. */
export interface SamEncoderConfig {
  imgSize: number;
  patchSize: number;
  embedDim: number;
  depth: number;
  numHeads: number;
  windowSize: number;
  globalAttnIndexes: number[];
  outChans: number;
}

/** Reads the encoder's sizes off its tensors: patch_embed (dim, patch), pos_embed (grid), rel_pos tables (head dim, window, global blocks). */
export function inferSamEncoderConfig(w: ModuleWeights): SamEncoderConfig {
  const where = `${w.ckpt.path}: ${w.prefix}`;
  const pe = w.shape('patch_embed.proj.weight');
  if (pe.length !== 4 || pe[1] !== 3 || pe[2] !== pe[3]) throw new LisaError(`${where}.patch_embed.proj.weight has shape ${JSON.stringify(pe)}, expected [dim, 3, p, p]`);
  const [embedDim, , patchSize] = pe as [number, number, number, number];
  const pos = w.shape('pos_embed');
  if (pos.length !== 4 || pos[1] !== pos[2] || pos[3] !== embedDim) throw new LisaError(`${where}.pos_embed has shape ${JSON.stringify(pos)}, expected [1, g, g, ${embedDim}]`);
  const grid = pos[1]!;
  let depth = 0;
  while (w.has(`blocks.${depth}.attn.qkv.weight`)) depth++;
  if (depth === 0) throw new LisaError(`${where}.blocks.0 is missing: not a SAM image encoder`);
  const headDim = w.shape('blocks.0.attn.rel_pos_h')[1]!;
  if (!headDim || embedDim % headDim !== 0) throw new LisaError(`${where}: rel_pos tables of width ${headDim} do not divide the embed dim ${embedDim}`);
  const globalAttnIndexes: number[] = [];
  let windowSize = 0;
  for (let i = 0; i < depth; i++) {
    const len = w.shape(`blocks.${i}.attn.rel_pos_h`)[0]!;
    if (len === 2 * grid - 1) globalAttnIndexes.push(i);
    else {
      const ws = (len + 1) / 2;
      if (windowSize && ws !== windowSize) throw new LisaError(`${where}: blocks use different window sizes (${windowSize} and ${ws})`);
      windowSize = ws;
    }
  }
  return { imgSize: grid * patchSize, patchSize, embedDim, depth, numHeads: embedDim / headDim, windowSize: windowSize || 14, globalAttnIndexes, outChans: w.shape('neck.0.weight')[0]! };
}

/** LayerNorm2d on NCHW: normalise over channels, as SAM's common.LayerNorm2d. */
export function layerNorm2d(g: Graph, w: ModuleWeights, x: Value, leaf: string, eps = 1e-6): Value {
  const nhwc = g.transpose(x, [0, 2, 3, 1]);
  return g.transpose(w.layerNorm(g, nhwc, leaf, eps), [0, 3, 1, 2]);
}

/** One ViT block: pre-norm windowed (or global) attention with decomposed relative positions, then an MLP. */
function block(g: Graph, w: ModuleWeights, x: Value, cfg: SamEncoderConfig, windowSize: number): Value {
  const [, h, wd, c] = x.shape as number[];
  const shortcut = x;
  let y = w.layerNorm(g, x, 'norm1', 1e-6);
  let hp = h!, wp = wd!;
  if (windowSize > 0) ({ windows: y, hp, wp } = windowPartition(g, y, windowSize));
  const [, sh, sw] = y.shape as number[];
  const heads = cfg.numHeads, hd = c! / heads;
  // qkv: [B, H*W, 3, heads, hd] → [3, B*heads, H*W, hd]
  const qkv = g.transpose(g.reshape(w.linear(g, y, 'attn.qkv'), [-1, sh! * sw!, 3, heads, hd]), [2, 0, 3, 1, 4]);
  const take = (i: number): Value => g.reshape(g.slice(qkv, [i], [i + 1], [0]), [-1, sh! * sw!, hd]);
  const q = take(0), k = take(1), v = take(2);
  // Global blocks attend over all H·W tokens: their scores are computed a few hundred MB at a time.
  const tokens = sh! * sw!, scoreBytes = heads * tokens * tokens * 4;
  const chunks = Math.ceil(scoreBytes / ATTENTION_CHUNK_BYTES);
  const out = relPosAttention(g, q, k, v, hd ** -0.5, w.param(g, 'attn.rel_pos_h'), w.param(g, 'attn.rel_pos_w'), [sh!, sw!], [sh!, sw!], chunks); // [B*heads, H*W, hd]
  y = g.reshape(g.transpose(g.reshape(out, [-1, heads, sh!, sw!, hd]), [0, 2, 3, 1, 4]), [-1, sh!, sw!, c!]);
  y = w.linear(g, y, 'attn.proj');
  if (windowSize > 0) y = windowUnpartition(g, y, windowSize, hp, wp, h!, wd!);
  x = g.add(shortcut, y);
  const m = w.linear(g, g.gelu(w.linear(g, w.layerNorm(g, x, 'norm2', 1e-6), 'mlp.lin1')), 'mlp.lin2');
  return g.add(x, m);
}

/**
 * SAM's ImageEncoderViT: [B, 3, 1024, 1024] normalised, padded pixels → [B, 256, 64, 64] image embeddings.
 * (The rel_pos tables are used at their stored size: SAM checkpoints store them at 2·size − 1.)
 */
export function samImageEncoder(g: Graph, w: ModuleWeights, cfg: SamEncoderConfig, pixels: Value): Value {
  const p = cfg.patchSize;
  let x = g.conv(pixels, w.param(g, 'patch_embed.proj.weight'), w.param(g, 'patch_embed.proj.bias'), { strides: [p, p] });
  x = g.add(g.transpose(x, [0, 2, 3, 1]), w.param(g, 'pos_embed'));
  const grid = cfg.imgSize / p;
  for (let i = 0; i < cfg.depth; i++) {
    const b = w.sub('blocks').sub(i);
    const global = cfg.globalAttnIndexes.includes(i);
    const expected = 2 * (global ? grid : cfg.windowSize) - 1;
    if (b.shape('attn.rel_pos_h')[0] !== expected) throw new LisaError(`${b.name('attn.rel_pos_h')}: length ${b.shape('attn.rel_pos_h')[0]} (expected ${expected}); resized tables are not supported`);
    x = block(g, b, x, cfg, global ? 0 : cfg.windowSize);
  }
  let y = g.transpose(x, [0, 3, 1, 2]);
  y = layerNorm2d(g, w, g.conv(y, w.param(g, 'neck.0.weight'), null), 'neck.1');
  y = layerNorm2d(g, w, g.conv(y, w.param(g, 'neck.2.weight'), null, { pads: [1, 1, 1, 1] }), 'neck.3');
  return y;
}
