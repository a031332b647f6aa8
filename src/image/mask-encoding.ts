import { LisaError } from '../errors.js';

/** A binary mask, row-major, 1 byte per pixel (0 or 1). */
export interface BinaryMask {
  width: number;
  height: number;
  data: Uint8Array;
}

/** COCO run-length encoding as pycocotools writes it: `counts` is the compressed string form. */
export interface CocoRle {
  size: [number, number];
  counts: string;
}

/**
 * Run lengths in column-major (Fortran) order, starting with a run of zeros (which may be empty), as
 * pycocotools' rleEncode.
 */
export function rleCounts(m: BinaryMask): number[] {
  const counts: number[] = [];
  let prev = 0,
    run = 0;
  for (let x = 0; x < m.width; x++)
    for (let y = 0; y < m.height; y++) {
      const v = m.data[y * m.width + x] ? 1 : 0;
      if (v !== prev) {
        counts.push(run);
        run = 0;
        prev = v;
      }
      run++;
    }
  counts.push(run);
  return counts;
}

/** pycocotools' rleToString: LEB128-like, 5 bits a char (+48), counts after the second delta-coded against i−2. */
export function countsToString(counts: readonly number[]): string {
  let s = '';
  counts.forEach((c, i) => {
    let x = BigInt(c);
    if (i > 2) x -= BigInt(counts[i - 2]!);
    for (let more = true; more;) {
      let ch = Number(x & 0x1fn);
      x >>= 5n; // arithmetic shift, as on a C long
      more = ch & 0x10 ? x !== -1n : x !== 0n;
      if (more) ch |= 0x20;
      s += String.fromCharCode(ch + 48);
    }
  });
  return s;
}

/** pycocotools' rleFrString. */
export function stringToCounts(s: string): number[] {
  const counts: number[] = [];
  let p = 0;
  while (p < s.length) {
    let x = 0n,
      k = 0n,
      more = true;
    while (more) {
      if (p >= s.length) throw new LisaError(`RLE string ends inside a count: "${s}"`);
      const c = s.charCodeAt(p) - 48;
      if (c < 0 || c > 63) throw new LisaError(`RLE string has a character outside '0'..'o': "${s[p]}"`);
      x |= BigInt(c & 0x1f) << (5n * k);
      more = (c & 0x20) !== 0;
      p++;
      k++;
      if (!more && c & 0x10) x |= -1n << (5n * k);
    }
    if (counts.length > 2) x += BigInt(counts[counts.length - 2]!);
    counts.push(Number(BigInt.asUintN(32, x)));
  }
  return counts;
}

/**
 * pycocotools' encode for one mask. Takes a BinaryMask or a segment result's mask (`{ width, height, mask }`), and
 * checks it: a wrong shape is one clear error, not a TypeError deep inside.
 */
export function encodeRle(m: BinaryMask | { width: number; height: number; mask: Uint8Array }): CocoRle {
  const data = 'data' in m ? m.data : (m as { mask?: unknown }).mask;
  const { width, height } = m;
  if (!Number.isInteger(width) || !Number.isInteger(height) || width < 0 || height < 0)
    throw new LisaError(`encodeRle: width and height must be non-negative integers, got ${width}x${height}`);
  if (!(data instanceof Uint8Array) || data.length !== width * height)
    throw new LisaError(`encodeRle: expected a Uint8Array of ${width}x${height} = ${width * height} pixels as "data" or "mask"`);
  const b: BinaryMask = { width, height, data };
  return { size: [height, width], counts: countsToString(rleCounts(b)) };
}

/** Decodes a COCO RLE (compressed string or uncompressed count list) back to a mask. */
export function decodeRle(rle: { size: [number, number]; counts: string | readonly number[] }): BinaryMask {
  const size = (rle as { size?: unknown }).size;
  if (!Array.isArray(size) || size.length !== 2 || !size.every((d) => Number.isSafeInteger(d) && d >= 0))
    throw new LisaError(`RLE size must be [height, width], got ${JSON.stringify(size)?.slice(0, 60)}`);
  const [h, w] = rle.size;
  const raw: unknown = rle.counts;
  if (typeof raw !== 'string' && !(Array.isArray(raw) && raw.every((c) => Number.isSafeInteger(c) && c >= 0)))
    throw new LisaError('RLE counts must be a string or an array of non-negative integers');
  const counts = typeof raw === 'string' ? stringToCounts(raw) : (raw as readonly number[]);
  const data = new Uint8Array(h * w);
  let i = 0,
    v = 0;
  for (const c of counts) {
    if (i + c > h * w) throw new LisaError(`RLE counts cover ${i + c} pixels but the mask has ${h * w}`);
    if (v) for (let k = i; k < i + c; k++) data[(k % h) * w + Math.floor(k / h)] = 1;
    i += c;
    v ^= 1;
  }
  if (i !== h * w) throw new LisaError(`RLE counts cover ${i} pixels but the mask has ${h * w}`);
  return { width: w, height: h, data };
}

export function maskArea(m: BinaryMask): number {
  let n = 0;
  for (const v of m.data) if (v) n++;
  return n;
}

/** [x, y, width, height] of the foreground (pycocotools' toBbox); [0, 0, 0, 0] when empty. */
export function maskBbox(m: BinaryMask): [number, number, number, number] {
  let x0 = m.width,
    y0 = m.height,
    x1 = -1,
    y1 = -1;
  for (let y = 0; y < m.height; y++)
    for (let x = 0; x < m.width; x++) {
      if (!m.data[y * m.width + x]) continue;
      if (x < x0) x0 = x;
      if (x > x1) x1 = x;
      if (y < y0) y0 = y;
      if (y > y1) y1 = y;
    }
  return x1 < 0 ? [0, 0, 0, 0] : [x0, y0, x1 - x0 + 1, y1 - y0 + 1];
}

/**
 * Outer contours of the foreground's 8-connected components, as pixel-centre polygons [x0, y0, x1, y1, …]
 * (Moore-neighbour tracing, like OpenCV's findContours with RETR_EXTERNAL and CHAIN_APPROX_NONE, without
 * the holes). Components are found in raster order.
 */
export function maskPolygons(m: BinaryMask): number[][] {
  const { width: w, height: h, data } = m;
  const at = (x: number, y: number): boolean => x >= 0 && y >= 0 && x < w && y < h && data[y * w + x] === 1;
  const seen = new Uint8Array(w * h);
  const polys: number[][] = [];
  // Clockwise neighbours starting west: W, NW, N, NE, E, SE, S, SW.
  const dx = [-1, -1, 0, 1, 1, 1, 0, -1],
    dy = [0, -1, -1, -1, 0, 1, 1, 1];
  for (let y = 0; y < h; y++)
    for (let x = 0; x < w; x++) {
      if (!at(x, y) || seen[y * w + x] || at(x - 1, y)) continue;
      // A new component's outer border starts at its first pixel in raster order: flood it to mark it seen.
      const stack = [y * w + x];
      seen[y * w + x] = 1;
      while (stack.length) {
        const p = stack.pop()!;
        const px = p % w,
          py = (p - px) / w;
        for (let d = 0; d < 8; d++) {
          const qx = px + dx[d]!,
            qy = py + dy[d]!;
          if (at(qx, qy) && !seen[qy * w + qx]) {
            seen[qy * w + qx] = 1;
            stack.push(qy * w + qx);
          }
        }
      }
      const poly: number[] = [x, y];
      let cx = x,
        cy = y,
        dir = 0; // we entered from the west (background)
      const limit = 4 * w * h + 8;
      for (let steps = 0; steps < limit; steps++) {
        let found = false;
        for (let k = 0; k < 8; k++) {
          const d = (dir + 1 + k) % 8; // search clockwise from just past the backtrack direction
          const nx = cx + dx[d]!,
            ny = cy + dy[d]!;
          if (at(nx, ny)) {
            dir = (d + 4) % 8;
            cx = nx;
            cy = ny;
            found = true;
            break;
          }
        }
        if (!found || (cx === x && cy === y)) break;
        poly.push(cx, cy);
      }
      polys.push(poly);
    }
  return polys;
}
