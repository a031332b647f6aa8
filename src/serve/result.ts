import { maskPolygons } from '../image/mask-encoding.js';
import { maskPng } from '../image/mask-png.js';
import type { SegmentResult } from '../inference/chat.js';
import type { SegMask } from '../inference/masks.js';
import type { MaskFormat } from './fields.js';
import type { TurnResult } from './service.js';

/** One mask as the API returns it: COCO RLE always (compact, what COCO tools read), plus PNG or polygons if asked. */
export async function maskJson(m: SegMask, index: number, format: MaskFormat): Promise<Record<string, unknown>> {
  const out: Record<string, unknown> = { index, seg_index: m.segIndex, rle: m.rle, bbox: m.bbox, area: m.area, score: m.score };
  if (m.label) out.label = m.label;
  if (format === 'png') out.png = (await maskPng(m.mask, m.width, m.height)).toString('base64');
  if (format === 'polygon') out.polygons = maskPolygons({ width: m.width, height: m.height, data: m.mask });
  return out;
}

export function masksJson(r: SegmentResult, format: MaskFormat): Promise<Record<string, unknown>[]> {
  return Promise.all(r.masks.map((m, i) => maskJson(m, i, format)));
}

export function snakeTimings(t: SegmentResult['timings']): Record<string, number> {
  return Object.fromEntries(Object.entries(t).map(([k, v]) => [k.replace(/[A-Z]/g, (c) => `_${c.toLowerCase()}`), v]));
}

/** The result of /v1/segment: the library's SegmentResult in the API's snake_case. */
export async function segmentJson(t: TurnResult, question: string, format: MaskFormat, model: string): Promise<Record<string, unknown>> {
  const r = t.result;
  return {
    image_id: t.imageId,
    width: t.width,
    height: t.height,
    question,
    text: r.text,
    no_target: r.noTarget,
    tokens: r.tokens,
    stopped: r.stopped,
    masks: await masksJson(r, format),
    timings: snakeTimings(r.timings),
    model,
  };
}
