import { parentPort } from 'node:worker_threads';
import { quantizeRows } from './quantize.js';
import type { QuantizeTask } from './quantize-pool.js';

/** One worker of quantize-pool.ts: quantises its share of the rows into the shared outputs, then reports. */
parentPort?.on('message', (t: QuantizeTask) => {
  try {
    quantizeRows(t.w, t.k, t.spec, t.r0, t.r1, t.out);
  } catch {
    Atomics.add(t.status, 1, 1);
  }
  Atomics.add(t.status, 0, 1);
  Atomics.notify(t.status, 0);
});
