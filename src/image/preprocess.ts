import type { RgbImage } from './decode.js';
import { pillowResize } from './pillow-resample.js';

/** CLIPImageProcessor settings (`preprocessor_config.json` of the vision tower). */
export interface ClipPreprocessConfig {
  shortestEdge: number;
  cropSize: number;
  mean: readonly [number, number, number];
  std: readonly [number, number, number];
}

export const OPENAI_CLIP_PREPROCESS: ClipPreprocessConfig = {
  shortestEdge: 224,
  cropSize: 224,
  mean: [0.48145466, 0.4578275, 0.40821073],
  std: [0.26862954, 0.26130258, 0.27577711],
};

const f = Math.fround;

/**
 * transformers 4.31 CLIPImageProcessor.preprocess: PIL bicubic resize of the short side to 224 (long side
 * `int(224 * long / short)`, truncated), centre crop with `top = (h - 224) // 2`, ×(1/255) in float64 cast to
 * float32, then (x - mean) / std in float32. Returns CHW float32 [3, crop, crop]. Only the central square
 * of a non-square image reaches the LLM (SAM sees all of it).
 */
export function clipPreprocess(img: RgbImage, cfg: ClipPreprocessConfig = OPENAI_CLIP_PREPROCESS): Float32Array {
  const { width: w, height: h } = img;
  const short = Math.min(w, h), long = Math.max(w, h);
  const newShort = cfg.shortestEdge, newLong = Math.trunc((cfg.shortestEdge * long) / short);
  const [rw, rh] = w <= h ? [newShort, newLong] : [newLong, newShort];
  const resized = pillowResize(img, rw, rh, 'bicubic');
  const c = cfg.cropSize;
  const top = Math.floor((rh - c) / 2), left = Math.floor((rw - c) / 2);
  if (top < 0 || left < 0) throw new Error(`clipPreprocess: resized ${rw}x${rh} is smaller than the ${c} crop`);
  const out = new Float32Array(3 * c * c);
  const mean = cfg.mean.map(f), std = cfg.std.map(f);
  for (let y = 0; y < c; y++) for (let x = 0; x < c; x++) {
    const p = ((y + top) * rw + (x + left)) * 3;
    for (let ch = 0; ch < 3; ch++) {
      const v = f(resized.data[p + ch]! * (1 / 255));
      out[ch * c * c + y * c + x] = f(f(v - mean[ch]!) / std[ch]!);
    }
  }
  return out;
}

export const SAM_PIXEL_MEAN = [123.675, 116.28, 103.53] as const;
export const SAM_PIXEL_STD = [58.395, 57.12, 57.375] as const;

/** ResizeLongestSide.get_preprocess_shape: long side to `target`, each side `int(x * scale + 0.5)`. */
export function samResizeShape(h: number, w: number, target = 1024): [number, number] {
  const scale = (target * 1.0) / Math.max(h, w);
  return [Math.trunc(h * scale + 0.5), Math.trunc(w * scale + 0.5)];
}

/** ResizeLongestSide(1024).apply_image: PIL bilinear resize to the preprocess shape (uint8). */
export function samResize(img: RgbImage, target = 1024): RgbImage {
  const [nh, nw] = samResizeShape(img.height, img.width, target);
  return pillowResize(img, nw, nh, 'bilinear');
}

/** LISA's chat.py preprocess: (x − mean) / std in float32 on the resized image, zero-padded right and bottom. CHW [3, size, size]. */
export function samNormalizePad(resized: RgbImage, size = 1024): Float32Array {
  const out = new Float32Array(3 * size * size);
  const mean = SAM_PIXEL_MEAN.map(f), std = SAM_PIXEL_STD.map(f);
  for (let y = 0; y < resized.height; y++) for (let x = 0; x < resized.width; x++) {
    const p = (y * resized.width + x) * 3;
    for (let ch = 0; ch < 3; ch++) out[ch * size * size + y * size + x] = f(f(resized.data[p + ch]! - mean[ch]!) / std[ch]!);
  }
  return out;
}
