import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { basename, join } from 'node:path';
import { LisaError } from '../../errors.js';
import { loadRefer, referAnnotations, referMask, REFER_SPLITS } from '../../eval/refer.js';
import { decodeImage } from '../../image/decode.js';
import { decodeRle } from '../../image/mask-encoding.js';
import { polygonToMask } from '../../eval/coco-polygon.js';
import type { Conversation } from '../../inference/collate.js';
import { ADE20K_CLASSES, COCOSTUFF_CLASSES } from './classes.js';
import { NUM_CLASSES_PER_SAMPLE, single, type MaskSpec, type TrainExample, type TrainSource } from './sources.js';
import { ANSWER_LIST, pick, questionFor, sampleUpTo } from './templates.js';

/**
 * LISA's other training data (utils/sem_seg_dataset.py, refer_seg_dataset.py, vqa_dataset.py), read from the
 * official `--dataset_dir` layout. Each gives examples as the official __getitem__ builds them: up to 3 classes or
 * sentences per image, each a one-turn conversation with a short-question template and an answer template.
 */

const MAX_JSON_BYTES = 2 * 1024 ** 3;
function readJson(path: string): unknown {
  if (!existsSync(path)) throw new LisaError(`${path}: not found`);
  if (statSync(path).size > MAX_JSON_BYTES) throw new LisaError(`${path}: too large`);
  try {
    return JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new LisaError(`${path}: not valid JSON (${(e as Error).message})`);
  }
}
const list = (dir: string, ext: string): string[] => {
  if (!existsSync(dir)) throw new LisaError(`${dir}: no such folder`);
  return readdirSync(dir)
    .filter((f) => f.endsWith(ext))
    .sort()
    .map((f) => join(dir, f));
};

/** ADE20K: 0 → ignore, then label − 1 (150 classes). */
const ade20kLabel = (v: number): number => (v === 0 ? 255 : v - 1 === 254 ? 255 : v - 1);
/** COCO-Stuff: the 28 classes whose name has a "-" (wall-other, floor-wood, …) are ignored. */
const cocostuffLabel = (v: number): number => (v < COCOSTUFF_CLASSES.length && COCOSTUFF_CLASSES[v]!.includes('-') ? 255 : v);

/**
 * ADE20K, COCO-Stuff and Mapillary: label PNGs; up to 3 of the image's classes (ignore 255 excluded), each
 * "Can you segment the {class} …?" → an answer template, mask = label == class.
 */
export class LabelMapSource implements TrainSource {
  readonly name: string;
  private readonly pairs: { image: string; label: string }[];
  private readonly classes: readonly string[];
  private readonly transform: (v: number) => number;

  constructor(
    readonly root: string,
    readonly kind: 'ade20k' | 'cocostuff' | 'mapillary',
  ) {
    this.name = `${kind}:${root}`;
    if (kind === 'ade20k') {
      this.pairs = list(join(root, 'ade20k', 'images', 'training'), '.jpg').map((image) => ({
        image,
        label: image.replace(/\.jpg$/, '.png').replace('/images/', '/annotations/'),
      }));
      this.classes = ADE20K_CLASSES;
      this.transform = ade20kLabel;
    } else if (kind === 'cocostuff') {
      this.pairs = list(join(root, 'cocostuff', 'train2017'), '.png').map((label) => ({
        label,
        image: label.replace(/\.png$/, '.jpg').replace('/cocostuff/', '/coco/'),
      }));
      this.classes = COCOSTUFF_CLASSES;
      this.transform = cocostuffLabel;
    } else {
      const cfg = readJson(join(root, 'mapillary', 'config_v2.0.json')) as { labels?: { readable?: string }[] };
      if (!Array.isArray(cfg.labels)) throw new LisaError(`${root}/mapillary/config_v2.0.json: no "labels" list`);
      this.classes = cfg.labels.map((l) => String(l.readable ?? '').toLowerCase());
      this.pairs = list(join(root, 'mapillary', 'training', 'v2.0', 'labels'), '.png').map((label) => ({
        label,
        image: label.replace(/\.png$/, '.jpg').replace('v2.0/labels', 'images'),
      }));
      this.transform = (v) => v;
    }
    if (this.pairs.length === 0) throw new LisaError(`${this.name}: no images`);
  }

  get length(): number {
    return this.pairs.length;
  }

  /** The label map is read here: its classes decide the questions, and the masks are cut from it. */
  async example(index: number, rand: () => number): Promise<TrainExample> {
    const { image, label } = this.pairs[index]!;
    const m = await decodeImage(label);
    const values = Uint8Array.from({ length: m.width * m.height }, (_, i) => this.transform(m.data[i * 3]!));
    const present = [...new Set(values)].filter((c) => c !== 255 && c < this.classes.length).sort((a, b) => a - b);
    const picked = sampleUpTo(present, NUM_CLASSES_PER_SAMPLE, rand);
    const conversations = picked.map((c) => single(questionFor(this.classes[c]!, false, rand), pick(ANSWER_LIST, rand)));
    const masks: MaskSpec[] = picked.map((c) => ({
      draw: (h, w) => {
        if (m.width !== w || m.height !== h) throw new LisaError(`${label}: label is ${m.width}x${m.height} but the image is ${w}x${h}`);
        return Promise.resolve(Uint8Array.from(values, (v) => (v === c ? 1 : 0)));
      },
    }));
    return { image, conversations, masks, where: label };
  }
}

/**
 * PACO-LVIS and PASCAL-Part (COCO-format JSON): up to 3 of the image's annotations; "obj:part" categories
 * become "obj part" or "the part of the obj" (p = 0.5), names cut at "_("; masks from the annotations.
 */
export class CocoPartSource implements TrainSource {
  readonly name: string;
  private readonly images: { id: number; file: string; width: number; height: number }[] = [];
  private readonly anns = new Map<number, { category_id: number; segmentation: unknown }[]>();
  private readonly names = new Map<number, string | [string, string]>();

  constructor(
    readonly root: string,
    readonly kind: 'paco_lvis' | 'pascal_part',
  ) {
    this.name = `${kind}:${root}`;
    const json =
      kind === 'paco_lvis'
        ? join(root, 'vlpart', 'paco', 'annotations', 'paco_lvis_v1_train.json')
        : join(root, 'vlpart', 'pascal_part', 'train.json');
    const d = readJson(json) as {
      images?: { id: number; file_name: string; width: number; height: number }[];
      annotations?: { image_id: number; category_id: number; segmentation: unknown }[];
      categories?: { id: number; name: string }[];
    };
    if (!Array.isArray(d.images) || !Array.isArray(d.annotations) || !Array.isArray(d.categories))
      throw new LisaError(`${json}: expected COCO "images", "annotations" and "categories"`);
    const cut = (s: string): string => s.split('_(')[0]!;
    for (const c of d.categories) {
      const parts = c.name.trim().split(':');
      this.names.set(c.id, parts.length === 1 ? cut(parts[0]!) : [cut(parts[0]!), cut(parts[1]!)]);
    }
    for (const a of d.annotations) {
      let l = this.anns.get(a.image_id);
      if (!l) {
        l = [];
        this.anns.set(a.image_id, l);
      }
      l.push(a);
    }
    for (const im of d.images) {
      if (!this.anns.get(im.id)?.length) continue; // the official code re-draws an image without annotations
      const file =
        kind === 'pascal_part'
          ? join(root, 'vlpart', 'pascal_part', 'VOCdevkit', 'VOC2010', 'JPEGImages', im.file_name)
          : join(root, 'coco', im.file_name);
      this.images.push({ id: im.id, file, width: im.width, height: im.height });
    }
    if (this.images.length === 0) throw new LisaError(`${json}: no annotated images`);
  }

  get length(): number {
    return this.images.length;
  }

  example(index: number, rand: () => number): TrainExample {
    const im = this.images[index]!;
    const anns = sampleUpTo(this.anns.get(im.id)!, NUM_CLASSES_PER_SAMPLE, rand);
    const conversations: Conversation[] = anns.map((a) => {
      const n = this.names.get(a.category_id) ?? 'object';
      const name = typeof n === 'string' ? n : rand() < 0.5 ? `${n[0]} ${n[1]}` : `the ${n[1]} of the ${n[0]}`;
      return single(questionFor(name, false, rand), pick(ANSWER_LIST, rand));
    });
    const masks: MaskSpec[] = anns.map((a) => ({ draw: (h, w) => Promise.resolve(annToMask(a.segmentation, h, w, im.file)) }));
    return { image: im.file, conversations, masks, where: `${this.name}:${im.id}` };
  }
}

/** pycocotools annToMask: polygons (unioned) or RLE (compressed or not). */
function annToMask(seg: unknown, h: number, w: number, where: string): Uint8Array {
  if (Array.isArray(seg)) {
    const out = new Uint8Array(h * w);
    for (const poly of seg as number[][]) {
      const m = polygonToMask(poly, h, w, where);
      for (let i = 0; i < out.length; i++) out[i] = out[i]! | m.data[i]!;
    }
    return out;
  }
  if (seg && typeof seg === 'object' && 'counts' in seg && 'size' in seg)
    return decodeRle(seg as { size: [number, number]; counts: string | number[] }).data;
  throw new LisaError(`${where}: annotation segmentation is neither polygons nor RLE`);
}

/** refCOCO/+/g and refclef (train split): up to 3 of the image's sentences, each with its referred mask. */
export class ReferSegSource implements TrainSource {
  readonly name: string;
  private readonly images: ReturnType<typeof loadRefer>;
  private readonly anns: ReturnType<typeof referAnnotations>;

  constructor(
    readonly root: string,
    readonly dataset: string,
  ) {
    if (!REFER_SPLITS[dataset])
      throw new LisaError(`refer data: unknown dataset ${dataset} (expected ${Object.keys(REFER_SPLITS).join(', ')})`);
    this.name = `${dataset}:${root}`;
    this.images = loadRefer(root, dataset, 'train').filter((im) => im.queries.some((q) => !q.noTarget));
    this.anns = referAnnotations(root, dataset);
    if (this.images.length === 0) throw new LisaError(`${this.name}: no training images`);
  }

  get length(): number {
    return this.images.length;
  }

  example(index: number, rand: () => number): TrainExample {
    const im = this.images[index]!;
    const qs = sampleUpTo(im.queries, NUM_CLASSES_PER_SAMPLE, rand);
    return {
      image: im.file,
      conversations: qs.map((q) => single(questionFor(q.text, false, rand), pick(ANSWER_LIST, rand))),
      masks: qs.map((q) => ({ draw: (h, w) => Promise.resolve(referMask(this.anns, q, h, w, im.file)) })),
      where: `${this.name}:${im.id}`,
    };
  }
}

/**
 * LLaVA-Instruct-150k (vqa_dataset.py): the whole multi-turn conversation, <image> moved to the front of the
 * first human turn, no masks (text loss only). Images in `<root>/coco/train2017`.
 */
export class VqaSource implements TrainSource {
  readonly name: string;
  private readonly items: { image: string; conv: Conversation }[] = [];

  constructor(
    readonly root: string,
    json = join(root, 'llava_dataset', 'llava_instruct_150k.json'),
  ) {
    this.name = `vqa:${json}`;
    const d = readJson(json);
    if (!Array.isArray(d)) throw new LisaError(`${json}: expected a list of conversations`);
    for (const [i, item] of (d as { image?: string; conversations?: { from: string; value: string }[] }[]).entries()) {
      if (typeof item.image !== 'string' || !Array.isArray(item.conversations))
        throw new LisaError(`${json}[${i}]: needs "image" and "conversations"`);
      let turns = item.conversations;
      if (turns[0]?.from !== 'human') turns = turns.slice(1);
      const pairs: Conversation['turns'] = [];
      for (let k = 0; k + 1 < turns.length; k += 2) {
        let q = turns[k]!.value;
        if (q.includes('<image>')) q = `<image>\n${q.replace('<image>', '').trim()}`.trim();
        pairs.push({ question: q, answer: turns[k + 1]!.value });
      }
      if (!pairs.length || !pairs[0]!.question.startsWith('<image>')) continue;
      this.items.push({ image: join(root, 'coco', 'train2017', basename(item.image)), conv: { turns: pairs } });
    }
    if (this.items.length === 0) throw new LisaError(`${json}: no conversations with an image`);
  }

  get length(): number {
    return this.items.length;
  }

  example(index: number): TrainExample {
    const it = this.items[index]!;
    return { image: it.image, conversations: [it.conv], masks: [], where: `${this.name}[${index}]` };
  }
}
