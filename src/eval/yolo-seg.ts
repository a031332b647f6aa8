import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, extname, join } from 'node:path';
import { LisaError } from '../errors.js';

/** One labelled instance: its class index and polygon, coordinates normalised to 0–1 by the image's size. */
export interface YoloInstance {
  cls: number;
  polygon: [number, number][];
}

export interface YoloImage {
  image: string;
  stem: string;
  instances: YoloInstance[];
}

export interface YoloSegSet {
  dir: string;
  classes: string[];
  images: YoloImage[];
}

const MAX_LABEL_BYTES = 16 * 1024 * 1024;

/**
 * An Ultralytics segmentation set (coco128-seg's layout): `images/<stem>.jpg`, `labels/<stem>.txt` with one
 * instance a line (`class x1 y1 … xn yn`, normalised), `classes.json` the class names. A photo without a label
 * file has no labelled object. Every line is checked; a bad one is an error naming file and line.
 */
export function readYoloSeg(dir: string): YoloSegSet {
  const classesPath = join(dir, 'classes.json');
  if (!existsSync(classesPath) || !existsSync(join(dir, 'images')))
    throw new LisaError(`${dir}: not a segmentation set in the coco128-seg layout (needs classes.json and images/)`);
  let classes: unknown;
  try {
    classes = JSON.parse(readFileSync(classesPath, 'utf8'));
  } catch (e) {
    throw new LisaError(`${classesPath}: not valid JSON (${(e as Error).message})`);
  }
  if (!Array.isArray(classes) || classes.length === 0 || !classes.every((c) => typeof c === 'string' && c.length > 0))
    throw new LisaError(`${classesPath}: must be a JSON list of class names`);
  const images: YoloImage[] = [];
  for (const f of readdirSync(join(dir, 'images')).sort()) {
    if (!/\.(jpe?g|png)$/i.test(f)) continue;
    const stem = basename(f, extname(f));
    const labelPath = join(dir, 'labels', `${stem}.txt`);
    const instances: YoloInstance[] = [];
    if (existsSync(labelPath)) {
      if (statSync(labelPath).size > MAX_LABEL_BYTES) throw new LisaError(`${labelPath}: too large for a label file`);
      readFileSync(labelPath, 'utf8')
        .split('\n')
        .forEach((line, i) => {
          const parts = line.trim().split(/\s+/).filter(Boolean);
          if (parts.length === 0) return;
          const where = `${labelPath}:${i + 1}`;
          const cls = Number(parts[0]);
          if (!Number.isInteger(cls) || cls < 0 || cls >= classes.length)
            throw new LisaError(`${where}: class ${parts[0]} is not an index into the ${classes.length} classes`);
          const xy = parts.slice(1).map(Number);
          if (xy.length < 6 || xy.length % 2 !== 0) throw new LisaError(`${where}: a polygon needs at least 3 x y pairs`);
          if (!xy.every((v) => Number.isFinite(v) && v >= 0 && v <= 1))
            throw new LisaError(`${where}: polygon coordinates must be normalised to 0–1`);
          instances.push({ cls, polygon: Array.from({ length: xy.length / 2 }, (_, k) => [xy[2 * k]!, xy[2 * k + 1]!]) });
        });
    }
    images.push({ image: join(dir, 'images', f), stem, instances });
  }
  if (images.length === 0) throw new LisaError(`${dir}/images: no .jpg or .png photos`);
  return { dir, classes: classes as string[], images };
}

/**
 * The union of polygons (normalised coordinates) as a 0/1 mask of height × width: a pixel is in when its centre
 * is inside a polygon (even-odd rule), as coco128-seg's README prescribes.
 */
export function rasterizePolygons(polygons: readonly (readonly [number, number][])[], height: number, width: number): Uint8Array {
  const out = new Uint8Array(height * width);
  const xs: number[] = [];
  for (const poly of polygons) {
    const pts = poly.map(([x, y]) => [x * width, y * height] as const);
    for (let row = 0; row < height; row++) {
      const cy = row + 0.5;
      xs.length = 0;
      for (let k = 0; k < pts.length; k++) {
        const [x0, y0] = pts[k]!,
          [x1, y1] = pts[(k + 1) % pts.length]!;
        if (y0 <= cy === y1 <= cy) continue;
        xs.push(x0 + ((cy - y0) / (y1 - y0)) * (x1 - x0));
      }
      xs.sort((a, b) => a - b);
      for (let k = 0; k + 1 < xs.length; k += 2) {
        // Pixels whose centre c + 0.5 lies in [xs[k], xs[k + 1]).
        const from = Math.max(0, Math.ceil(xs[k]! - 0.5)),
          to = Math.min(width - 1, Math.ceil(xs[k + 1]! - 0.5) - 1);
        for (let c = from; c <= to; c++) out[row * width + c] = 1;
      }
    }
  }
  return out;
}
