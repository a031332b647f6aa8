import type { ModuleWeights } from '../module.js';

const f = Math.fround;
const TWO_PI = f(2 * Math.PI);

/** A point prompt in input-image (1024-frame) coordinates; label 1 foreground, 0 background. */
export interface PointPrompt { x: number; y: number; label: 0 | 1 }
/** A box prompt in input-image (1024-frame) coordinates. */
export interface BoxPrompt { x1: number; y1: number; x2: number; y2: number }

/**
 * SAM's PromptEncoder (LISA's copy: `text_embeds` are extra sparse tokens). The arithmetic is tiny (a 2×128
 * random-Fourier projection per point) so it runs here, in float32 steps as PyTorch does; the dense
 * positional encoding is computed once per model.
 */
export class SamPromptEncoder {
  readonly embedDim: number;
  readonly gaussian: Float32Array; // [2, embedDim/2]
  readonly pointEmbeddings: Float32Array[]; // 4 × [embedDim]: negative, positive, box corner 1, box corner 2
  readonly notAPointEmbed: Float32Array;
  readonly noMaskEmbed: Float32Array;
  readonly imageEmbeddingSize: [number, number];
  readonly inputImageSize: [number, number];

  constructor(w: ModuleWeights, imageEmbeddingSize: [number, number] = [64, 64], inputImageSize: [number, number] = [1024, 1024]) {
    this.gaussian = w.ref('pe_layer.positional_encoding_gaussian_matrix').float32();
    this.embedDim = this.gaussian.length;
    this.pointEmbeddings = [0, 1, 2, 3].map((i) => w.ref(`point_embeddings.${i}.weight`).float32());
    this.notAPointEmbed = w.ref('not_a_point_embed.weight').float32();
    this.noMaskEmbed = w.ref('no_mask_embed.weight').float32();
    this.imageEmbeddingSize = imageEmbeddingSize;
    this.inputImageSize = inputImageSize;
  }

  /** PositionEmbeddingRandom._pe_encoding of one point already normalised to [0, 1]: [sin(2π·(2c−1)G), cos(…)]. */
  private peEncode(x: number, y: number, out: Float32Array, offset: number): void {
    const half = this.embedDim / 2;
    const cx = f(f(2 * x) - 1), cy = f(f(2 * y) - 1);
    for (let j = 0; j < half; j++) {
      const p = f(TWO_PI * f(f(cx * this.gaussian[j]!) + f(cy * this.gaussian[half + j]!)));
      out[offset + j] = Math.sin(p);
      out[offset + half + j] = Math.cos(p);
    }
  }

  /** get_dense_pe(): [embedDim, h, w] for the image-embedding grid (cell centres). */
  denseImagePe(): Float32Array {
    const [h, w] = this.imageEmbeddingSize;
    const c = this.embedDim;
    const tmp = new Float32Array(c);
    const out = new Float32Array(c * h * w);
    for (let i = 0; i < h; i++) for (let j = 0; j < w; j++) {
      this.peEncode(f(f(j + 0.5) / w), f(f(i + 0.5) / h), tmp, 0);
      for (let k = 0; k < c; k++) out[k * h * w + i * w + j] = tmp[k]!;
    }
    return out;
  }

  /**
   * Sparse embeddings for points and/or a box, as PromptEncoder.forward: points shifted to pixel centres;
   * without a box a padding point (label −1, not_a_point_embed) is appended. Returns [tokens, embedDim].
   */
  embedPrompts(points: readonly PointPrompt[], box: BoxPrompt | null): { tokens: number; data: Float32Array } {
    const c = this.embedDim;
    const coords: [number, number, number][] = points.map((p) => [p.x, p.y, p.label]);
    if (points.length > 0 && !box) coords.push([0, 0, -1]);
    const n = coords.length + (box ? 2 : 0);
    const out = new Float32Array(n * c);
    const [ih, iw] = this.inputImageSize;
    coords.forEach(([x, y, label], i) => {
      if (label === -1) { out.set(this.notAPointEmbed, i * c); return; }
      this.peEncode(f(f(x + 0.5) / iw), f(f(y + 0.5) / ih), out, i * c);
      const add = this.pointEmbeddings[label === 1 ? 1 : 0]!;
      for (let k = 0; k < c; k++) out[i * c + k] = f(out[i * c + k]! + add[k]!);
    });
    if (box) {
      const corners: [number, number][] = [[box.x1, box.y1], [box.x2, box.y2]];
      corners.forEach(([x, y], j) => {
        const o = (coords.length + j) * c;
        this.peEncode(f(f(x + 0.5) / iw), f(f(y + 0.5) / ih), out, o);
        const add = this.pointEmbeddings[2 + j]!;
        for (let k = 0; k < c; k++) out[o + k] = f(out[o + k]! + add[k]!);
      });
    }
    return { tokens: n, data: out };
  }
}
