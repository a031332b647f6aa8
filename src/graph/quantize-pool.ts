import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { QuantSpec, Quantized } from './quantize.js';

/**
 * Worker threads for the int4 search (`quantizeBlockwise` with threads > 1). The conversion that calls it is
 * synchronous (the compile cache produces one weight at a time), so the calling thread takes the first share of the
 * rows itself and then blocks in Atomics.wait until the workers have done theirs: no event loop is needed on this side.
 * Inputs and outputs live in SharedArrayBuffers, so nothing is copied back.
 */
let pool: Worker[] = [];

function workers(count: number): Worker[] {
  while (pool.length < count) {
    const w = new Worker(new URL('./quantize-worker.js', import.meta.url));
    w.unref(); // an idle pool never keeps the process alive
    pool.push(w);
  }
  return pool.slice(0, count);
}

/** Ends the pool's threads (tests; a process exits without it). */
export async function closeQuantizePool(): Promise<void> {
  const p = pool;
  pool = [];
  await Promise.all(p.map((w) => w.terminate()));
}

export interface QuantizeTask {
  w: Float32Array;
  k: number;
  spec: QuantSpec;
  r0: number;
  r1: number;
  out: Quantized;
  /** [finished, failed]: each worker adds 1 to finished (and to failed when it threw), then notifies. */
  status: Int32Array;
}

export function quantizeInWorkers(w: Float32Array, n: number, k: number, spec: QuantSpec, out: Quantized, threads: number): void {
  const t = Math.min(threads, availableParallelism());
  const shared = new Float32Array(new SharedArrayBuffer(w.byteLength));
  shared.set(w);
  const status = new Int32Array(new SharedArrayBuffer(8));
  const per = Math.ceil(n / t);
  const helpers = workers(t - 1);
  helpers.forEach((worker, i) => {
    const task: QuantizeTask = { w: shared, k, spec, r0: Math.min(n, (i + 1) * per), r1: Math.min(n, (i + 2) * per), out, status };
    worker.postMessage(task);
  });
  quantizeRowsHere(shared, k, spec, 0, Math.min(n, per), out);
  const deadline = Date.now() + 30 * 60_000;
  for (let done = Atomics.load(status, 0); done < helpers.length; done = Atomics.load(status, 0)) {
    if (Date.now() > deadline) throw new Error('int4 quantisation: the worker threads did not finish in 30 min');
    Atomics.wait(status, 0, done, 1000);
  }
  if (Atomics.load(status, 1) > 0) throw new Error('int4 quantisation failed in a worker thread');
}

let quantizeRowsHere: (w: Float32Array, k: number, spec: QuantSpec, r0: number, r1: number, out: Quantized) => void = () => {
  throw new Error('quantize-pool: setRowQuantizer was not called');
};
/** quantize.ts hands its row quantiser over (a static import back would be circular). */
export function setRowQuantizer(f: typeof quantizeRowsHere): void {
  quantizeRowsHere = f;
}
