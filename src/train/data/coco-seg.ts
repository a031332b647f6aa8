import { readYoloSeg, rasterizePolygons, type YoloSegSet } from '../../eval/yolo-seg.js';
import { COCO_KNOWLEDGE, type ClassKnowledge } from './coco-knowledge.js';
import { EXPLANATORY_QUESTION_LIST, LONG_QUESTION_LIST, pick, SHORT_QUESTION_LIST } from './templates.js';
import type { Conversation } from '../../inference/collate.js';
import { single, type MaskSpec, type TrainExample, type TrainSource } from './sources.js';
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

const article = (s: string): string => (/^[aeiou]/i.test(s) ? `an ${s}` : `a ${s}`);

/** What one class offers the question writer. */
interface ClassWords {
  name: string;
  names: string[];
  know: ClassKnowledge | undefined;
  sense: NounSense | null;
}

/** An implicit question (no class name) and the reason an explanatory answer gives. */
function implicitQuestion(w: ClassWords, rand: () => number): { sent: string; reason: string } | null {
  const k = w.know;
  const options: { sent: string; reason: string }[] = [];
  if (k) {
    options.push(
      { sent: `What in this image is used for ${k.use}?`, reason: `it is used for ${k.use}` },
      { sent: `Which object here would someone use for ${k.use}?`, reason: `it is used for ${k.use}` },
      { sent: `What can I use for ${k.use} in this picture?`, reason: `it is used for ${k.use}` },
      { sent: `Find the thing that is usually found ${k.place}.`, reason: `it is usually found ${k.place}` },
      { sent: `Which object looks like ${k.look}?`, reason: `it looks like ${k.look}` },
      { sent: `What here has ${k.parts}?`, reason: `it has ${k.parts}` },
    );
  }
  if (w.sense?.gloss) {
    options.push({ sent: `Which object in this image is ${article(w.sense.gloss)}?`, reason: `it is ${article(w.sense.gloss)}` });
    const hyper = w.sense.hypernym[0];
    if (hyper && k)
      options.push({ sent: `Show me the ${hyper} that is used for ${k.use}.`, reason: `it is ${article(hyper)} for ${k.use}` });
  }
  return options.length ? pick(options, rand) : null;
}

/**
 * Training conversations over a coco128-seg-layout set (the default model's data): per photo, three
 * conversations drawn from LISA's short templates with class names and synonyms, implicit questions written from
 * the knowledge table and WordNet with explanatory answers, questions about two objects at once, and questions
 * about a class the photo lacks, answered without [SEG]. Each [SEG]'s mask is the union of its class's instances.
 */
export class CocoSegSource implements TrainSource {
  readonly name: string;
  readonly set: YoloSegSet;
  private readonly words: ClassWords[];

  constructor(dir: string, wordnet: WordNet | null = WordNet.open()) {
    this.name = `coco_seg:${dir}`;
    this.set = readYoloSeg(dir);
    this.words = this.set.classes.map((name, cls) => {
      const know = COCO_KNOWLEDGE.get(name);
      const sense = wordnet?.noun(name, kindOf(cls)) ?? null;
      // WordNet's own words are left out of the names: its synsets hold Latin names and loose ones ("bathroom" for toilet).
      const names = [...new Set([name, ...(know?.synonyms ?? [])])];
      return { name, names, know, sense };
    });
    wordnet?.close();
  }

  get length(): number {
    return this.set.images.length;
  }

  /** The photo's conversations: a fixed count, each one question, its [SEG] masks and their classes. */
  example(index: number, rand: () => number): TrainExample {
    const img = this.set.images[index]!;
    const present = [...new Set(img.instances.map((i) => i.cls))];
    const absent = this.set.classes.map((_, c) => c).filter((c) => !present.includes(c));
    const conversations: Conversation[] = [];
    const masks: MaskSpec[] = [];
    const classes: number[] = [];
    const maskOf = (cls: number): MaskSpec => ({
      draw: async (h, w) =>
        rasterizePolygons(
          img.instances.filter((i) => i.cls === cls).map((i) => i.polygon),
          h,
          w,
        ),
    });
    while (conversations.length < CONVERSATIONS_PER_IMAGE) {
      const r = rand();
      if (present.length === 0 || r < 0.25) {
        const c = pick(absent, rand);
        const w = this.words[c]!;
        const implicit = rand() < 0.5 ? implicitQuestion(w, rand) : null;
        const q = implicit
          ? pick(LONG_QUESTION_LIST, rand).replace('{sent}', implicit.sent)
          : pick(SHORT_QUESTION_LIST, rand).replace('{class_name}', pick(w.names, rand));
        conversations.push(single(q, absentAnswer(w.name)));
        continue;
      }
      if (r < 0.35 && present.length >= 2) {
        const a = pick(present, rand);
        const b = pick(
          present.filter((c) => c !== a),
          rand,
        );
        const [na, nb] = [pick(this.words[a]!.names, rand), pick(this.words[b]!.names, rand)];
        const q = `<image>\nPlease segment the ${na} and the ${nb} in this image.`;
        conversations.push(single(q, `The ${this.words[a]!.name} is [SEG] and the ${this.words[b]!.name} is [SEG].`));
        masks.push(maskOf(a), maskOf(b));
        classes.push(a, b);
        continue;
      }
      const c = pick(present, rand);
      const w = this.words[c]!;
      const implicit = r >= 0.65 ? implicitQuestion(w, rand) : null;
      if (implicit) {
        const explain = rand() < 0.5;
        // As ReasonSeg's explanatory samples: the sentence, then one of LISA's "explain why" requests.
        conversations.push(
          explain
            ? single(`<image>\n${implicit.sent} ${pick(EXPLANATORY_QUESTION_LIST, rand)}`, `The ${w.name} is [SEG]: ${implicit.reason}.`)
            : single(pick(LONG_QUESTION_LIST, rand).replace('{sent}', implicit.sent), presentAnswer(w.name)),
        );
      } else {
        conversations.push(single(pick(SHORT_QUESTION_LIST, rand).replace('{class_name}', pick(w.names, rand)), presentAnswer(w.name)));
      }
      masks.push(maskOf(c));
      classes.push(c);
    }
    return { image: img.image, conversations, masks, classes, where: `${this.set.dir}/labels/${img.stem}.txt` };
  }
}
