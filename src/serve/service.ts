import { createHash } from 'node:crypto';
import { LisaError } from '../errors.js';
import { checkImageHeader, decodeImage } from '../image/decode.js';
import { ByteLru } from '../inference/byte-lru.js';
import { encodedImageBytes, type ChatSession, type EncodedImage, type SegmentOptions, type SegmentResult } from '../inference/chat.js';
import { Lisa } from '../inference/lisa.js';
import type { LisaLoadOptions } from '../models/lisa.js';
import type { SegmentParams } from './fields.js';
import { HttpError } from './http-error.js';
import type { Backend } from './backend.js';
import { InferenceQueue } from './queue.js';

export interface ServiceOptions {
  /** One byte budget for encoded images, their KV prefixes and chat sessions (LRU). */
  cacheBytes: number;
  /** Requests waiting behind the running one before 429. */
  maxQueue: number;
  /** Pixels of one image, checked from its header before decoding. */
  maxPixels: number;
}

/** What the store holds: encoded images and the conversations about them, under one budget. */
type Resident = { kind: 'image'; image: EncodedImage } | { kind: 'chat'; session: ChatSession };

/** A turn of an OpenAI-style conversation: the earlier turns (as sent back by the client) and the new question. */
export interface ChatTurn extends SegmentParams {
  history: { question: string; answer: string }[];
}

export interface TurnResult {
  result: SegmentResult;
  imageId: string;
  width: number;
  height: number;
}

/**
 * The model behind the HTTP API (and, later, a queue worker): images by id, one inference at a time, chat sessions
 * found again by the conversation a client sends back, so a follow-up reuses the KV cache of what it shares.
 */
export class LisaService implements Backend {
  readonly store: ByteLru<Resident>;
  readonly queue: InferenceQueue;
  readonly modelName: string;

  private constructor(
    readonly lisa: Lisa,
    store: ByteLru<Resident>,
    readonly options: ServiceOptions,
    modelName: string,
  ) {
    this.store = store;
    this.queue = new InferenceQueue(options.maxQueue);
    this.modelName = modelName;
  }

  static load(dir: string, load: LisaLoadOptions, options: ServiceOptions): LisaService {
    const store = new ByteLru<Resident>(options.cacheBytes, (r) => (r.kind === 'image' ? encodedImageBytes(r.image) : r.session.bytes));
    const lisa = Lisa.load(dir, {
      ...load,
      imageStore: {
        get: (k) => {
          const r = store.get(`image:${k}`);
          return r?.kind === 'image' ? r.image : undefined;
        },
        set: (k, image) => store.set(`image:${k}`, { kind: 'image', image }),
      },
    });
    return new LisaService(lisa, store, options, dir.replace(/\/+$/, '').split('/').pop() || dir);
  }

  get depth(): number {
    return this.queue.depth;
  }

  get cacheBytes(): number {
    return this.store.bytes;
  }

  get cacheEntries(): number {
    return this.store.size;
  }

  /** Decodes and encodes an image (CLIP + SAM) once; later requests name it by id. */
  async addImage(bytes: Uint8Array, signal?: AbortSignal): Promise<{ imageId: string; width: number; height: number; encodeMs: number }> {
    await this.checked(() => checkImageHeader(bytes, 'image', this.options.maxPixels), 'image');
    return this.queue.run(async () => {
      const { image, encodeMs } = await this.lisa.images.get(await this.decode(bytes, 'image'));
      const [height, width] = image.encoding.originalSize;
      return { imageId: image.key, width, height, encodeMs };
    }, signal);
  }

  /** One question (or SAM prompts) about an image in a fresh conversation, as `Lisa.segment`. */
  async segment(p: SegmentParams, signal?: AbortSignal, onText?: (d: string) => void): Promise<TurnResult> {
    return this.turn({ ...p, history: [] }, signal, onText);
  }

  /** One turn of a conversation; the session that already holds its history (and KV cache) is reused when kept. */
  async turn(p: ChatTurn, signal?: AbortSignal, onText?: (d: string) => void): Promise<TurnResult> {
    if (!p.question.trim() && p.history.length > 0) throw new HttpError(400, 'messages: the last user message has no text', 'messages');
    if (!p.question.trim() && !p.points?.length && !p.box)
      throw new HttpError(400, 'question: empty (give a question, or points/box for SAM prompts)', 'question');
    if (p.answer !== undefined && !p.question.trim()) throw new HttpError(400, 'answer: needs a question', 'answer');
    if (p.image && p.imageId) throw new HttpError(400, 'image_id: give either an image or an image_id, not both', 'image_id');
    // A bad or oversized image is refused at once, not after waiting its turn.
    const bytes = p.image;
    if (bytes) await this.checked(() => checkImageHeader(bytes, 'image', this.options.maxPixels), 'image');
    if (p.imageId !== undefined) this.storedImage(p.imageId);
    return this.queue.run(async () => {
      const { image, encodeMs } = await this.resolveImage(p);
      const key = conversationKey(image.key, p.history);
      let session = this.takeSession(key);
      if (!session) {
        session = this.lisa.chat();
        session.useImage(image);
        session.restore(p.history);
      }
      const opts: SegmentOptions = {
        ...(p.maxNewTokens !== undefined ? { maxNewTokens: p.maxNewTokens } : {}),
        sampling: p.sampling,
        ...(p.answer !== undefined ? { answer: p.answer } : {}),
        ...(p.points ? { points: p.points } : {}),
        ...(p.box ? { box: p.box } : {}),
        ...(p.multimask !== undefined ? { multimask: p.multimask } : {}),
        ...(signal ? { signal } : {}),
        ...(onText ? { onText } : {}),
      };
      let result: SegmentResult;
      if (!p.question.trim()) {
        result = await session.visualPrompt(opts);
        result.timings.encodeImageMs = encodeMs;
        result.timings.totalMs += encodeMs;
      } else {
        result = await session.ask(p.question, opts, encodeMs);
        // Kept under the conversation it now holds, for the client's next turn.
        if (result.stopped !== 'cancelled')
          this.store.set(`chat:${conversationKey(image.key, [...p.history, { question: p.question, answer: result.text }])}`, {
            kind: 'chat',
            session,
          });
      }
      this.store.touch(`image:${image.key}`);
      const [height, width] = image.encoding.originalSize;
      return { result, imageId: image.key, width, height };
    }, signal);
  }

  private storedImage(id: string): EncodedImage {
    const r = this.store.get(`image:${id}`);
    if (r?.kind !== 'image')
      throw new HttpError(404, `image_id: unknown image "${id.slice(0, 80)}" (never uploaded, or evicted: upload it again)`, 'image_id');
    return r.image;
  }

  private takeSession(key: string): ChatSession | undefined {
    const r = this.store.take(`chat:${key}`);
    return r?.kind === 'chat' ? r.session : undefined;
  }

  private async resolveImage(p: SegmentParams): Promise<{ image: EncodedImage; encodeMs: number }> {
    if (p.imageId !== undefined) return { image: this.storedImage(p.imageId), encodeMs: 0 };
    if (!p.image) throw new HttpError(400, 'image: missing (give an image or an image_id)', 'image');
    return this.lisa.images.get(await this.decode(p.image, 'image'));
  }

  private decode(bytes: Uint8Array, field: string): Promise<Awaited<ReturnType<typeof decodeImage>>> {
    return this.checked(() => decodeImage(bytes, field, this.options.maxPixels), field);
  }

  /** An image the library refuses is the client's mistake: 413 when too big, else 400, naming the field. */
  private async checked<T>(f: () => Promise<T>, field: string): Promise<T> {
    try {
      return await f();
    } catch (e) {
      if (e instanceof LisaError) throw new HttpError(e.message.includes('larger than the limit') ? 413 : 400, e.message, field);
      throw e;
    }
  }

  async close(): Promise<void> {
    await this.lisa.close();
  }
}

/** A conversation is found again by its image and the exact turns the client sends back. */
function conversationKey(imageKey: string, history: readonly { question: string; answer: string }[]): string {
  return createHash('sha256').update(imageKey).update(JSON.stringify(history)).digest('hex');
}
