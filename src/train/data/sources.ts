import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, isAbsolute, join, resolve } from 'node:path';
import { LisaError } from '../../errors.js';
import { listReasonSeg, readReasonSegJson } from '../../eval/reasonseg.js';
import type { Conversation } from '../../inference/collate.js';
import { ANSWER_LIST, EXPLANATORY_QUESTION_LIST, pick, questionFor, sampleUpTo } from './templates.js';

/**
 * Where a ground-truth mask comes from: a PNG (non-zero = object), polygons (unioned), a ReasonSeg JSON, or a
 * dataset's own drawing (a class of a label map, a COCO annotation) at the image's size.
 */
export type MaskSpec =
  | { png: string }
  | { polygons: [number, number][][] }
  | { reasonseg: string }
  | { draw: (height: number, width: number) => Promise<Uint8Array> };

/** One image with its conversations; `masks` follow the [SEG] tokens of the answers, in order. */
export interface TrainExample {
  image: string;
  conversations: Conversation[];
  masks: MaskSpec[];
  /** The detector class of each mask (the default model's class loss), when the data knows it. */
  classes?: number[];
  /** Where it came from, for error messages ("data.jsonl:12", "ReasonSeg/train/x.json"). */
  where: string;
}

/** A dataset the trainer samples from: example(i, rand) draws the template choices with `rand`. */
export interface TrainSource {
  readonly name: string;
  readonly length: number;
  example(index: number, rand: () => number): TrainExample | Promise<TrainExample>;
}

/** up to 3 conversations per image (train_ds.py --num_classes_per_sample 3). */
export const NUM_CLASSES_PER_SAMPLE = 3;
const MAX_JSONL_BYTES = 256 * 1024 * 1024;

/** A user question about the image starts with "<image>\n", as LISA's templates do, unless it places <image> itself. */
const withImage = (q: string): string => (q.includes('<image>') ? q : `<image>\n${q}`);

/** A one-turn conversation. */
export const single = (question: string, answer: string): Conversation => ({ turns: [{ question, answer }] });

export const countSeg = (s: string): number => s.split('[SEG]').length - 1;

/**
 * The user data format (JSON Lines, one conversation per line; README "Training data"):
 * `{"image": "photos/a.jpg", "question": "What would keep me dry?", "answer": "[SEG] is the umbrella.",
 *   "masks": ["masks/a_umbrella.png"]}` — `masks` has one entry per [SEG] of the answer, each a mask PNG path or a
 * list of polygons `[[[x, y], …], …]` in pixels; `answer` is optional (one of LISA's answer templates, one mask);
 * paths are relative to the file. Lines about the same image become one example (up to 3 conversations).
 */
export class JsonlSource implements TrainSource {
  readonly name: string;
  private readonly groups: { image: string; lines: { line: number; question: string; answer: string | null; masks: MaskSpec[] }[] }[] = [];

  constructor(readonly path: string) {
    this.name = path;
    let size: number;
    try {
      size = statSync(path).size;
    } catch {
      throw new LisaError(`${path}: no such data file`);
    }
    if (size > MAX_JSONL_BYTES) throw new LisaError(`${path}: ${size} bytes is too large for a data file`);
    const base = dirname(path);
    const rel = (p: string): string => (isAbsolute(p) ? p : resolve(base, p));
    const byImage = new Map<string, (typeof this.groups)[number]>();
    readFileSync(path, 'utf8')
      .split('\n')
      .forEach((text, i) => {
        if (!text.trim()) return;
        const where = `${path}:${i + 1}`;
        let o: unknown;
        try {
          o = JSON.parse(text);
        } catch (e) {
          throw new LisaError(`${where}: not valid JSON (${(e as Error).message})`);
        }
        if (typeof o !== 'object' || o === null || Array.isArray(o))
          throw new LisaError(`${where}: expected an object with "image", "question" and "masks"`);
        const r = o as Record<string, unknown>;
        if (typeof r.image !== 'string' || !r.image) throw new LisaError(`${where}: "image" must be a path string`);
        if (typeof r.question !== 'string' || !r.question.trim()) throw new LisaError(`${where}: "question" must be a non-empty string`);
        if (r.answer !== undefined && typeof r.answer !== 'string') throw new LisaError(`${where}: "answer" must be a string`);
        const masksIn = r.masks ?? [];
        if (!Array.isArray(masksIn)) throw new LisaError(`${where}: "masks" must be a list (one mask PNG path or polygon list per [SEG])`);
        const masks: MaskSpec[] = masksIn.map((m, k) => {
          if (typeof m === 'string') return { png: rel(m) };
          if (
            Array.isArray(m) &&
            m.every(
              (poly) =>
                Array.isArray(poly) && poly.every((pt) => Array.isArray(pt) && pt.length === 2 && pt.every((c) => typeof c === 'number')),
            )
          ) {
            return { polygons: m as [number, number][][] };
          }
          throw new LisaError(`${where}: masks[${k}] must be a PNG path or a list of polygons [[[x, y], …], …]`);
        });
        const image = rel(r.image);
        let g = byImage.get(image);
        if (!g) {
          g = { image, lines: [] };
          byImage.set(image, g);
          this.groups.push(g);
        }
        g.lines.push({ line: i + 1, question: r.question, answer: typeof r.answer === 'string' ? r.answer : null, masks });
      });
    if (this.groups.length === 0) throw new LisaError(`${path}: no samples`);
  }

  get length(): number {
    return this.groups.length;
  }

  example(index: number, rand: () => number): TrainExample {
    const g = this.groups[index]!;
    const lines = sampleUpTo(g.lines, NUM_CLASSES_PER_SAMPLE, rand);
    const conversations = lines.map((l) => single(withImage(l.question), l.answer ?? pick(ANSWER_LIST, rand)));
    return {
      image: g.image,
      conversations,
      masks: lines.flatMap((l) => l.masks),
      where: `${this.path}:${lines.map((l) => l.line).join(',')}`,
    };
  }

  /** Every line as its own example, for --check-data. */
  *allExamples(): Generator<TrainExample> {
    for (const g of this.groups)
      for (const l of g.lines) {
        yield {
          image: g.image,
          conversations: [single(withImage(l.question), l.answer ?? ANSWER_LIST[0]!)],
          masks: l.masks,
          where: `${this.path}:${l.line}`,
        };
      }
  }
}

/**
 * ReasonSegDataset (utils/reason_seg_dataset.py) on `<root>/<split>/*.jpg + .json`: up to 3 of the image's texts,
 * each a conversation (long template for a sentence, short for a phrase) with an answer template and the image's
 * mask (value 1 of get_mask_from_json: ignore regions are background in training). With the explanatory answers
 * (`<root>/explanatory/<split>.json`, train_ds.py --explanatory 0.1) an image listed there gets, with probability
 * p, its explanation alone as the answer and no mask; otherwise, evenly, the plain answer or "[SEG] answer +
 * explanation" to a question that asks for one.
 */
export class ReasonSegSource implements TrainSource {
  readonly name: string;
  private readonly samples: { name: string; image: string; json: string }[];
  private readonly explanations = new Map<string, string>();

  constructor(
    readonly root: string,
    readonly split = 'train',
    readonly explanatory = 0.1,
  ) {
    if (!existsSync(root)) throw new LisaError(`${root}: no such data folder`);
    const listed = listReasonSeg(root, split);
    this.samples = listed.samples;
    this.name = `${listed.dir}`;
    if (this.samples.length === 0) throw new LisaError(`${listed.dir}: no ReasonSeg samples (<name>.jpg with <name>.json)`);
    const ex = [join(root, 'explanatory', `${split}.json`), join(root, 'ReasonSeg', 'explanatory', `${split}.json`)].find((p) =>
      existsSync(p),
    );
    if (ex && explanatory >= 0) {
      let d: unknown;
      try {
        d = JSON.parse(readFileSync(ex, 'utf8'));
      } catch (e) {
        throw new LisaError(`${ex}: not valid JSON (${(e as Error).message})`);
      }
      if (!Array.isArray(d)) throw new LisaError(`${ex}: expected a list of {"image", "query", "outputs"}`);
      for (const e of d as { image?: unknown; outputs?: unknown }[])
        if (typeof e.image === 'string' && typeof e.outputs === 'string') this.explanations.set(e.image, e.outputs);
    }
  }

  get length(): number {
    return this.samples.length;
  }

  example(index: number, rand: () => number): TrainExample {
    const s = this.samples[index]!;
    const ann = readReasonSegJson(s.json);
    const texts = sampleUpTo(ann.text, NUM_CLASSES_PER_SAMPLE, rand);
    const explanation = this.explanations.get(basename(s.image));
    const choice = explanation === undefined ? 0 : rand() < this.explanatory ? 2 : Math.floor(rand() * 2);
    const conversations = texts.map((t) => {
      const question = questionFor(t, ann.isSentence, rand);
      if (choice === 1)
        return single(`<image>\n${t} ${pick(EXPLANATORY_QUESTION_LIST, rand)}`, `${pick(ANSWER_LIST, rand)} ${explanation!}`);
      if (choice === 2) return single(`<image>\n${t}`, explanation!);
      return single(question, pick(ANSWER_LIST, rand));
    });
    const masks: MaskSpec[] = choice === 2 ? [] : texts.map(() => ({ reasonseg: s.json }));
    return { image: s.image, conversations, masks, where: s.json };
  }

  *allExamples(): Generator<TrainExample> {
    const first = (): number => 0; // the first template of each list: every text is checked
    for (let i = 0; i < this.samples.length; i++) yield this.example(i, first);
  }
}
