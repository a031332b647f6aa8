import { randomUUID } from 'node:crypto';
import { Queue, type JobsOptions } from 'bullmq';
import type { Redis } from 'ioredis';
import { checkImageHeader } from '../image/decode.js';
import { LisaError } from '../errors.js';
import type { Backend } from '../serve/backend.js';
import type { SegmentParams } from '../serve/fields.js';
import { HttpError } from '../serve/http-error.js';
import type { ChatTurn, TurnResult } from '../serve/service.js';
import { connect, KEYS, putImage, redisOptions, reportErrors, SHARED_QUEUE, workerQueue } from './redis.js';
import { fromWireTurn, toWireParams, type JobData, type WireEncode, type WireEvent, type WireTurn } from './wire.js';

/** Retries cover a worker that dies mid-job; a user mistake fails once (UnrecoverableError in the worker). */
export const JOB_OPTIONS: JobsOptions = {
  attempts: 3,
  backoff: { type: 'fixed', delay: 500 },
  removeOnComplete: { age: 3600, count: 10_000 },
  removeOnFail: { age: 24 * 3600 },
};

/**
 * `lisa serve --queue`: a stateless front end. Each request becomes a job; its text and result come back on the
 * request's pub/sub channel (subscribed before the job is added, so nothing is missed). A job about an image goes
 * to the worker that last encoded it while that worker's heartbeat lives (its encoding and conversations are
 * there), else to the shared queue; a worker that dies with jobs in its own queue has them moved back to the
 * shared one by the others.
 */
export class QueueBackend implements Backend {
  private readonly redis: Redis;
  private readonly sub: Redis;
  private readonly shared: Queue;
  private readonly own = new Map<string, Queue>();
  private readonly listeners = new Map<string, (e: WireEvent) => void>();
  private readonly connection: ReturnType<typeof redisOptions>;
  private inflight = 0;

  constructor(
    url: string,
    private readonly opts: { maxInflight: number; maxPixels: number },
    readonly modelName = 'lisa (queue)',
    private readonly log: (s: string) => void = (s) => process.stderr.write(`lisa serve: ${s}\n`),
  ) {
    const connection = (this.connection = redisOptions(url));
    // ioredis reconnects by itself; requests meanwhile wait (or reach their time limit).
    this.redis = connect(connection, this.log);
    this.sub = connect(connection, () => {});
    this.shared = new Queue(SHARED_QUEUE, { connection });
    reportErrors(this.shared, () => {});
    this.sub.on('message', (channel: string, message: string) => {
      try {
        this.listeners.get(channel)?.(JSON.parse(message) as WireEvent);
      } catch {
        /* not ours */
      }
    });
  }

  get depth(): number {
    return this.inflight;
  }

  /** Reachable Redis: /healthz answers 503 while it is not. */
  get ready(): boolean {
    return this.redis.status === 'ready';
  }

  readonly cacheBytes = 0;
  readonly cacheEntries = 0;

  async addImage(bytes: Uint8Array, signal?: AbortSignal): Promise<{ imageId: string; width: number; height: number; encodeMs: number }> {
    await this.checkImage(bytes);
    return this.job(signal, async (requestId) => {
      const imageHash = await putImage(this.redis, bytes);
      return { data: { kind: 'encode', requestId, imageHash }, imageHash };
    }).then(({ value, imageHash }) => {
      const v = value as WireEncode;
      return { imageId: imageHash, width: v.width, height: v.height, encodeMs: v.encodeMs };
    });
  }

  segment(p: SegmentParams, signal?: AbortSignal, onText?: (d: string) => void): Promise<TurnResult> {
    return this.turn({ ...p, history: [] }, signal, onText);
  }

  async turn(p: ChatTurn, signal?: AbortSignal, onText?: (d: string) => void): Promise<TurnResult> {
    if (!p.question.trim() && !p.points?.length && !p.box)
      throw new HttpError(400, 'question: empty (give a question, or points/box for SAM prompts)', 'question');
    if (p.image && p.imageId) throw new HttpError(400, 'image_id: give either an image or an image_id, not both', 'image_id');
    if (!p.image && p.imageId === undefined) throw new HttpError(400, 'image: missing (give an image or an image_id)', 'image');
    if (p.image) await this.checkImage(p.image);
    const { value, imageHash } = await this.job(
      signal,
      async (requestId) => {
        let imageHash: string;
        if (p.image) imageHash = await putImage(this.redis, p.image);
        else {
          imageHash = p.imageId!;
          if (!/^[0-9a-f]{64}$/.test(imageHash) || !(await this.redis.expire(KEYS.image(imageHash), 24 * 3600)))
            throw new HttpError(
              404,
              `image_id: unknown image "${imageHash.slice(0, 80)}" (never uploaded, or expired: upload it again)`,
              'image_id',
            );
        }
        return { data: { kind: 'turn', requestId, imageHash, params: toWireParams(p), history: p.history }, imageHash };
      },
      onText,
    );
    return fromWireTurn(value as WireTurn, imageHash);
  }

  private async checkImage(bytes: Uint8Array): Promise<void> {
    try {
      await checkImageHeader(bytes, 'image', this.opts.maxPixels);
    } catch (e) {
      if (e instanceof LisaError) throw new HttpError(e.message.includes('larger than the limit') ? 413 : 400, e.message, 'image');
      throw e;
    }
  }

  /** The worker holding an image, if it is alive; else the shared queue. */
  private async queueFor(imageHash: string): Promise<Queue> {
    const worker = await this.redis.get(KEYS.affinity(imageHash));
    if (!worker || !(await this.redis.exists(KEYS.worker(worker)))) return this.shared;
    let q = this.own.get(worker);
    if (!q) {
      q = new Queue(workerQueue(worker), { connection: this.connection });
      reportErrors(q, () => {});
      this.own.set(worker, q);
    }
    return q;
  }

  /** Adds a job and waits for its end event, relaying text (once per character, across retried attempts). */
  private async job(
    signal: AbortSignal | undefined,
    make: (requestId: string) => Promise<{ data: JobData; imageHash: string }>,
    onText?: (d: string) => void,
  ): Promise<{ value: unknown; imageHash: string }> {
    if (this.inflight >= this.opts.maxInflight)
      throw new HttpError(429, `the server is busy (${this.inflight} requests in flight); retry in 2 s`, undefined, { 'retry-after': '2' });
    this.inflight++;
    const requestId = randomUUID();
    const channel = KEYS.events(requestId);
    // Every Redis step races the request's signal: with Redis down, commands wait for the reconnect, the request
    // must not (it gets its 504 or its disconnect).
    const stopped = new Promise<never>((_, reject) => {
      if (signal?.aborted) reject(signal.reason);
      signal?.addEventListener('abort', () => reject(signal.reason), { once: true });
    });
    stopped.catch(() => {});
    const step = <T>(p: Promise<T>): Promise<T> => Promise.race([p, stopped]);
    try {
      const { data, imageHash } = await step(make(requestId));
      let sent = 0; // characters relayed so far; a retry regenerates them (greedy or seeded: the same text)
      let attempt = '';
      let seen = 0;
      const done = new Promise<unknown>((resolve, reject) => {
        this.listeners.set(channel, (e) => {
          if (e.type === 'text') {
            if (e.attempt !== attempt) {
              attempt = e.attempt;
              seen = 0;
            }
            const from = Math.max(0, sent - seen);
            seen += e.delta.length;
            if (from < e.delta.length) {
              onText?.(e.delta.slice(from));
              sent += e.delta.length - from;
            }
          } else if (e.type === 'done') resolve(e.value);
          else reject(new HttpError(e.status, e.message, e.field));
        });
        signal?.addEventListener('abort', () => reject(signal.reason), { once: true });
      });
      await step(this.sub.subscribe(channel));
      const queue = await step(this.queueFor(imageHash));
      const job = await step(queue.add(data.kind, data, { ...JOB_OPTIONS, jobId: requestId }));
      const onAbort = (): void => {
        void job.remove().catch(() => this.redis.publish(KEYS.cancel, requestId));
      };
      signal?.addEventListener('abort', onAbort, { once: true });
      try {
        return { value: await done, imageHash };
      } finally {
        signal?.removeEventListener('abort', onAbort);
      }
    } finally {
      this.inflight--;
      this.listeners.delete(channel);
      void this.sub.unsubscribe(channel).catch(() => {});
    }
  }

  async close(): Promise<void> {
    await Promise.all([this.shared.close(), ...[...this.own.values()].map((q) => q.close())]);
    this.sub.disconnect();
    this.redis.disconnect();
  }
}
