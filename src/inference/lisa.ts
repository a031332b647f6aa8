import { defaultModelDir } from '../models/default-model.js';
import { LisaModel, type LisaLoadOptions } from '../models/lisa.js';
import { ChatSession, ImageCache, type ImageInput, type ImageStore, type SegmentOptions, type SegmentResult } from './chat.js';

/**
 * The library's front door: load a LISA checkpoint, ask about images, keep conversations.
 *
 * ```ts
 * const lisa = Lisa.load('LISA-7B-v1', { visionTower: 'clip-vit-large-patch14' });
 * const r = await lisa.segment('kitchen.jpg', 'What here can hold hot soup?');
 * r.text; r.masks[0].rle; r.masks[0].bbox;
 * ```
 */
export class Lisa {
  readonly model: LisaModel;
  /** Encoded images by the hash of their pixels (`image_id` in the server). */
  readonly images: ImageCache;

  private constructor(model: LisaModel, store?: ImageStore) {
    this.model = model;
    this.images = new ImageCache(model, store);
  }

  /**
   * `dir`: a checkpoint folder; omitted, the default model that ships with the package (MODEL.md: 80 COCO
   * classes, not LISA-7B). `imageStore`: where encoded images live (default: an LRU of 2 GiB).
   */
  static load(dir?: string, opts: LisaLoadOptions & { imageStore?: ImageStore } = {}): Lisa {
    const { imageStore, ...modelOpts } = opts;
    return new Lisa(LisaModel.load(dir ?? defaultModelDir(), modelOpts), imageStore);
  }

  /**
   * One question about an image, in a fresh conversation (as the official chat.py). The image's CLIP and
   * SAM encodings are cached, so a follow-up question about the same image skips both encoders.
   */
  async segment(image: ImageInput, question: string, opts: SegmentOptions = {}): Promise<SegmentResult> {
    const chat = this.chat();
    // A prompt the model cannot take is refused before the image is encoded (minutes at full size).
    if (question.trim()) chat.prompt(question, opts);
    const encodeMs = await chat.setImage(image);
    if (!question.trim() && (opts.points?.length || opts.box)) {
      const r = await chat.visualPrompt(opts);
      r.timings.encodeImageMs = encodeMs;
      r.timings.totalMs += encodeMs;
      return r;
    }
    return chat.ask(question, opts, encodeMs);
  }

  /** A conversation that keeps its history (and KV cache) across turns. */
  chat(): ChatSession {
    return new ChatSession(this.model, this.images);
  }

  async close(): Promise<void> {
    await this.model.release();
    this.model.close();
  }
}
