import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { LisaError } from '../errors.js';
import { decodeImage } from '../image/decode.js';
import { listReasonSeg, rasterizeShapes, readReasonSegJson, type ReasonSegAnnotation } from './reasonseg.js';
import { loadRefer, referAnnotations, referMask, REFER_SPLITS } from './refer.js';

export const DATASETS = ['reasonseg', ...Object.keys(REFER_SPLITS)] as const;
export type DatasetName = (typeof DATASETS)[number];

/** One query to score: its text, and its ground truth at the image's size (values 0, 1, 255). */
export interface EvalQuery {
  id: string;
  text: string;
  isSentence: boolean;
  gt(height: number, width: number): Promise<Uint8Array>;
}

/** One image and its queries (the official validation's unit: acc_iou is averaged per image). */
export interface EvalItem {
  id: string;
  image: string;
  queries: EvalQuery[];
  /** Set when the item cannot be evaluated (malformed annotation, missing image): reported, not fatal. */
  error?: string;
}

/** The official validation prompt for a query (`ValDataset`): sentence vs phrase templates, "[SEG]." answer. */
export function validationPrompt(q: Pick<EvalQuery, 'text' | 'isSentence'>): string {
  return q.isSentence
    ? `<image>\n ${q.text} Please output segmentation mask.`
    : `<image>\n What is ${q.text} in this image? Please output segmentation mask.`;
}

/** A ReasonSeg annotation's ground truth (0/1/255): its polygons, or the sanity set's PNG beside the JSON. */
export function reasonSegGt(jsonPath: string, a: ReasonSegAnnotation, h: number, w: number): Promise<Uint8Array> {
  return a.shapes.length || !a.gtPng ? Promise.resolve(rasterizeShapes(a.shapes, h, w)) : pngMask(join(dirname(jsonPath), a.gtPng), h, w);
}

export function loadDataset(dataset: string, root: string, split: string): { items: EvalItem[]; notes: string[] } {
  if (!existsSync(root)) throw new LisaError(`${root}: no such data folder`);
  if (dataset === 'reasonseg') {
    const { samples, missingImages } = listReasonSeg(root, split);
    const items: EvalItem[] = samples.map((s) => {
      try {
        const a = readReasonSegJson(s.json);
        const text = (a.text[0] ?? '').trim();
        if (!text) throw new LisaError(`${s.json}: field "text" has no query`);
        // a.gtPng: the sanity set's extension, a ground-truth PNG (0/1/255) instead of polygons.
        return {
          id: s.name,
          image: s.image,
          queries: [{ id: s.name, text, isSentence: a.isSentence, gt: (h: number, w: number) => reasonSegGt(s.json, a, h, w) }],
        };
      } catch (e) {
        if (!(e instanceof LisaError)) throw e;
        return { id: s.name, image: s.image, queries: [], error: e.message };
      }
    });
    for (const name of missingImages) items.push({ id: name, image: '', queries: [], error: `${name}.json has no image beside it` });
    items.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
    return { items, notes: [] };
  }
  const images = loadRefer(root, dataset, split);
  const anns = referAnnotations(root, dataset);
  const items = images.map((img): EvalItem => ({
    id: String(img.id),
    image: img.file,
    queries: img.queries.map((q, k) => ({
      id: `${img.id}_${k}`,
      text: q.text,
      isSentence: false,
      gt: async (h: number, w: number) => {
        if (h !== img.height || w !== img.width)
          throw new LisaError(`image ${img.file} is ${w}x${h} but instances.json says ${img.width}x${img.height}`);
        return referMask(anns, q, h, w, join(root, dataset));
      },
    })),
  }));
  return { items, notes: [] };
}

/** A mask PNG: 0 background, 1 or any other non-255 value object, 255 ignore. */
async function pngMask(path: string, h: number, w: number): Promise<Uint8Array> {
  const m = await decodeImage(path);
  if (m.width !== w || m.height !== h) throw new LisaError(`${path}: mask is ${m.width}x${m.height} but the image is ${w}x${h}`);
  return Uint8Array.from({ length: w * h }, (_, i) => {
    const v = m.data[i * 3]!;
    return v === 255 ? 255 : v > 0 ? 1 : 0;
  });
}
