import { HttpError } from './http-error.js';

interface Waiting {
  start: () => void;
  cancel: (e: unknown) => void;
}

/**
 * One inference at a time per model (two would only split the same cores between them, each twice as slow),
 * behind a bounded wait list: past it, a request is refused at once with 429 and a Retry-After estimated from
 * recent job times. A waiting request whose client went away leaves the list.
 */
export class InferenceQueue {
  private running = false;
  private readonly waiting: Waiting[] = [];
  private meanMs = 1000;

  constructor(readonly maxWaiting: number) {}

  /** Jobs running or waiting. */
  get depth(): number {
    return this.waiting.length + (this.running ? 1 : 0);
  }

  async run<T>(job: () => Promise<T>, signal?: AbortSignal): Promise<T> {
    signal?.throwIfAborted();
    if (this.running) {
      if (this.waiting.length >= this.maxWaiting) {
        const retry = Math.max(1, Math.ceil(((this.waiting.length + 1) * this.meanMs) / 1000));
        throw new HttpError(429, `the server is busy (${this.depth} requests queued); retry in ${retry} s`, undefined, {
          'retry-after': String(retry),
        });
      }
      await new Promise<void>((resolve, reject) => {
        const w: Waiting = {
          start: () => {
            signal?.removeEventListener('abort', onAbort);
            resolve();
          },
          cancel: reject,
        };
        const onAbort = (): void => {
          const i = this.waiting.indexOf(w);
          if (i >= 0) this.waiting.splice(i, 1);
          reject(signal!.reason);
        };
        signal?.addEventListener('abort', onAbort, { once: true });
        this.waiting.push(w);
      });
    }
    this.running = true;
    const t = performance.now();
    try {
      return await job();
    } finally {
      this.meanMs = 0.8 * this.meanMs + 0.2 * (performance.now() - t);
      const next = this.waiting.shift();
      if (next) next.start();
      else this.running = false;
    }
  }
}
