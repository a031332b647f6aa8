import { mkdirSync } from 'node:fs';
import { basename, extname, join } from 'node:path';
import sharp from 'sharp';
import type { RgbImage } from '../image/decode.js';
import { maskPng } from '../image/mask-png.js';
import { writeAtomic } from '../io/file.js';
import type { SegmentResult } from '../inference/chat.js';

/** Overlay colours: the first mask in the official red, then distinct hues. */
export const MASK_COLOURS: readonly [number, number, number][] = [
  [255, 0, 0],
  [0, 200, 0],
  [30, 100, 255],
  [255, 200, 0],
  [200, 0, 255],
  [0, 220, 220],
  [255, 120, 0],
  [150, 80, 40],
];

/** One mask as the CLI prints it: `mask 0 (sink): area 1234 px, bbox [x, y, w, h], score 0.973`. */
export function describeMask(m: SegmentResult['masks'][number], i: number): string {
  const label = m.label ? ` (${m.label})` : '';
  return `mask ${i}${label}: area ${m.area} px, bbox [${m.bbox.join(', ')}], score ${m.score.toFixed(3)}`;
}

export function resultName(imagePath: string): string {
  const b = basename(imagePath, extname(imagePath));
  return b.replace(/[^\w.-]/g, '_') || 'image';
}

/** The JSON we print and save: everything a program needs, masks as COCO RLE. */
export function resultJson(
  r: SegmentResult,
  meta: { image: string; width: number; height: number; question: string; model: string; name: string; written?: boolean },
): Record<string, unknown> {
  return {
    image: meta.image,
    width: meta.width,
    height: meta.height,
    question: meta.question,
    text: r.text,
    noTarget: r.noTarget,
    tokens: r.tokens,
    stopped: r.stopped,
    // `file` only when the mask PNGs are written (--out): a name for a file that does not exist misleads.
    masks: r.masks.map((m, i) => ({
      index: i,
      segIndex: m.segIndex,
      ...(meta.written === false ? {} : { file: `${meta.name}_mask_${i}.png` }),
      rle: m.rle,
      bbox: m.bbox,
      area: m.area,
      score: m.score,
      ...(m.label ? { label: m.label } : {}),
    })),
    timings: r.timings,
    model: meta.model,
  };
}

/** Writes `<name>_mask_<i>.png` (0/255), `<name>_overlay.png` (50 % colour per mask) and `<name>.json` into `dir`. */
export async function writeResult(
  dir: string,
  name: string,
  image: RgbImage,
  r: SegmentResult,
  json: Record<string, unknown>,
): Promise<string[]> {
  mkdirSync(dir, { recursive: true });
  const written: string[] = [];
  const { width: w, height: h } = image;
  for (const [i, m] of r.masks.entries()) {
    const png = await maskPng(m.mask, w, h);
    const p = join(dir, `${name}_mask_${i}.png`);
    writeAtomic(p, [png]);
    written.push(p);
  }
  const overlay = Buffer.from(image.data);
  r.masks.forEach((m, i) => {
    const c = MASK_COLOURS[i % MASK_COLOURS.length]!;
    for (let p = 0; p < w * h; p++) {
      if (!m.mask[p]) continue;
      // chat.py: masked pixel = 0.5 * rgb + 0.5 * colour, truncated to uint8.
      for (let k = 0; k < 3; k++) overlay[p * 3 + k] = Math.trunc(image.data[p * 3 + k]! * 0.5 + c[k]! * 0.5);
    }
  });
  const op = join(dir, `${name}_overlay.png`);
  writeAtomic(op, [
    await sharp(overlay, { raw: { width: w, height: h, channels: 3 } })
      .png()
      .toBuffer(),
  ]);
  written.push(op);
  const jp = join(dir, `${name}.json`);
  writeAtomic(jp, [JSON.stringify(json, null, 2) + '\n']);
  written.push(jp);
  return written;
}
