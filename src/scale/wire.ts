import { decodeRle, type CocoRle } from '../image/mask-encoding.js';
import type { SegmentResult } from '../inference/chat.js';
import type { SegmentParams } from '../serve/fields.js';
import type { ChatTurn, TurnResult } from '../serve/service.js';

/**
 * What travels through Redis between a front end and a worker. Images never do: a job names an image by the
 * SHA-256 of its bytes, stored once under `lisa:image:<hash>` (payloads stay a few hundred bytes).
 */
export type JobData =
  | { kind: 'encode'; requestId: string; imageHash: string }
  | { kind: 'turn'; requestId: string; imageHash: string; params: WireParams; history: ChatTurn['history'] }
  | { kind: 'eval'; imageHash: string; prompts: string[]; protocol: 'teacher-forced' | 'generate'; maxNewTokens?: number };

/** SegmentParams without the image bytes. */
export type WireParams = Omit<SegmentParams, 'image' | 'imageId' | 'stream'>;

export interface WireMask {
  segIndex: number;
  width: number;
  height: number;
  rle: CocoRle;
  bbox: [number, number, number, number];
  area: number;
  score: number;
}

export interface WireTurn {
  result: Omit<SegmentResult, 'masks'> & { masks: WireMask[] };
  width: number;
  height: number;
  /** The worker that answered (it now holds the image and the conversation). */
  worker: string;
}

export type WireEval = { preds: ({ rle: CocoRle; noSeg: boolean } | { error: string })[] };
export type WireEncode = { width: number; height: number; encodeMs: number; worker: string };

/** Events on `lisa:events:<requestId>`: text as generated (per attempt: a retried job starts again), then the end. */
export type WireEvent =
  | { type: 'text'; attempt: string; delta: string }
  | { type: 'done'; value: WireTurn | WireEncode }
  | { type: 'error'; status: number; message: string; field?: string };

export function toWireTurn(t: TurnResult, worker: string): WireTurn {
  const { masks, ...rest } = t.result;
  return {
    result: { ...rest, masks: masks.map(({ mask: _mask, ...m }) => m) },
    width: t.width,
    height: t.height,
    worker,
  };
}

/** Back to the library's shape (mask bitmaps decoded from RLE), so the server formats it as for a local model. */
export function fromWireTurn(w: WireTurn, imageId: string): TurnResult {
  return {
    result: { ...w.result, masks: w.result.masks.map((m) => ({ ...m, mask: decodeRle(m.rle).data })) },
    imageId,
    width: w.width,
    height: w.height,
  };
}

export function toWireParams(p: SegmentParams): WireParams {
  const { image: _i, imageId: _id, stream: _s, ...rest } = p;
  return rest;
}
