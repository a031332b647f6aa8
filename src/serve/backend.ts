import type { SegmentParams } from './fields.js';
import type { ChatTurn, TurnResult } from './service.js';

/**
 * What the HTTP server needs from a model: the model in this process (LisaService) or workers behind a Redis
 * queue (QueueBackend, `lisa serve --queue`). The server's routes, limits and formats are the same for both.
 */
export interface Backend {
  readonly modelName: string;
  /** Requests running or waiting. */
  readonly depth: number;
  readonly cacheBytes: number;
  readonly cacheEntries: number;
  /** False while the backend cannot take work (a queue front end without Redis); absent: always ready. */
  readonly ready?: boolean;
  addImage(bytes: Uint8Array, signal?: AbortSignal): Promise<{ imageId: string; width: number; height: number; encodeMs: number }>;
  segment(p: SegmentParams, signal?: AbortSignal, onText?: (d: string) => void): Promise<TurnResult>;
  turn(p: ChatTurn, signal?: AbortSignal, onText?: (d: string) => void): Promise<TurnResult>;
  close(): Promise<void>;
}
