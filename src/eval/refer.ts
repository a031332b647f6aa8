import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { LisaError } from '../errors.js';
import { decodeRle } from '../image/mask-encoding.js';
import { pyGlobal, unpickle } from '../io/pickle.js';
import { polygonToCounts } from './coco-polygon.js';

/**
 * refCOCO / refCOCO+ / refCOCOg (the `refer` layout: `<root>/<dataset>/refs(<splitBy>).p` + `instances.json`,
 * images in `<root>/images/mscoco/images/train2014`) and gRefCOCO (`grefs(unc).json`), read as LISA's
 * ValDataset does: one sample per image, every sentence of every ref of it, lower-cased and stripped.
 */

export interface ReferQuery {
  text: string;
  annIds: number[];
  noTarget: boolean;
}
export interface ReferImage {
  id: number;
  file: string;
  width: number;
  height: number;
  queries: ReferQuery[];
}

interface CocoAnn {
  id: number;
  image_id: number;
  segmentation: unknown;
}
interface CocoImage {
  id: number;
  file_name: string;
  width: number;
  height: number;
}

const MAX_BYTES = 2 * 1024 ** 3;

function readJsonFile(path: string): unknown {
  if (!existsSync(path)) throw new LisaError(`${path}: not found`);
  if (statSync(path).size > MAX_BYTES) throw new LisaError(`${path}: too large`);
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new LisaError(`${path}: not valid JSON (${(e as Error).message})`);
  }
}

/** Python objects from the refs pickle as plain JS (dict → object). Refs pickles hold only lists, dicts, strings, numbers. */
function plain(v: unknown): unknown {
  if (v instanceof Map) return Object.fromEntries([...v].map(([k, x]) => [String(k), plain(x)]));
  if (Array.isArray(v)) return v.map(plain);
  return v;
}

export const REFER_SPLITS: Record<string, { splitBy: string; splits: string[] }> = {
  refcoco: { splitBy: 'unc', splits: ['train', 'val', 'testA', 'testB'] },
  'refcoco+': { splitBy: 'unc', splits: ['train', 'val', 'testA', 'testB'] },
  refcocog: { splitBy: 'umd', splits: ['train', 'val', 'test'] },
  refclef: { splitBy: 'unc', splits: ['train', 'val', 'testA', 'testB', 'testC'] },
  grefcoco: { splitBy: 'unc', splits: ['train', 'val', 'testA', 'testB'] },
};

/** REFER.getRefIds(split=…): testA/testB match by letter, "test" by substring, train/val exactly. */
function splitMatches(refSplit: string, split: string): boolean {
  if (['testA', 'testB', 'testC'].includes(split)) return refSplit.includes(split.slice(-1));
  if (split === 'test') return refSplit.includes('test');
  return refSplit === split;
}

export function loadRefer(root: string, dataset: string, split: string): ReferImage[] {
  const spec = REFER_SPLITS[dataset];
  if (!spec) throw new LisaError(`unknown dataset ${dataset} (expected ${Object.keys(REFER_SPLITS).join(', ')})`);
  if (!spec.splits.includes(split)) throw new LisaError(`${dataset} has no split ${split} (expected ${spec.splits.join(', ')})`);
  const dir = join(root, dataset);
  let refs: Record<string, unknown>[];
  if (dataset === 'grefcoco') {
    refs = readJsonFile(join(dir, `grefs(${spec.splitBy}).json`)) as Record<string, unknown>[];
  } else {
    const p = join(dir, `refs(${spec.splitBy}).p`);
    if (!existsSync(p)) throw new LisaError(`${p}: not found (expected the refer layout <data>/${dataset}/refs(${spec.splitBy}).p)`);
    // Refs pickles need no globals; any global is refused.
    refs = plain(unpickle(readFileSync(p), { source: p, globals: new Map([['__none__', pyGlobal('__none__', () => null)]]) })) as Record<
      string,
      unknown
    >[];
  }
  if (!Array.isArray(refs)) throw new LisaError(`${dir}: refs file is not a list`);
  const instances = readJsonFile(join(dir, 'instances.json')) as { images?: CocoImage[]; annotations?: CocoAnn[] };
  if (!Array.isArray(instances.images) || !Array.isArray(instances.annotations))
    throw new LisaError(`${join(dir, 'instances.json')}: expected "images" and "annotations" lists`);
  const images = new Map(instances.images.map((i) => [i.id, i]));
  const byImage = new Map<number, ReferQuery[]>();
  for (const ref of refs) {
    if (!splitMatches(String(ref.split), split)) continue;
    const imageId = Number(ref.image_id);
    const rawAnn = ref.ann_id;
    const annIds = (Array.isArray(rawAnn) ? rawAnn : [rawAnn]).map(Number).filter((a) => a >= 0);
    const noTarget = ref.no_target === true || annIds.length === 0;
    const list = byImage.get(imageId) ?? [];
    for (const s of (ref.sentences as { sent?: unknown }[] | undefined) ?? [])
      list.push({
        text: String(s.sent ?? '')
          .trim()
          .toLowerCase(),
        annIds,
        noTarget,
      });
    byImage.set(imageId, list);
  }
  const out: ReferImage[] = [];
  for (const [id, queries] of [...byImage].sort((a, b) => a[0] - b[0])) {
    const img = images.get(id);
    if (!img) throw new LisaError(`${dir}: image ${id} is referred to but not in instances.json`);
    // refclef's images are the SAIAPR TC-12 photos; the others are COCO train2014 (refer_seg_dataset.py).
    const imageDir = dataset === 'refclef' ? join(root, 'images', 'saiapr_tc-12') : join(root, 'images', 'mscoco', 'images', 'train2014');
    out.push({ id, file: join(imageDir, img.file_name), width: img.width, height: img.height, queries });
  }
  return out;
}

/**
 * A ref's ground truth as the official code builds it: each annotation's segmentation (polygons via
 * frPyObjects, or RLE) decoded and summed over its parts (so overlapping parts give 2, which the metric
 * ignores); several annotations (gRefCOCO) summed too; no target → all zeros.
 */
export function referMask(anns: ReadonlyMap<number, CocoAnn>, q: ReferQuery, h: number, w: number, where: string): Uint8Array {
  const out = new Uint8Array(h * w);
  if (q.noTarget) return out;
  for (const id of q.annIds) {
    const ann = anns.get(id);
    if (!ann) throw new LisaError(`${where}: annotation ${id} not found`);
    const seg = ann.segmentation;
    const add = (counts: string | readonly number[]): void => {
      let m: ReturnType<typeof decodeRle>;
      try {
        m = decodeRle({ size: [h, w], counts });
      } catch (e) {
        throw e instanceof LisaError && !e.message.startsWith(where) ? new LisaError(`${where}: annotation ${id}: ${e.message}`) : e;
      }
      for (let i = 0; i < m.data.length; i++) out[i] = out[i]! + m.data[i]!;
    };
    if (Array.isArray(seg)) {
      for (const poly of seg) {
        if (!Array.isArray(poly) || !poly.every((c) => typeof c === 'number'))
          throw new LisaError(`${where}: annotation ${id} has a malformed polygon`);
        add(polygonToCounts(poly as number[], h, w, `${where}: annotation ${id}`));
      }
    } else if (seg && typeof seg === 'object' && 'counts' in seg) {
      add((seg as { counts: string | number[] }).counts);
    } else throw new LisaError(`${where}: annotation ${id} has no segmentation`);
  }
  return out;
}

export function referAnnotations(root: string, dataset: string): Map<number, CocoAnn> {
  const path = join(root, dataset, 'instances.json');
  const instances = readJsonFile(path) as { annotations?: unknown };
  if (!instances || typeof instances !== 'object' || !Array.isArray(instances.annotations))
    throw new LisaError(`${path}: expected an object with an "annotations" array (COCO instances)`);
  const out = new Map<number, CocoAnn>();
  instances.annotations.forEach((a: unknown, i) => {
    const ann = a as CocoAnn | null;
    if (!ann || typeof ann !== 'object' || !Number.isSafeInteger(ann.id))
      throw new LisaError(`${path}: annotations[${i}] has no integer "id"`);
    out.set(ann.id, ann);
  });
  return out;
}
