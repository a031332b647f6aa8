import { readYoloSeg, rasterizePolygons, type YoloSegSet } from '../../eval/yolo-seg.js';
import { COCO_KNOWLEDGE, type ClassKnowledge } from './coco-knowledge.js';
import { EXPLANATORY_QUESTION_LIST, LONG_QUESTION_LIST, pick, SHORT_QUESTION_LIST } from './templates.js';
import type { Conversation } from '../../inference/collate.js';
import { type MaskSpec, type TrainExample, type TrainSource } from './sources.js';
import { WordNet, type NounKind, type NounSense } from './wordnet.js';

/** Conversations per image: always this many, so every micro-batch has one shape. */
export const CONVERSATIONS_PER_IMAGE = 3;

/** The answer to a question about a class that is not in the photo: no [SEG]. */
export const absentAnswer = (name: string): string => `The ${name} is not in this image.`;

/**
 * Every answer starts by naming the class ("The sink is …"; LISA's own templates do not): the name is what the
 * question means, and only then is it decided whether the photo has one ("[SEG]" or "not in this image"), so that
 * decision is a lookup of the named class in the image rows, and the hidden state that yields [SEG] follows the
 * name. Users read what was segmented.
 */
const presentAnswer = (name: string): string => `The ${name} is [SEG].`;

/** COCO-80's kinds, for picking the right WordNet sense (person 0, animals 14–23, food 46–55). */
function kindOf(cls: number): NounKind {
  return cls === 0 ? 'person' : cls >= 14 && cls <= 23 ? 'animal' : cls >= 46 && cls <= 55 ? 'food' : 'artifact';
}

/** "a pedal", "an engine"; a gloss that brings its own determiner ("a large vase …") keeps it. */
const article = (s: string): string => (/^(a|an|the|any|one) /i.test(s) ? s : /^[aeiou]/i.test(s) ? `an ${s}` : `a ${s}`);

/** What one class offers the question writer. */
export interface ClassWords {
  name: string;
  names: string[];
  know: ClassKnowledge | undefined;
  sense: NounSense | null;
  /** WordNet's kinds of it whose words are not another class's ("bus" is a kind of car there), with glosses. */
  kinds: { word: string; gloss: string }[];
  /** WordNet's parts of it that are not another class. */
  parts: string[];
}

/** Ways to ask for "the thing that …": the model must read the description, not one sentence frame. */
const WHAT = ['What in this image', 'Which object here', 'What here', 'Which thing in this picture', 'What in the photo'];

/** An implicit question (no class name) and the reason an explanatory answer gives. */
function implicitQuestion(w: ClassWords, rand: () => number): { sent: string; reason: string } | null {
  const k = w.know;
  const what = pick(WHAT, rand);
  const options: { sent: string; reason: string }[] = [];
  if (k) {
    options.push(
      { sent: `${what} is used for ${k.use}?`, reason: `it is used for ${k.use}` },
      { sent: `Which object here would someone use for ${k.use}?`, reason: `it is used for ${k.use}` },
      { sent: `What can I use for ${k.use} in this picture?`, reason: `it is used for ${k.use}` },
      { sent: `Find the thing that is usually found ${k.place}.`, reason: `it is usually found ${k.place}` },
      { sent: `${what} looks like ${k.look}?`, reason: `it looks like ${k.look}` },
      { sent: `${what} has ${k.parts}?`, reason: `it has ${k.parts}` },
    );
  }
  if (w.sense?.gloss) {
    options.push({ sent: `${what} is ${article(w.sense.gloss)}?`, reason: `it is ${article(w.sense.gloss)}` });
    const hyper = w.sense.hypernym[0];
    if (hyper && k)
      options.push({ sent: `Show me the ${hyper} that is used for ${k.use}.`, reason: `it is ${article(hyper)} for ${k.use}` });
  }
  // WordNet's kinds and parts: many more words for the same thing than one table row gives.
  if (w.kinds.length) {
    const kind = pick(w.kinds, rand);
    options.push(
      { sent: `${what} could be ${article(kind.gloss)}?`, reason: `it is ${article(kind.gloss)}` },
      { sent: `${what} might be called ${article(kind.word)}?`, reason: `${article(kind.word)} is a kind of ${w.name}` },
    );
  }
  if (w.parts.length) {
    const part = pick(w.parts, rand);
    options.push({ sent: `${what} has ${article(part)}?`, reason: `it has ${article(part)}` });
  }
  return options.length ? pick(options, rand) : null;
}

/** One question and its answer, with the classes of its [SEG]s in order. */
interface Turn {
  question: string;
  answer: string;
  classes: number[];
}

/** A follow-up question in the same conversation: the image is already in it. */
const followUp = (q: string): string => q.replace('<image>\n', '');

/**
 * Training conversations over a coco128-seg-layout set (the default model's data): per photo, three
 * conversations drawn from LISA's short templates with class names and synonyms, implicit questions written from
 * the knowledge table and WordNet with explanatory answers, questions about two objects at once, and questions
 * about a class the photo lacks, answered without [SEG]. Each [SEG]'s mask is the union of its class's instances.
 */
export class CocoSegSource implements TrainSource {
  readonly name: string;
  readonly set: YoloSegSet;
  /** Per class: its names, knowledge row and WordNet words. */
  readonly words: readonly ClassWords[];

  constructor(dir: string, wordnet: WordNet | null = WordNet.open()) {
    this.name = `coco_seg:${dir}`;
    this.set = readYoloSeg(dir);
    this.words = this.set.classes.map((name, cls) => {
      const know = COCO_KNOWLEDGE.get(name);
      const sense = wordnet?.noun(name, kindOf(cls)) ?? null;
      // WordNet's own words are left out of the names: its synsets hold Latin names and loose ones ("bathroom" for toilet).
      const names = [...new Set([name, ...(know?.synonyms ?? [])])];
      return { name, names, know, sense, kinds: [], parts: [] };
    });
    // A kind or part that is itself a class (or one of its names) would teach the wrong class: leave it out.
    const taken = new Set(this.words.flatMap((w) => w.names));
    for (const w of this.words) {
      const mine = new Set(w.names);
      const free = (word: string): boolean => mine.has(word) || !taken.has(word);
      w.kinds = (w.sense?.hyponyms ?? []).filter((h) => h.gloss && h.words.every(free)).map((h) => ({ word: h.words[0]!, gloss: h.gloss }));
      w.parts = (w.sense?.parts ?? []).filter((p) => !taken.has(p) && !mine.has(p));
    }
    wordnet?.close();
  }

  get length(): number {
    return this.set.images.length;
  }

  /**
   * The photo's conversations: a fixed count, each one question or, a third of the time, a question and a
   * follow-up about another class (as `lisa chat` is used); their [SEG] masks and classes in order.
   */
  example(index: number, rand: () => number): TrainExample {
    const img = this.set.images[index]!;
    const present = [...new Set(img.instances.map((i) => i.cls))];
    const absent = this.set.classes.map((_, c) => c).filter((c) => !present.includes(c));
    const conversations: Conversation[] = [];
    const classes: number[] = [];
    while (conversations.length < CONVERSATIONS_PER_IMAGE) {
      const turns = [this.turn(present, absent, rand)];
      if (rand() < 1 / 3) {
        const next = this.turn(present, absent, rand);
        turns.push({ ...next, question: followUp(next.question) });
      }
      conversations.push({ turns: turns.map(({ question, answer }) => ({ question, answer })) });
      classes.push(...turns.flatMap((t) => t.classes));
    }
    const masks = classes.map((cls): MaskSpec => ({
      draw: async (h, w) =>
        rasterizePolygons(
          img.instances.filter((i) => i.cls === cls).map((i) => i.polygon),
          h,
          w,
        ),
    }));
    return { image: img.image, conversations, masks, classes, where: `${this.set.dir}/labels/${img.stem}.txt` };
  }

  /** One question about the photo: an absent class, two present ones, or one present (by name or implicitly). */
  private turn(present: number[], absent: number[], rand: () => number): Turn {
    const r = rand();
    if (present.length === 0 || r < 0.25) {
      const w = this.words[pick(absent, rand)]!;
      const implicit = rand() < 0.5 ? implicitQuestion(w, rand) : null;
      const question = implicit
        ? pick(LONG_QUESTION_LIST, rand).replace('{sent}', implicit.sent)
        : pick(SHORT_QUESTION_LIST, rand).replace('{class_name}', pick(w.names, rand));
      return { question, answer: absentAnswer(w.name), classes: [] };
    }
    if (r < 0.35 && present.length >= 2) {
      const a = pick(present, rand);
      const b = pick(
        present.filter((c) => c !== a),
        rand,
      );
      const [na, nb] = [pick(this.words[a]!.names, rand), pick(this.words[b]!.names, rand)];
      return {
        question: `<image>\nPlease segment the ${na} and the ${nb} in this image.`,
        answer: `The ${this.words[a]!.name} is [SEG] and the ${this.words[b]!.name} is [SEG].`,
        classes: [a, b],
      };
    }
    const c = pick(present, rand);
    const w = this.words[c]!;
    const implicit = r >= 0.65 ? implicitQuestion(w, rand) : null;
    if (!implicit)
      return {
        question: pick(SHORT_QUESTION_LIST, rand).replace('{class_name}', pick(w.names, rand)),
        answer: presentAnswer(w.name),
        classes: [c],
      };
    // As ReasonSeg's explanatory samples: the sentence, then one of LISA's "explain why" requests.
    return rand() < 0.5
      ? {
          question: `<image>\n${implicit.sent} ${pick(EXPLANATORY_QUESTION_LIST, rand)}`,
          answer: `The ${w.name} is [SEG]: ${implicit.reason}.`,
          classes: [c],
        }
      : { question: pick(LONG_QUESTION_LIST, rand).replace('{sent}', implicit.sent), answer: presentAnswer(w.name), classes: [c] };
  }
}
