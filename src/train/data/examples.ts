import { existsSync, statSync } from 'node:fs';
import { LisaError } from '../../errors.js';
import { fillPoly, polylines, type Raster } from '../../eval/opencv-raster.js';
import { reasonSegGt } from '../../eval/datasets.js';
import { readReasonSegJson } from '../../eval/reasonseg.js';
import { decodeImage, type RgbImage } from '../../image/decode.js';
import type { LisaModel } from '../../models/lisa.js';
import type { TrainBatch, TrainImage } from '../model-forward.js';
import { collateConversation, padBatch } from '../../inference/collate.js';
import { countSeg, type MaskSpec, type TrainExample } from './sources.js';

/** A mask at the image's size, 0/1. Polygons are drawn as get_mask_from_json draws them (OpenCV-exact). */
export async function materializeMask(spec: MaskSpec, height: number, width: number, where: string): Promise<Uint8Array> {
  if ('png' in spec) {
    if (!existsSync(spec.png)) throw new LisaError(`${where}: mask ${spec.png} does not exist`);
    const m = await decodeImage(spec.png);
    if (m.width !== width || m.height !== height)
      throw new LisaError(`${where}: mask ${spec.png} is ${m.width}x${m.height} but the image is ${width}x${height}`);
    return Uint8Array.from({ length: width * height }, (_, i) => (m.data[i * 3]! > 0 ? 1 : 0));
  }
  if ('polygons' in spec) {
    const img: Raster = { width, height, data: new Uint8Array(width * height) };
    spec.polygons.forEach((poly, k) => {
      if (poly.length < 3) throw new LisaError(`${where}: polygon ${k} has ${poly.length} points (at least 3)`);
      for (const [x, y] of poly) {
        if (!Number.isFinite(x) || !Number.isFinite(y) || x < 0 || y < 0 || x > width || y > height)
          throw new LisaError(`${where}: polygon ${k} point (${x}, ${y}) is outside the ${width}x${height} image`);
      }
      const pts = poly.map(([x, y]) => [Math.trunc(x), Math.trunc(y)] as [number, number]);
      polylines(img, pts, 1);
      fillPoly(img, pts, 1);
    });
    return img.data;
  }
  if ('draw' in spec) return spec.draw(height, width);
  return Uint8Array.from(await reasonSegGt(spec.reasonseg, readReasonSegJson(spec.reasonseg), height, width), (v) => (v === 1 ? 1 : 0));
}

/** [SEG] tokens in an example's answers (one mask each). */
function segCount(ex: TrainExample): number {
  return ex.conversations.reduce((n, c) => n + c.turns.reduce((m, t) => m + countSeg(t.answer), 0), 0);
}

/** Everything wrong with one example, as lines naming its source (empty when it is usable). */
export async function checkExample(ex: TrainExample): Promise<string[]> {
  const problems: string[] = [];
  if (!existsSync(ex.image) || !statSync(ex.image).isFile()) return [`${ex.where}: image ${ex.image} does not exist`];
  let image: RgbImage;
  try {
    image = await decodeImage(ex.image);
  } catch (e) {
    return [`${ex.where}: ${(e as Error).message}`];
  }
  const segs = segCount(ex);
  if (!ex.conversations[0]?.turns[0]?.question.includes('<image>')) problems.push(`${ex.where}: the first question has no <image>`);
  if (segs !== ex.masks.length)
    problems.push(
      segs === 0 && ex.masks.length > 0
        ? `${ex.where}: ${ex.masks.length} mask(s) given but the answer has no [SEG]`
        : `${ex.where}: the answers hold ${segs} [SEG] but ${ex.masks.length} mask(s) are given`,
    );
  for (const [k, spec] of ex.masks.entries()) {
    try {
      const m = await materializeMask(spec, image.height, image.width, ex.where);
      if (!m.some((v) => v !== 0)) problems.push(`${ex.where}: mask ${k} is empty`);
    } catch (e) {
      problems.push((e as Error).message);
    }
  }
  return problems;
}

/**
 * The frozen encoders' outputs per image (CLIP → mm_projector, SAM's image encoder), computed once: LISA trains
 * neither, so every epoch reuses them. Bounded LRU.
 */
export class EncodingCache {
  private readonly map = new Map<string, Promise<Omit<TrainImage, 'gtMasks' | 'numMasks'>>>();
  constructor(
    readonly model: LisaModel,
    readonly capacity = 256,
    /** false: skip SAM's image encoder (a run without mask losses never reads its embeddings). */
    readonly withSam = true,
  ) {}

  get(path: string): Promise<Omit<TrainImage, 'gtMasks' | 'numMasks'>> {
    let e = this.map.get(path);
    if (e) {
      this.map.delete(path);
      this.map.set(path, e);
      return e;
    }
    e = (async () => {
      const enc = await this.model.encodeImage(await decodeImage(path), { sam: this.withSam });
      return {
        projected: enc.projected,
        samEmbeddings: enc.samEmbeddings.data as Float32Array,
        resize: enc.resize,
        originalSize: enc.originalSize,
      };
    })();
    e.catch(() => this.map.delete(path));
    this.map.set(path, e);
    while (this.map.size > this.capacity) this.map.delete(this.map.keys().next().value!);
    return e;
  }
}

/** A micro-batch from examples: conversations collated and padded, images encoded, masks drawn. */
export async function buildBatch(
  model: LisaModel,
  cache: EncodingCache,
  examples: readonly TrainExample[],
  imageRows: number,
): Promise<TrainBatch> {
  const collated = [];
  const offset = [0];
  const images: TrainImage[] = [];
  for (const ex of examples) {
    const enc = await cache.get(ex.image);
    const [h, w] = enc.originalSize;
    const segs = segCount(ex);
    if (segs !== ex.masks.length)
      throw new LisaError(`${ex.where}: the answers hold ${segs} [SEG] but ${ex.masks.length} mask(s) are given`);
    const gt = new Uint8Array(ex.masks.length * h * w);
    for (const [k, spec] of ex.masks.entries()) gt.set(await materializeMask(spec, h, w, ex.where), k * h * w);
    for (const c of ex.conversations) {
      const col = collateConversation(model.tokenizer, c, imageRows, model.config.mmUseImStartEnd);
      // A truncated conversation can lose a [SEG]: the official code then fails its mask-count assert.
      if (col.inputIds.filter((x) => x === model.segTokenIdx).length < c.turns.reduce((n, t) => n + countSeg(t.answer), 0))
        throw new LisaError(
          `${ex.where}: the conversation is longer than the model takes (${col.inputIds.length} tokens) and loses a [SEG]`,
        );
      collated.push(col);
    }
    offset.push(collated.length);
    images.push({ ...enc, gtMasks: gt, numMasks: ex.masks.length, ...(ex.classes ? { segClasses: ex.classes } : {}) });
  }
  return { ...padBatch(collated), offset, images };
}
