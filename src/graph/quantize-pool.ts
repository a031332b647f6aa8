import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import type { QuantSpec, Quantized } from './quantize.js';

/**
 * Worker threads for the int4 search (`quantizeBlockwise` with threads > 1). The conversion that calls it is
 * synchronous (the compile cache produces one weight at a time), so the calling thread takes the first share of the
 * rows itself and then blocks in Atomics.wait until the workers have done theirs: no event loop is needed on this side.
 *
 * The weights and results pass through SharedArrayBuffers that the pool keeps and reuses. Fresh ones per tensor
 * leaked: an idle worker never collects garbage, so every tensor's buffers stayed referenced from its heap (the 13B's
 * conversion reached 24 GB and was killed).
 */
let pool: Worker[] = [];
let shared: { w: Float32Array; codes: Uint8Array; scales: Float32Array; zeros: Uint8Array } | null = null;

function workers(count: number): Worker[] {
  while (pool.length < count) {
    const w = new Worker(new URL('./quantize-worker.js', import.meta.url));
    w.unref(); // an idle pool never keeps the process alive
    pool.push(w);
  }
  return pool.slice(0, count);
}

/** Shared buffers at least this large (grown by half again when too small, so they are replaced rarely). */
function buffers(w: number, codes: number, scales: number, zeros: number): NonNullable<typeof shared> {
  const grow = (have: number, need: number): number => (need <= have ? have : Math.max(need, Math.ceil(have * 1.5)));
  const s = shared;
  if (!s || s.w.length < w || s.codes.length < codes || s.scales.length < scales || s.zeros.length < zeros)
    shared = {
      w: new Float32Array(new SharedArrayBuffer(4 * grow(s?.w.length ?? 0, w))),
      codes: new Uint8Array(new SharedArrayBuffer(grow(s?.codes.length ?? 0, codes))),
      scales: new Float32Array(new SharedArrayBuffer(4 * grow(s?.scales.length ?? 0, scales))),
      zeros: new Uint8Array(new SharedArrayBuffer(Math.max(1, grow(s?.zeros.length ?? 0, zeros)))),
    };
  return shared!;
}

/** Threads the pool has started. */
export function quantizePoolSize(): number {
  return pool.length;
}

/** Ends the pool's threads and drops its buffers (tests; a process exits without it). */
export async function closeQuantizePool(): Promise<void> {
  const p = pool;
  pool = [];
  shared = null;
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

type RowQuantizer = (w: Float32Array, k: number, spec: QuantSpec, r0: number, r1: number, out: Quantized) => void;
let quantizeRowsHere: RowQuantizer = () => {
  throw new Error('quantize-pool: setRowQuantizer was not called');
};
/** quantize.ts hands its row quantiser over (a static import back would be circular). */
export function setRowQuantizer(f: RowQuantizer): void {
  quantizeRowsHere = f;
}

/** Fills `out` (zeroed, as allocated) with the quantisation of w [n, k], rows split over `threads`. */
export function quantizeInWorkers(w: Float32Array, n: number, k: number, spec: QuantSpec, out: Quantized, threads: number): void {
  const t = Math.min(threads, availableParallelism());
  const buf = buffers(w.length, out.codes.length, out.scales.length, out.zeros?.length ?? 0);
  buf.w.set(w);
  // Zero points are OR-ed in per block: the shared bytes must start at zero, like a fresh array.
  if (out.zeros) buf.zeros.fill(0, 0, out.zeros.length);
  const view: Quantized = {
    codes: buf.codes.subarray(0, out.codes.length),
    scales: buf.scales.subarray(0, out.scales.length),
    zeros: out.zeros ? buf.zeros.subarray(0, out.zeros.length) : null,
  };
  const status = new Int32Array(new SharedArrayBuffer(8));
  const per = Math.ceil(n / t);
  const helpers = workers(t - 1);
  helpers.forEach((worker, i) => {
    const task: QuantizeTask = { w: buf.w, k, spec, r0: Math.min(n, (i + 1) * per), r1: Math.min(n, (i + 2) * per), out: view, status };
    worker.postMessage(task);
  });
  quantizeRowsHere(buf.w, k, spec, 0, Math.min(n, per), view);
  const deadline = Date.now() + 30 * 60_000;
  for (let done = Atomics.load(status, 0); done < helpers.length; done = Atomics.load(status, 0)) {
    if (Date.now() > deadline) throw new Error('int4 quantisation: the worker threads did not finish in 30 min');
    Atomics.wait(status, 0, done, 1000);
  }
  if (Atomics.load(status, 1) > 0) throw new Error('int4 quantisation failed in a worker thread');
  out.codes.set(view.codes);
  out.scales.set(view.scales);
  if (out.zeros) out.zeros.set(view.zeros!);
}
