/**
 * OpenCV 4.x's `cv2.polylines(mask, [pts], True, v, thickness=1)` and `cv2.fillPoly(mask, [pts], v)` for
 * integer points (LINE_8, shift 0), pixel for pixel: ReasonSeg's ground truth is drawn with them. Edges are
 * 8-connected Bresenham lines (LineIterator, clipped to the image like clipLine); the fill is
 * FillEdgeCollection's scanline over an active-edge list in 16.16 fixed point, which also includes every
 * boundary pixel.
 */

export interface Raster {
  width: number;
  height: number;
  data: Uint8Array;
}

const XY_SHIFT = 16;
const XY_ONE = 1 << XY_SHIFT;

/** Arithmetic shift right for values that may exceed 32 bits. */
function shr(v: number, s: number): number {
  return Math.floor(v / 2 ** s);
}

/** clipLine: clips the segment to [0, w−1] × [0, h−1]; false when it lies outside. */
function clipLine(w: number, h: number, p: { x1: number; y1: number; x2: number; y2: number }): boolean {
  const right = w - 1,
    bottom = h - 1;
  if (w <= 0 || h <= 0) return false;
  let { x1, y1, x2, y2 } = p;
  let c1 = (x1 < 0 ? 1 : 0) + (x1 > right ? 2 : 0) + (y1 < 0 ? 4 : 0) + (y1 > bottom ? 8 : 0);
  let c2 = (x2 < 0 ? 1 : 0) + (x2 > right ? 2 : 0) + (y2 < 0 ? 4 : 0) + (y2 > bottom ? 8 : 0);
  if ((c1 & c2) === 0 && (c1 | c2) !== 0) {
    if (c1 & 12) {
      const a = c1 < 8 ? 0 : bottom;
      x1 += Math.trunc(((a - y1) * (x2 - x1)) / (y2 - y1));
      y1 = a;
      c1 = (x1 < 0 ? 1 : 0) + (x1 > right ? 2 : 0);
    }
    if (c2 & 12) {
      const a = c2 < 8 ? 0 : bottom;
      x2 += Math.trunc(((a - y2) * (x2 - x1)) / (y2 - y1));
      y2 = a;
      c2 = (x2 < 0 ? 1 : 0) + (x2 > right ? 2 : 0);
    }
    if ((c1 & c2) === 0 && (c1 | c2) !== 0) {
      if (c1) {
        const a = c1 === 1 ? 0 : right;
        y1 += Math.trunc(((a - x1) * (y2 - y1)) / (x2 - x1));
        x1 = a;
        c1 = 0;
      }
      if (c2) {
        const a = c2 === 1 ? 0 : right;
        y2 += Math.trunc(((a - x2) * (y2 - y1)) / (x2 - x1));
        x2 = a;
        c2 = 0;
      }
    }
  }
  Object.assign(p, { x1, y1, x2, y2 });
  return (c1 | c2) === 0;
}

/** cv::Line with LineIterator(connectivity 8, leftToRight). */
export function drawLine(img: Raster, x1: number, y1: number, x2: number, y2: number, value: number): void {
  const { width: w, height: h } = img;
  const p = { x1, y1, x2, y2 };
  if (x1 < 0 || x1 >= w || x2 < 0 || x2 >= w || y1 < 0 || y1 >= h || y2 < 0 || y2 >= h) {
    if (!clipLine(w, h, p)) return;
  }
  ({ x1, y1, x2, y2 } = p);
  let dx = x2 - x1,
    dy = y2 - y1;
  if (dx < 0) {
    dx = -dx;
    dy = -dy;
    [x1, y1, x2, y2] = [x2, y2, x1, y1];
  }
  let sx = 1,
    sy = 1; // steps along x and y
  if (dy < 0) {
    dy = -dy;
    sy = -1;
  }
  const vert = dy > dx;
  if (vert) [dx, dy] = [dy, dx];
  let err = dx - (dy + dy);
  const plusDelta = dx + dx,
    minusDelta = -(dy + dy);
  let x = x1,
    y = y1;
  for (let i = 0; i <= dx; i++) {
    img.data[y * w + x] = value;
    const minor = err < 0;
    err += minusDelta + (minor ? plusDelta : 0);
    // Every step moves along the major axis; err < 0 also moves along the minor one.
    if (vert) {
      y += sy;
      if (minor) x += sx;
    } else {
      x += sx;
      if (minor) y += sy;
    }
  }
}

/** cv2.polylines(closed=True, thickness=1, LINE_8). */
export function polylines(img: Raster, pts: readonly [number, number][], value: number): void {
  if (pts.length === 0) return;
  let [px, py] = pts[pts.length - 1]!;
  for (const [x, y] of pts) {
    drawLine(img, px, py, x, y, value);
    px = x;
    py = y;
  }
}

interface PolyEdge {
  y0: number;
  y1: number;
  x: number;
  dx: number;
  next: PolyEdge | null;
}

/**
 * cv2.fillPoly for one integer polygon (LINE_8, shift 0): the outline, then FillEdgeCollection's scanline fill.
 * `stepRowsAbove` walks the rows above the image one by one as OpenCV does (the reference the skip is tested against).
 */
export function fillPoly(img: Raster, pts: readonly [number, number][], value: number, opts: { stepRowsAbove?: boolean } = {}): void {
  const n = pts.length;
  if (n === 0) return;
  const edges: PolyEdge[] = [];
  let [x0, y0] = pts[n - 1]!;
  for (const [x1, y1] of pts) {
    drawLine(img, x0, y0, x1, y1, value);
    if (y0 !== y1) {
      const fx0 = x0 * XY_ONE,
        fx1 = x1 * XY_ONE;
      const dx = Math.trunc((fx1 - fx0) / (y1 - y0));
      edges.push(y0 < y1 ? { y0, y1, x: fx0, dx, next: null } : { y0: y1, y1: y0, x: fx1, dx, next: null });
    }
    x0 = x1;
    y0 = y1;
  }
  fillEdgeCollection(img, edges, value, opts.stepRowsAbove === true);
}

function fillEdgeCollection(img: Raster, edges: PolyEdge[], value: number, stepRowsAbove: boolean): void {
  const { width: w, height: h } = img;
  const total = edges.length;
  if (total < 2) return;
  let yMax = -Infinity,
    yMin = Infinity,
    xMax = -Infinity,
    xMin = Infinity;
  for (const e of edges) {
    const xEnd = e.x + (e.y1 - e.y0) * e.dx;
    yMin = Math.min(yMin, e.y0);
    yMax = Math.max(yMax, e.y1);
    xMin = Math.min(xMin, e.x, xEnd);
    xMax = Math.max(xMax, e.x, xEnd);
  }
  if (yMax < 0 || yMin >= h || xMax < 0 || xMin >= w * XY_ONE) return;
  edges.sort((a, b) => (a.y0 !== b.y0 ? a.y0 - b.y0 : a.x !== b.x ? a.x - b.x : a.dx - b.dx));
  const sentinel: PolyEdge = { y0: Number.MAX_SAFE_INTEGER, y1: 0, x: 0, dx: 0, next: null };
  edges.push(sentinel);
  const head: PolyEdge = { y0: 0, y1: 0, x: 0, dx: 0, next: null };
  let i = 0;
  let e = edges[0]!;
  yMax = Math.min(yMax, h);
  for (let y = e.y0; y < yMax; y++) {
    if (y < 0 && !stepRowsAbove) {
      // Rows above the image draw nothing: jump to the next row where an edge starts or ends (or row 0),
      // moving every active edge along by its slope, so the work is bounded by the image whatever the
      // coordinates (a polygon reaching y = −10¹² took forever). Same result as stepping row by row.
      let target = Math.min(0, i < total ? e.y0 : 0);
      for (let a = head.next; a; a = a.next) target = Math.min(target, a.y1);
      if (target > y + 1) {
        const k = target - y - 1;
        const active: PolyEdge[] = [];
        for (let a = head.next; a; a = a.next) {
          a.x += a.dx * k;
          active.push(a);
        }
        active.sort((p, q) => p.x - q.x); // stable: ties keep their order, as the bubble sort does
        head.next = null;
        for (let j = active.length - 1; j >= 0; j--) {
          active[j]!.next = head.next;
          head.next = active[j]!;
        }
        y += k;
      }
    }
    let draw = false;
    const clip = y < 0;
    let prelast: PolyEdge = head;
    let last = head.next;
    while (last || e.y0 === y) {
      if (last && last.y1 === y) {
        prelast.next = last.next;
        last = last.next;
        continue;
      } // edge ends here
      const keepPrelast = prelast;
      if (last && (e.y0 > y || last.x < e.x)) {
        prelast = last;
        last = last.next;
      } // next active edge
      else if (i < total) {
        prelast.next = e;
        e.next = last;
        prelast = e;
        e = edges[++i]!;
      } // edge starts here
      else break;
      if (draw) {
        if (!clip) {
          let xa: number, xb: number;
          if (keepPrelast.x > prelast.x) {
            xa = shr(prelast.x + XY_ONE - 1, XY_SHIFT);
            xb = shr(keepPrelast.x, XY_SHIFT);
          } else {
            xa = shr(keepPrelast.x + XY_ONE - 1, XY_SHIFT);
            xb = shr(prelast.x, XY_SHIFT);
          }
          if (xa < w && xb >= 0) {
            if (xa < 0) xa = 0;
            if (xb >= w) xb = w - 1;
            img.data.fill(value, y * w + xa, y * w + xb + 1);
          }
        }
        keepPrelast.x += keepPrelast.dx;
        prelast.x += prelast.dx;
      }
      draw = !draw;
    }
    // Keep the active list sorted by x (bubble sort, as OpenCV does).
    let keep: PolyEdge | null = null;
    for (;;) {
      let pre: PolyEdge = head;
      let cur = head.next;
      let lastExchange: PolyEdge | null = null;
      while (cur !== keep && cur && cur.next) {
        const te: PolyEdge = cur.next;
        if (cur.x > te.x) {
          pre.next = te;
          cur.next = te.next;
          te.next = cur;
          pre = te;
          lastExchange = pre;
        } else {
          pre = cur;
          cur = te;
        }
      }
      if (!lastExchange) break;
      keep = lastExchange;
      if (keep === head.next || keep === head) break;
    }
  }
}
