/**
 * Straightforward TypeScript versions of the ops, written from their definitions (PyTorch semantics), to
 * check the ONNX graphs against. Slow and obvious on purpose.
 */

export interface Nd { shape: number[]; data: Float32Array }

export function nd(shape: number[], data: Float32Array): Nd {
  const n = shape.reduce((a, b) => a * b, 1);
  if (data.length !== n) throw new Error(`nd ${JSON.stringify(shape)} needs ${n}, got ${data.length}`);
  return { shape, data };
}
export function strides(shape: readonly number[]): number[] {
  const s = new Array<number>(shape.length).fill(1);
  for (let i = shape.length - 2; i >= 0; i--) s[i] = s[i + 1]! * shape[i + 1]!;
  return s;
}
function forEachIndex(shape: readonly number[], fn: (idx: number[], flat: number) => void): void {
  const n = shape.reduce((a, b) => a * b, 1);
  const idx = new Array<number>(shape.length).fill(0);
  for (let f = 0; f < n; f++) {
    fn(idx, f);
    for (let d = shape.length - 1; d >= 0; d--) { if (++idx[d]! < shape[d]!) break; idx[d] = 0; }
  }
}
function broadcastIndex(idx: number[], shape: readonly number[]): number {
  const st = strides(shape);
  const off = idx.length - shape.length;
  let f = 0;
  for (let d = 0; d < shape.length; d++) f += (shape[d] === 1 ? 0 : idx[d + off]!) * st[d]!;
  return f;
}
export function broadcastShape(a: readonly number[], b: readonly number[]): number[] {
  const r = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < r; i++) {
    const x = a[a.length - r + i] ?? 1, y = b[b.length - r + i] ?? 1;
    out.push(x === 1 ? y : x);
  }
  return out;
}
export function binary(a: Nd, b: Nd, fn: (x: number, y: number) => number): Nd {
  const shape = broadcastShape(a.shape, b.shape);
  const out = new Float32Array(shape.reduce((p, q) => p * q, 1));
  forEachIndex(shape, (idx, f) => { out[f] = fn(a.data[broadcastIndex(idx, a.shape)]!, b.data[broadcastIndex(idx, b.shape)]!); });
  return nd(shape, out);
}
export function unary(a: Nd, fn: (x: number) => number): Nd {
  return nd([...a.shape], a.data.map(fn));
}
export function matmul(a: Nd, b: Nd): Nd {
  const m = a.shape[a.shape.length - 2]!, k = a.shape[a.shape.length - 1]!, n = b.shape[b.shape.length - 1]!;
  const batch = broadcastShape(a.shape.slice(0, -2), b.shape.slice(0, -2));
  const out = new Float32Array(batch.reduce((p, q) => p * q, 1) * m * n);
  forEachIndex(batch, (idx, f) => {
    const ao = broadcastIndex(idx, a.shape.slice(0, -2)) * m * k, bo = broadcastIndex(idx, b.shape.slice(0, -2)) * k * n;
    for (let i = 0; i < m; i++) for (let j = 0; j < n; j++) {
      let s = 0;
      for (let t = 0; t < k; t++) s += a.data[ao + i * k + t]! * b.data[bo + t * n + j]!;
      out[f * m * n + i * n + j] = s;
    }
  });
  return nd([...batch, m, n], out);
}
export function transpose(a: Nd, perm: number[]): Nd {
  const shape = perm.map((p) => a.shape[p]!);
  const st = strides(a.shape);
  const out = new Float32Array(a.data.length);
  forEachIndex(shape, (idx, f) => { let s = 0; perm.forEach((p, i) => { s += idx[i]! * st[p]!; }); out[f] = a.data[s]!; });
  return nd(shape, out);
}
/** Python-style slicing along one axis with a positive step. */
export function sliceAxis(a: Nd, axis: number, start: number, end: number, step = 1): Nd {
  const shape = [...a.shape];
  const picks: number[] = [];
  for (let i = start; i < Math.min(end, a.shape[axis]!); i += step) picks.push(i);
  shape[axis] = picks.length;
  const st = strides(a.shape);
  const out = new Float32Array(shape.reduce((p, q) => p * q, 1));
  forEachIndex(shape, (idx, f) => { let s = 0; idx.forEach((v, d) => { s += (d === axis ? picks[v]! : v) * st[d]!; }); out[f] = a.data[s]!; });
  return nd(shape, out);
}
export function concat(xs: Nd[], axis: number): Nd {
  const shape = [...xs[0]!.shape];
  shape[axis] = xs.reduce((s, x) => s + x.shape[axis]!, 0);
  const out = new Float32Array(shape.reduce((p, q) => p * q, 1));
  forEachIndex(shape, (idx, f) => {
    let j = idx[axis]!, which = 0;
    while (j >= xs[which]!.shape[axis]!) { j -= xs[which]!.shape[axis]!; which++; }
    const x = xs[which]!;
    const st = strides(x.shape);
    let s = 0;
    idx.forEach((v, d) => { s += (d === axis ? j : v) * st[d]!; });
    out[f] = x.data[s]!;
  });
  return nd(shape, out);
}
export function gatherRows(table: Nd, indices: number[], indexShape: number[]): Nd {
  const row = table.shape.slice(1).reduce((p, q) => p * q, 1);
  const out = new Float32Array(indices.length * row);
  indices.forEach((ix, i) => out.set(table.data.subarray(ix * row, ix * row + row), i * row));
  return nd([...indexShape, ...table.shape.slice(1)], out);
}
export function softmaxLast(a: Nd): Nd {
  const n = a.shape[a.shape.length - 1]!;
  const out = new Float32Array(a.data.length);
  for (let r = 0; r < a.data.length / n; r++) {
    let m = -Infinity;
    for (let i = 0; i < n; i++) m = Math.max(m, a.data[r * n + i]!);
    let s = 0;
    for (let i = 0; i < n; i++) s += Math.exp(a.data[r * n + i]! - m);
    for (let i = 0; i < n; i++) out[r * n + i] = Math.exp(a.data[r * n + i]! - m) / s;
  }
  return nd([...a.shape], out);
}
export function layerNormLast(a: Nd, gamma: Float32Array, beta: Float32Array | null, eps: number, rms = false): Nd {
  const n = a.shape[a.shape.length - 1]!;
  const out = new Float32Array(a.data.length);
  for (let r = 0; r < a.data.length / n; r++) {
    const row = a.data.subarray(r * n, r * n + n);
    const mean = rms ? 0 : row.reduce((p, q) => p + q, 0) / n;
    const v = row.reduce((p, q) => p + (q - mean) ** 2, 0) / n;
    for (let i = 0; i < n; i++) out[r * n + i] = ((row[i]! - mean) / Math.sqrt(v + eps)) * gamma[i]! + (beta ? beta[i]! : 0);
  }
  return nd([...a.shape], out);
}
/** erf by its Maclaurin series / continued fraction, accurate to ~1e-12 over the range used in tests. */
export function erf(x: number): number {
  const ax = Math.abs(x);
  if (ax < 3) {
    let term = ax, sum = ax;
    for (let n = 1; n < 100; n++) { term *= (-ax * ax) / n; sum += term / (2 * n + 1); if (Math.abs(term) < 1e-17) break; }
    return Math.sign(x) * (2 / Math.sqrt(Math.PI)) * sum;
  }
  // erfc continued fraction for large |x|
  let f = 0;
  for (let k = 60; k >= 1; k--) f = (k / 2) / (ax + f);
  return Math.sign(x) * (1 - Math.exp(-ax * ax) / Math.sqrt(Math.PI) / (ax + f));
}
export const gelu = (x: number): number => 0.5 * x * (1 + erf(x / Math.SQRT2));
export const sigmoid = (x: number): number => 1 / (1 + Math.exp(-x));

/** NCHW conv2d, PyTorch semantics. */
export function conv2d(x: Nd, w: Nd, b: Float32Array | null, stride: number, pad: number, groups = 1): Nd {
  const [n, c, h, wd] = x.shape as [number, number, number, number];
  const [o, cg, kh, kw] = w.shape as [number, number, number, number];
  const oh = Math.floor((h + 2 * pad - kh) / stride) + 1, ow = Math.floor((wd + 2 * pad - kw) / stride) + 1;
  const out = new Float32Array(n * o * oh * ow);
  const og = o / groups;
  void c;
  for (let bi = 0; bi < n; bi++) for (let oc = 0; oc < o; oc++) {
    const gi = Math.floor(oc / og);
    for (let y = 0; y < oh; y++) for (let xx = 0; xx < ow; xx++) {
      let s = b ? b[oc]! : 0;
      for (let ic = 0; ic < cg; ic++) for (let ky = 0; ky < kh; ky++) for (let kx = 0; kx < kw; kx++) {
        const iy = y * stride - pad + ky, ix = xx * stride - pad + kx;
        if (iy < 0 || ix < 0 || iy >= h || ix >= wd) continue;
        s += x.data[((bi * x.shape[1]! + gi * cg + ic) * h + iy) * wd + ix]! * w.data[((oc * cg + ic) * kh + ky) * kw + kx]!;
      }
      out[((bi * o + oc) * oh + y) * ow + xx] = s;
    }
  }
  return nd([n, o, oh, ow], out);
}
/** NCHW conv_transpose2d (weight [Cin, Cout, kh, kw]), PyTorch semantics, no padding. */
export function convTranspose2d(x: Nd, w: Nd, b: Float32Array | null, stride: number): Nd {
  const [n, ci, h, wd] = x.shape as [number, number, number, number];
  const [, co, kh, kw] = w.shape as [number, number, number, number];
  const oh = (h - 1) * stride + kh, ow = (wd - 1) * stride + kw;
  const out = new Float32Array(n * co * oh * ow);
  for (let bi = 0; bi < n; bi++) for (let oc = 0; oc < co; oc++) for (let i = 0; i < oh * ow; i++) out[(bi * co + oc) * oh * ow + i] = b ? b[oc]! : 0;
  for (let bi = 0; bi < n; bi++) for (let ic = 0; ic < ci; ic++) for (let y = 0; y < h; y++) for (let xx = 0; xx < wd; xx++) {
    const v = x.data[((bi * ci + ic) * h + y) * wd + xx]!;
    for (let oc = 0; oc < co; oc++) for (let ky = 0; ky < kh; ky++) for (let kx = 0; kx < kw; kx++) {
      out[((bi * co + oc) * oh + y * stride + ky) * ow + xx * stride + kx]! += v * w.data[((ic * co + oc) * kh + ky) * kw + kx]!;
    }
  }
  return nd([n, co, oh, ow], out);
}
/** F.interpolate(mode="bilinear", align_corners=False) on the last two dims. */
export function resizeBilinear(x: Nd, oh: number, ow: number): Nd {
  const lead = x.shape.slice(0, -2);
  const h = x.shape[x.shape.length - 2]!, w = x.shape[x.shape.length - 1]!;
  const planes = lead.reduce((p, q) => p * q, 1);
  const out = new Float32Array(planes * oh * ow);
  const src = (o: number, inSize: number, outSize: number): [number, number, number] => {
    let s = ((o + 0.5) * inSize) / outSize - 0.5;
    if (s < 0) s = 0;
    const i0 = Math.min(Math.floor(s), inSize - 1);
    const i1 = Math.min(i0 + 1, inSize - 1);
    return [i0, i1, s - i0];
  };
  for (let p = 0; p < planes; p++) for (let y = 0; y < oh; y++) {
    const [y0, y1, fy] = src(y, h, oh);
    for (let xx = 0; xx < ow; xx++) {
      const [x0, x1, fx] = src(xx, w, ow);
      const at = (yy: number, xi: number): number => x.data[p * h * w + yy * w + xi]!;
      out[p * oh * ow + y * ow + xx] = (1 - fy) * ((1 - fx) * at(y0, x0) + fx * at(y0, x1)) + fy * ((1 - fx) * at(y1, x0) + fx * at(y1, x1));
    }
  }
  return nd([...lead, oh, ow], out);
}
