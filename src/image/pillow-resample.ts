import type { RgbImage } from './decode.js';

/**
 * Pillow's Image.resize (Pillow 9.4, libImaging/Resample.c) for 8-bit images, bit for bit: a separable
 * convolution, horizontal pass first, whose filter support widens with the downscale factor (antialiasing);
 * coefficients normalised per output pixel, then converted to 22-bit fixed point; each pass rounds and
 * clips to 0..255. sharp/libvips resize differs from this by up to 100 levels, which LISA's numbers feel.
 */

export type PillowFilter = 'bilinear' | 'bicubic';

const FILTERS: Record<PillowFilter, { support: number; fn: (x: number) => number }> = {
  bilinear: { support: 1, fn: (x) => { x = Math.abs(x); return x < 1 ? 1 - x : 0; } },
  bicubic: {
    support: 2,
    fn: (x) => {
      const a = -0.5;
      x = Math.abs(x);
      if (x < 1) return ((a + 2) * x - (a + 3)) * x * x + 1;
      if (x < 2) return (((x - 5) * x + 8) * x - 4) * a;
      return 0;
    },
  },
};

const PRECISION_BITS = 32 - 8 - 2;

interface Coeffs { ksize: number; bounds: Int32Array; kk: Int32Array }

/** precompute_coeffs + normalize_coeffs_8bpc. */
function precompute(inSize: number, outSize: number, filter: PillowFilter): Coeffs {
  const { support: baseSupport, fn } = FILTERS[filter];
  const scale = inSize / outSize;
  const filterscale = Math.max(scale, 1);
  const support = baseSupport * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = (xx + 0.5) * scale;
    const ss = 1 / filterscale;
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    let ww = 0;
    for (let x = 0; x < xmax; x++) { w[x] = fn((x + xmin - center + 0.5) * ss); ww += w[x]!; }
    for (let x = 0; x < ksize; x++) {
      const k = x < xmax && ww !== 0 ? w[x]! / ww : x < xmax ? w[x]! : 0;
      kk[xx * ksize + x] = k < 0 ? Math.trunc(-0.5 + k * (1 << PRECISION_BITS)) : Math.trunc(0.5 + k * (1 << PRECISION_BITS));
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

function clip8(v: number): number {
  const s = v >> PRECISION_BITS;
  return s < 0 ? 0 : s > 255 ? 255 : s;
}

/** Resizes an RGB image to width × height exactly as PIL's Image.resize(size, filter) does. */
export function pillowResize(img: RgbImage, width: number, height: number, filter: PillowFilter): RgbImage {
  if (width < 1 || height < 1 || !Number.isInteger(width) || !Number.isInteger(height)) throw new Error(`pillowResize: bad size ${width}x${height}`);
  const needH = width !== img.width, needV = height !== img.height;
  const ch = precompute(img.width, width, filter);
  const cv = precompute(img.height, height, filter);
  let src = img.data, srcW = img.width, srcH = img.height, yOffset = 0;
  const boundsV = Int32Array.from(cv.bounds);
  if (needH) {
    // Only the rows the vertical pass will read.
    const first = needV ? boundsV[0]! : 0;
    const last = needV ? boundsV[height * 2 - 2]! + boundsV[height * 2 - 1]! : img.height;
    const rows = last - first;
    const tmp = new Uint8Array(width * rows * 3);
    const half = 1 << (PRECISION_BITS - 1);
    for (let y = 0; y < rows; y++) {
      const rowIn = (y + first) * img.width * 3;
      for (let xx = 0; xx < width; xx++) {
        const xmin = ch.bounds[xx * 2]!, xmax = ch.bounds[xx * 2 + 1]!, k = xx * ch.ksize;
        let s0 = half, s1 = half, s2 = half;
        for (let x = 0; x < xmax; x++) {
          const c = ch.kk[k + x]!, p = rowIn + (x + xmin) * 3;
          s0 += src[p]! * c; s1 += src[p + 1]! * c; s2 += src[p + 2]! * c;
        }
        const o = (y * width + xx) * 3;
        tmp[o] = clip8(s0); tmp[o + 1] = clip8(s1); tmp[o + 2] = clip8(s2);
      }
    }
    src = tmp; srcW = width; srcH = rows; yOffset = first;
  }
  if (!needV) return { width, height: srcH, data: src };
  const out = new Uint8Array(width * height * 3);
  const half = 1 << (PRECISION_BITS - 1);
  for (let yy = 0; yy < height; yy++) {
    const ymin = boundsV[yy * 2]! - yOffset, ymax = boundsV[yy * 2 + 1]!, k = yy * cv.ksize;
    for (let x = 0; x < srcW; x++) {
      let s0 = half, s1 = half, s2 = half;
      for (let y = 0; y < ymax; y++) {
        const c = cv.kk[k + y]!, p = ((y + ymin) * srcW + x) * 3;
        s0 += src[p]! * c; s1 += src[p + 1]! * c; s2 += src[p + 2]! * c;
      }
      const o = (yy * width + x) * 3;
      out[o] = clip8(s0); out[o + 1] = clip8(s1); out[o + 2] = clip8(s2);
    }
  }
  return { width, height, data: out };
}
