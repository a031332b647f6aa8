import { LisaError } from '../errors.js';
import type { BinaryMask } from '../image/mask-encoding.js';
import { decodeRle } from '../image/mask-encoding.js';

/**
 * pycocotools' rleFrPoly (maskApi.c): a polygon [x0, y0, x1, y1, …] → run-length counts for an h × w mask.
 * The boundary is upsampled ×5, walked, and its crossings of pixel columns become run boundaries — so the
 * pixel rule differs from OpenCV's fillPoly; refCOCO's ground truth uses this one.
 */
export function polygonToCounts(xy: readonly number[], h: number, w: number, where = 'polygon'): number[] {
  const k = Math.floor(xy.length / 2);
  const scale = 5;
  // The walk visits every 1/5-pixel step of every edge: bound it by the image, whatever the coordinates say (a
  // coordinate of 1e12 made it allocate until the process died). Real annotations are far inside this bound.
  let steps = 0;
  for (let j = 0; j < k; j++) {
    const x0 = xy[2 * j]!,
      y0 = xy[2 * j + 1]!,
      x1 = xy[(2 * j + 2) % (2 * k)]!,
      y1 = xy[(2 * j + 3) % (2 * k)]!;
    if (![x0, y0, x1, y1].every(Number.isFinite)) throw new LisaError(`${where}: a polygon coordinate is not a finite number`);
    steps += scale * Math.max(Math.abs(x1 - x0), Math.abs(y1 - y0)) + 1;
  }
  const limit = scale * 64 * (h + w + 1) + 16 * k;
  if (steps > limit)
    throw new LisaError(`${where}: a polygon reaches far outside the ${w}x${h} image (${Math.round(steps / scale)} px of edges)`);
  const x: number[] = [],
    y: number[] = [];
  for (let j = 0; j < k; j++) {
    x.push(Math.trunc(scale * xy[2 * j]! + 0.5));
    y.push(Math.trunc(scale * xy[2 * j + 1]! + 0.5));
  }
  x.push(x[0]!);
  y.push(y[0]!);
  const u: number[] = [],
    v: number[] = [];
  for (let j = 0; j < k; j++) {
    let xs = x[j]!,
      xe = x[j + 1]!,
      ys = y[j]!,
      ye = y[j + 1]!;
    const dx = Math.abs(xe - xs),
      dy = Math.abs(ys - ye);
    const flip = (dx >= dy && xs > xe) || (dx < dy && ys > ye);
    if (flip) {
      [xs, xe] = [xe, xs];
      [ys, ye] = [ye, ys];
    }
    const s = dx >= dy ? (ye - ys) / dx : (xe - xs) / dy;
    if (dx >= dy)
      for (let d = 0; d <= dx; d++) {
        const t = flip ? dx - d : d;
        u.push(t + xs);
        v.push(Math.trunc(ys + s * t + 0.5));
      }
    else
      for (let d = 0; d <= dy; d++) {
        const t = flip ? dy - d : d;
        v.push(t + ys);
        u.push(Math.trunc(xs + s * t + 0.5));
      }
  }
  // Points where the boundary crosses a pixel column, downsampled back to pixel coordinates.
  const a: number[] = [];
  for (let j = 1; j < u.length; j++) {
    if (u[j] === u[j - 1]) continue;
    let xd = u[j]! < u[j - 1]! ? u[j]! : u[j]! - 1;
    xd = (xd + 0.5) / scale - 0.5;
    if (Math.floor(xd) !== xd || xd < 0 || xd > w - 1) continue;
    let yd = v[j]! < v[j - 1]! ? v[j]! : v[j - 1]!;
    yd = (yd + 0.5) / scale - 0.5;
    if (yd < 0) yd = 0;
    else if (yd > h) yd = h;
    yd = Math.ceil(yd);
    a.push((Math.trunc(xd) * h + yd) >>> 0);
  }
  a.push((h * w) >>> 0);
  a.sort((p, q) => p - q);
  let prev = 0;
  for (let j = 0; j < a.length; j++) {
    const t = a[j]!;
    a[j] = (t - prev) >>> 0;
    prev = t;
  }
  const b: number[] = [a[0]!];
  for (let j = 1; j < a.length;) {
    if (a[j]! > 0) b.push(a[j++]!);
    else {
      j++;
      if (j < a.length) b[b.length - 1]! += a[j++]!;
    }
  }
  return b;
}

export function polygonToMask(xy: readonly number[], h: number, w: number, where = 'polygon'): BinaryMask {
  return decodeRle({ size: [h, w], counts: polygonToCounts(xy, h, w, where) });
}
