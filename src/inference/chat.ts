import { createHash } from 'node:crypto';
import { LisaError } from '../errors.js';
import { decodeImage, type RgbImage } from '../image/decode.js';
import { samResizeShape } from '../image/preprocess.js';
import type { ImageEncoding, LisaModel } from '../models/lisa.js';
import type { BoxPrompt, PointPrompt } from '../models/sam/prompt-encoder.js';
import { imageQuestion, llavaV1Prompt, type Message } from '../text/conversation.js';
import { ByteLru } from './byte-lru.js';
import { generate, type SamplingOptions } from './generate.js';
import { llmForward, type KvCache } from './llm.js';
import { toSegMasks, type SegMask } from './masks.js';
import { segHiddenPositions, spliceImage } from './multimodal.js';
import { detectorGuidance } from './class-choice.js';
import { checkContext, imageRows, namedClasses, segmentFromHidden, type VisualTokens } from './pipeline.js';

export type ImageInput = string | Uint8Array | RgbImage;

export interface SegmentOptions {
  /** Default 512, as the official chat. */
  maxNewTokens?: number;
  /** Absent or null: greedy (official). */
  sampling?: SamplingOptions | null;
  /** Streams the answer as it is generated. */
  onText?: (delta: string) => void;
  /** Aborting stops the answer after the current token (`stopped: "cancelled"`); the history keeps what was said. */
  signal?: AbortSignal;
  /** Teacher forcing: masks for this answer's [SEG] tokens, nothing generated (as the official validation). */
  answer?: string;
  /**
   * SAM prompts in original-image pixels; with a question they join each [SEG] as extra sparse tokens (LISA's prompt
   * encoder), alone they are plain SAM.
   */
  points?: PointPrompt[];
  box?: BoxPrompt;
  /** Visual prompts only: pick the best of SAM's 3 multimask outputs (default: for a single point). */
  multimask?: boolean;
}

export interface Timings {
  /** CLIP + SAM encoder; 0 when the image was already encoded. */
  encodeImageMs: number;
  prefillMs: number;
  generateMs: number;
  masksMs: number;
  totalMs: number;
  promptTokens: number;
  newTokens: number;
  /** Prompt positions served from the KV cache of earlier turns. */
  reusedPositions: number;
}

export interface SegmentResult {
  /** The assistant's answer (decoded as transformers 4.31 does, special tokens kept). */
  text: string;
  masks: SegMask[];
  /** No [SEG] in the answer: the model found nothing to segment. */
  noTarget: boolean;
  tokens: number[];
  stopped: 'eos' | 'max_new_tokens' | 'teacher_forced' | 'cancelled';
  timings: Timings;
}

/**
 * An image with both encoders already run, reusable for any number of questions; after the first question
 * it also keeps the KV cache of the prompt up to and including the image, which every new conversation
 * about it starts with.
 */
export interface EncodedImage {
  key: string;
  encoding: ImageEncoding;
  prefix?: { ids: number[]; cache: KvCache };
}

/** What an encoded image holds in memory: pixels, encoder outputs and its prompt-prefix KV cache. */
export function encodedImageBytes(img: EncodedImage): number {
  const e = img.encoding;
  const arrays = [e.image.data, e.clipPixels, e.samResized.data, e.clipFeatures, e.projected, e.samEmbeddings.data, e.clipHiddenStates];
  return arrays.reduce((n, a) => n + (a ? (a as ArrayBufferView).byteLength : 0), 0) + (img.prefix?.cache.bytes ?? 0);
}

/** Where encoded images are kept: the library's own LRU, or a server's store shared with its chat sessions. */
export interface ImageStore {
  get(key: string): EncodedImage | undefined;
  set(key: string, image: EncodedImage): void;
}

/**
 * SAM prompts must lie on the image (original pixels); `names` are what the caller calls them in messages (the CLI's
 * flags), so a command can check before minutes of encoding and the library says the same.
 */
export function checkPrompts(
  points: readonly PointPrompt[],
  box: BoxPrompt | undefined,
  w: number,
  h: number,
  names = { point: 'point', box: 'box' },
): void {
  for (const p of points)
    if (!(p.x >= 0 && p.x < w && p.y >= 0 && p.y < h)) throw new LisaError(`${names.point} ${p.x},${p.y} is outside the ${w}x${h} image`);
  const b = box;
  if (b && !(b.x1 < b.x2 && b.y1 < b.y2)) throw new LisaError(`${names.box} ${b.x1},${b.y1},${b.x2},${b.y2} must have x1 < x2 and y1 < y2`);
  if (b && !(b.x1 >= 0 && b.y1 >= 0 && b.x2 <= w && b.y2 <= h))
    throw new LisaError(`${names.box} ${b.x1},${b.y1},${b.x2},${b.y2} is outside the ${w}x${h} image`);
}

/** The library's default: images (with their KV prefixes) up to 2 GiB, least recently used evicted first. */
export const DEFAULT_IMAGE_CACHE_BYTES = 2 * 1024 ** 3;

function now(): number {
  return performance.now();
}

/**
 * Decodes, checks and encodes images, remembering them by the hash of their pixels so follow-up questions skip CLIP
 * and SAM.
 */
export class ImageCache {
  constructor(
    private readonly model: LisaModel,
    readonly store: ImageStore = new ByteLru<EncodedImage>(DEFAULT_IMAGE_CACHE_BYTES, encodedImageBytes),
  ) {}

  async get(input: ImageInput): Promise<{ image: EncodedImage; encodeMs: number }> {
    const rgb = typeof input === 'string' || input instanceof Uint8Array ? await decodeImage(input) : input;
    if (rgb.width < 1 || rgb.height < 1 || rgb.data.length !== rgb.width * rgb.height * 3)
      throw new LisaError(`image must be non-empty 8-bit RGB, got ${rgb.width}x${rgb.height} with ${rgb.data.length} bytes`);
    const key = createHash('sha256').update(rgb.data).update(`${rgb.width}x${rgb.height}`).digest('hex');
    const hit = this.store.get(key);
    if (hit) return { image: hit, encodeMs: 0 };
    const t = now();
    const image = { key, encoding: await this.model.encodeImage(rgb) };
    this.store.set(key, image);
    return { image, encodeMs: now() - t };
  }
}

/**
 * A conversation about one image, in the llava_v1 template. Unlike the official chat.py (which forgets every
 * turn), the history is kept; each turn reuses the KV cache of the prompt prefix it shares with the last one,
 * and only the [SEG] tokens generated in this turn give masks (the official evaluate re-scans the whole
 * sequence, prompt included).
 */
export class ChatSession {
  readonly messages: Message[] = [];
  private image: EncodedImage | null = null;
  private cache: KvCache | null = null;
  private cachedIds: number[] = [];

  constructor(
    private readonly model: LisaModel,
    private readonly images: ImageCache,
  ) {}

  get hasImage(): boolean {
    return this.image !== null;
  }

  /** Switches to a new image and clears the history. */
  async setImage(input: ImageInput): Promise<number> {
    const { image, encodeMs } = await this.images.get(input);
    this.useImage(image);
    return encodeMs;
  }

  /** Switches to an image encoded earlier (a server's `image_id`) and clears the history. */
  useImage(image: EncodedImage): void {
    this.image = image;
    this.reset();
  }

  get imageKey(): string | undefined {
    return this.image?.key;
  }

  /**
   * Replaces the history with earlier turns (an OpenAI-style client sends the whole conversation each time). The KV
   * cache is kept: the next turn reuses whatever prefix it still shares with the new history.
   */
  restore(turns: readonly { question: string; answer: string }[]): void {
    this.messages.length = 0;
    turns.forEach((t, i) => {
      const content = i === 0 ? imageQuestion(t.question, this.model.config.mmUseImStartEnd) : t.question;
      this.messages.push({ role: 'USER', content }, { role: 'ASSISTANT', content: t.answer });
    });
  }

  /** Bytes of this conversation's KV cache (the image is counted where it is stored). */
  get bytes(): number {
    return this.cache?.bytes ?? 0;
  }

  /** Clears the history; the image's prompt-prefix cache (if any) is kept, as it does not depend on it. */
  reset(): void {
    this.messages.length = 0;
    this.cache = this.image?.prefix?.cache ?? null;
    this.cachedIds = this.image?.prefix?.ids ?? [];
  }

  /**
   * The next turn's prompt (the history, the question — with the image on the first turn — and the answer slot or
   * the teacher-forced answer) as ids, checked against the model's context length.
   */
  prompt(question: string, opts: Pick<SegmentOptions, 'answer'> = {}): { user: Message; ids: number[] } {
    const model = this.model;
    const user: Message = {
      role: 'USER',
      content: this.messages.length === 0 ? imageQuestion(question, model.config.mmUseImStartEnd) : question,
    };
    const ids = model.tokenizer.encodeWithImage(llavaV1Prompt([...this.messages, user, { role: 'ASSISTANT', content: opts.answer ?? '' }]));
    checkContext(model, ids.length - 1 + imageRows(model), ids.length, this.messages.length > 0);
    return { user, ids };
  }

  async ask(question: string, opts: SegmentOptions = {}, encodeMs = 0): Promise<SegmentResult> {
    const t0 = now();
    if (!this.image) throw new LisaError('no image: give one before asking (chat sessions are about an image)');
    if (!question.trim()) throw new LisaError('the question is empty');
    const model = this.model,
      enc = this.image.encoding,
      tok = model.tokenizer;
    const first = this.messages.length === 0;
    const teacher = opts.answer !== undefined;
    const { user, ids } = this.prompt(question, opts);
    const rows = imageRows(model);
    const H = model.config.llama.hiddenSize;
    const spliced = spliceImage(ids, (x) => model.embedTokens(x), enc.projected, rows, H);
    const toSpliced = (k: number): number => (k > spliced.imageStart ? k + rows - 1 : k);
    // Reuse the KV cache for the longest shared prefix (never splitting the image).
    let common = 0;
    while (common < this.cachedIds.length && common < ids.length - 1 && this.cachedIds[common] === ids[common]) common++;
    if (common === spliced.imageStart) common = Math.max(0, common - 1);
    const reuse = this.cache && common > 0 ? toSpliced(common) : 0;
    const past = reuse > 0 ? this.cache!.truncate(reuse) : undefined;
    const t1 = now();
    const prefill = await llmForward(model.llm, spliced.embeds.subarray(reuse * H), spliced.length - reuse, past, false, 'last');
    const t2 = now();
    let tokens: number[] = [],
      segHidden = new Float32Array(0),
      segIndexes: number[] = [];
    let stopped: SegmentResult['stopped'] = 'teacher_forced';
    if (teacher) {
      // [SEG]s of the given answer: positions after the prompt part, the hidden state before each.
      const promptIds = tok.encodeWithImage(llavaV1Prompt([...this.messages, user, { role: 'ASSISTANT', content: '' }])).length;
      const positions = segHiddenPositions(ids, model.segTokenIdx, rows).filter((p) => p - reuse >= 0 && p >= toSpliced(promptIds) - 1);
      segHidden = new Float32Array(positions.length * H);
      positions.forEach((p, i) => segHidden.set(prefill.hidden.subarray((p - reuse) * H, (p - reuse + 1) * H), i * H));
      segIndexes = positions.map((_, i) => i);
      tokens = ids.slice(promptIds);
      this.cache = prefill.cache;
      this.cachedIds = ids;
    } else {
      // Streaming: re-decode the answer so far and emit what is new (held back mid-character).
      let emitted = '';
      const streamed: number[] = [];
      const onText = opts.onText;
      const gen = await generate(model.llm, prefill, spliced.length - reuse, {
        // No further than the model's positions: the answer stops there (max_new_tokens).
        maxNewTokens: Math.min(opts.maxNewTokens ?? 512, model.config.llama.maxPositionEmbeddings - spliced.length),
        sampling: opts.sampling ?? null,
        ...(await detectorGuidance(model, this.image!.encoding, prefill, spliced.length - reuse)),
        ...(opts.signal ? { signal: opts.signal } : {}),
        ...(onText
          ? {
              onToken: (id: number): void => {
                if (id === model.config.llama.eosTokenId) return;
                streamed.push(id);
                const text = tok.decode(streamed).trimStart();
                if (!text.endsWith('\uFFFD') && text.startsWith(emitted) && text.length > emitted.length) {
                  onText(text.slice(emitted.length));
                  emitted = text;
                }
              },
            }
          : {}),
      });
      tokens = gen.tokens;
      stopped = gen.stopped;
      tokens.forEach((id, i) => {
        if (id === model.segTokenIdx) segIndexes.push(i);
      });
      segHidden = new Float32Array(segIndexes.length * H);
      segIndexes.forEach((i, j) => segHidden.set(gen.producerHidden.subarray(i * H, (i + 1) * H), j * H));
      segIndexes = segIndexes.map((_, j) => j);
      this.cache = gen.cache;
      this.cachedIds = [...ids, ...tokens.slice(0, -1)];
    }
    // Remember the prompt through the image (system, "USER:", <im_start>, image rows, <im_end>) for new conversations.
    if (first && !this.image.prefix && this.cache) {
      const end = spliced.imageStart + (ids[spliced.imageStart + 1] === tok.added.get('<im_end>') ? 2 : 1);
      this.image.prefix = { ids: ids.slice(0, end), cache: this.cache.truncate(toSpliced(end)) };
    }
    const t3 = now();
    const answerIds = tokens.filter((x) => x !== model.config.llama.eosTokenId);
    const text = teacher ? opts.answer! : tok.decode(answerIds).trim();
    this.messages.push(user, { role: 'ASSISTANT', content: text });
    const masks = await this.masksFor(segHidden, segIndexes, opts, namedClasses(model, tokens));
    const t4 = now();
    return {
      text,
      masks,
      noTarget: segIndexes.length === 0,
      tokens,
      stopped,
      timings: {
        encodeImageMs: encodeMs,
        prefillMs: t2 - t1,
        generateMs: t3 - t2,
        masksMs: t4 - t3,
        totalMs: t4 - t0 + encodeMs,
        promptTokens: spliced.length,
        newTokens: teacher ? 0 : tokens.length,
        reusedPositions: reuse,
      },
    };
  }

  /** [SEG] hidden states (plus any point/box prompts) → SAM → thresholded masks at the original size. */
  private async masksFor(
    segHidden: Float32Array,
    segIndexes: number[],
    opts: SegmentOptions,
    named: (number | null)[] = [],
  ): Promise<SegMask[]> {
    if (segIndexes.length === 0) return [];
    const enc = this.image!.encoding;
    const seg = await segmentFromHidden(this.model, enc, segHidden, segIndexes.length, this.visualTokens(opts), false, named);
    const masks = toSegMasks(seg.predMasks, seg.iouPredictions, segIndexes);
    const names = this.model.config.towers?.vision.classes;
    if (names && seg.segClasses) masks.forEach((m, i) => (m.label = names[seg.segClasses![i]!]));
    return masks;
  }

  private visualTokens(opts: SegmentOptions): VisualTokens {
    const enc = this.image!.encoding;
    const [oh, ow] = enc.originalSize;
    const [nh, nw] = samResizeShape(oh, ow, this.model.samConfig.imgSize);
    const sx = nw / ow,
      sy = nh / oh;
    checkPrompts(opts.points ?? [], opts.box, ow, oh);
    const points = (opts.points ?? []).map((p) => ({ x: p.x * sx, y: p.y * sy, label: p.label }));
    const b = opts.box;
    if (points.length === 0 && !b) return { tokens: 0, data: new Float32Array(0) };
    return this.model.sam.promptEncoder.embedPrompts(points, b ? { x1: b.x1 * sx, y1: b.y1 * sy, x2: b.x2 * sx, y2: b.y2 * sy } : null);
  }

  /** SAM with points and/or a box only (no question): one mask. */
  async visualPrompt(opts: SegmentOptions): Promise<SegmentResult> {
    const t0 = now();
    if (!this.image) throw new LisaError('no image given');
    const visual = this.visualTokens(opts);
    if (visual.tokens === 0) throw new LisaError('give a question, or --point/--box prompts for SAM');
    const multimask = opts.multimask ?? ((opts.points?.length ?? 0) === 1 && !opts.box);
    const seg = await segmentFromHidden(this.model, this.image.encoding, new Float32Array(0), 0, visual, multimask);
    const masks = toSegMasks(seg.predMasks, seg.iouPredictions, [-1]);
    const t = now() - t0;
    return {
      text: '',
      masks,
      noTarget: false,
      tokens: [],
      stopped: 'teacher_forced',
      timings: { encodeImageMs: 0, prefillMs: 0, generateMs: 0, masksMs: t, totalMs: t, promptTokens: 0, newTokens: 0, reusedPositions: 0 },
    };
  }
}
