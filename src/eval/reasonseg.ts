import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { TextDecoder } from 'node:util';
import { LisaError } from '../errors.js';
import { fillPoly, polylines, type Raster } from './opencv-raster.js';

/** One labelme-style shape as ReasonSeg stores it. */
export interface Shape {
  label: string;
  points: [number, number][];
}

export interface ReasonSegAnnotation {
  /** The instruction rephrasings; the official validation uses the first. */
  text: string[];
  /** true: a long sentence query; false: a short phrase (the paper's "short"/"long" split). */
  isSentence: boolean;
  shapes: Shape[];
  /** lisa-ts extension (the sanity set): a ground-truth PNG beside the JSON, used when there are no shapes. */
  gtPng?: string;
}

const MAX_JSON_BYTES = 64 * 1024 * 1024;

/** Decodes the JSON as UTF-8, falling back to cp1252 as the official code does. */
function decodeJsonText(bytes: Uint8Array, where: string): unknown {
  const attempt = (text: string): unknown => JSON.parse(text);
  try {
    return attempt(new TextDecoder('utf-8', { fatal: true }).decode(bytes));
  } catch {
    try {
      return attempt(new TextDecoder('windows-1252').decode(bytes));
    } catch (e) {
      throw new LisaError(`${where}: not valid JSON (${(e as Error).message})`);
    }
  }
}

/** Reads and validates a ReasonSeg annotation file (`text` list, `is_sentence`, `shapes`). */
export function readReasonSegJson(path: string): ReasonSegAnnotation {
  let size: number;
  try {
    size = statSync(path).size;
  } catch {
    throw new LisaError(`${path}: no such annotation file`);
  }
  if (size > MAX_JSON_BYTES) throw new LisaError(`${path}: ${size} bytes is too large for an annotation`);
  const j = decodeJsonText(readFileSync(path), path) as Record<string, unknown> | null;
  if (typeof j !== 'object' || j === null) throw new LisaError(`${path}: expected a JSON object`);
  const text = typeof j.text === 'string' ? [j.text] : j.text;
  if (!Array.isArray(text) || !text.every((t) => typeof t === 'string'))
    throw new LisaError(`${path}: field "text" must be a list of strings`);
  if (typeof j.is_sentence !== 'boolean') throw new LisaError(`${path}: field "is_sentence" must be true or false`);
  if (!Array.isArray(j.shapes)) throw new LisaError(`${path}: field "shapes" must be a list`);
  const shapes = j.shapes.map((s: unknown, i: number): Shape => {
    const o = s as { label?: unknown; points?: unknown };
    if (typeof o?.label !== 'string') throw new LisaError(`${path}: shapes[${i}].label must be a string`);
    if (
      !Array.isArray(o.points) ||
      !o.points.every((p) => Array.isArray(p) && p.length === 2 && p.every((c) => typeof c === 'number' && Number.isFinite(c)))
    ) {
      throw new LisaError(`${path}: shapes[${i}].points must be a list of [x, y] numbers`);
    }
    return { label: o.label, points: o.points as [number, number][] };
  });
  const gtPng = j.gt_png;
  if (gtPng !== undefined && (typeof gtPng !== 'string' || gtPng.includes('/') || gtPng.includes('\\')))
    throw new LisaError(`${path}: field "gt_png" must be a file name beside the JSON`);
  return { text: text as string[], isSentence: j.is_sentence, shapes, ...(gtPng ? { gtPng } : {}) };
}

/**
 * The official get_mask_from_json: "flag" shapes skipped; each remaining polygon drawn (polylines, then
 * fillPoly, coordinates truncated to int32) to measure its area; drawn again largest first so smaller ones
 * overwrite, with 255 for labels containing "ignore" and 1 otherwise. Values {0, 1, 255}.
 */
export function rasterizeShapes(shapes: readonly Shape[], height: number, width: number): Uint8Array {
  const draw = (img: Raster, pts: [number, number][], v: number): void => {
    polylines(img, pts, v);
    fillPoly(img, pts, v);
  };
  const valid: { shape: Shape; pts: [number, number][]; area: number }[] = [];
  for (const s of shapes) {
    if (s.label.toLowerCase() === 'flag') continue;
    // np.array(points, dtype=np.int32): non-finite values have no int32; out-of-range ones are clamped (numpy
    // wraps them, which no annotation means).
    if (s.points.some(([x, y]) => !Number.isFinite(x) || !Number.isFinite(y)))
      throw new LisaError(`shape "${s.label}": a point coordinate is not a finite number`);
    const i32 = (v: number): number => Math.min(2147483647, Math.max(-2147483648, Math.trunc(v)));
    const pts = s.points.map(([x, y]) => [i32(x), i32(y)] as [number, number]);
    const tmp: Raster = { width, height, data: new Uint8Array(width * height) };
    draw(tmp, pts, 1);
    let area = 0;
    for (const v of tmp.data) area += v;
    valid.push({ shape: s, pts, area });
  }
  // np.argsort (stable for these short lists), reversed: largest first, ties in reverse file order.
  const order = valid
    .map((_, i) => i)
    .sort((a, b) => valid[a]!.area - valid[b]!.area || a - b)
    .reverse();
  const mask: Raster = { width, height, data: new Uint8Array(width * height) };
  for (const i of order) {
    const v = valid[i]!;
    draw(mask, v.pts, v.shape.label.toLowerCase().includes('ignore') ? 255 : 1);
  }
  return mask.data;
}

export interface ReasonSegSample {
  name: string;
  image: string;
  json: string;
}

/** Lists `<root>/<split>/<name>.jpg` + `<name>.json` (also `<root>/ReasonSeg/<split>`); samples sorted by name. */
export function listReasonSeg(root: string, split: string): { dir: string; samples: ReasonSegSample[]; missingImages: string[] } {
  const dir = [join(root, split), join(root, 'ReasonSeg', split)].find((d) => existsSync(d) && statSync(d).isDirectory());
  if (!dir) throw new LisaError(`${root}: no ${split}/ folder (expected the ReasonSeg layout: <data>/${split}/<name>.jpg + <name>.json)`);
  const files = readdirSync(dir);
  const images = new Map<string, string>();
  for (const f of files) {
    const m = /^(.*)\.(jpe?g|png|webp)$/i.exec(f);
    if (m) images.set(m[1]!, f);
  }
  const samples: ReasonSegSample[] = [],
    missingImages: string[] = [];
  for (const f of files.filter((x) => x.endsWith('.json')).sort()) {
    const name = f.slice(0, -'.json'.length);
    const img = images.get(name);
    if (!img) {
      missingImages.push(name);
      continue;
    }
    samples.push({ name, image: join(dir, img), json: join(dir, f) });
  }
  return { dir, samples, missingImages };
}
