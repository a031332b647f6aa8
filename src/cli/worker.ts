import type { Command } from 'commander';
import { runWorker } from '../scale/worker.js';
import { defaultModelDir } from '../models/default-model.js';
import { checkCacheDir, loadOptions, modelOptions, parseIntArg, type ModelCliOptions } from './common.js';

interface WorkerCliOptions extends ModelCliOptions {
  queue: string;
  concurrency: number;
  cacheMb: number;
  maxPixels: number;
  lockMs: number;
}

export function registerWorker(program: Command): void {
  modelOptions(program.command('worker'), { modelRequired: false })
    .description('take segment, chat and evaluation jobs from a Redis queue (BullMQ) and run them with one loaded model')
    .requiredOption('--queue <url>', 'Redis, as redis://HOST:PORT (the same for every front end and worker)')
    .option(
      '--concurrency <n>',
      'model processes, each running one job at a time (split --threads between them)',
      parseIntArg('--concurrency', 1, 64),
      1,
    )
    .option('--cache-mb <n>', 'MiB per model process for encoded images, KV caches and chat sessions', parseIntArg('--cache-mb', 0), 4096)
    .option('--max-pixels <n>', 'pixels of one image', parseIntArg('--max-pixels', 1), 40_000_000)
    .option(
      '--lock-ms <n>',
      "a dead worker's job is retried elsewhere this long after its last lock renewal",
      parseIntArg('--lock-ms', 1000),
      30_000,
    )
    .action(async (o: WorkerCliOptions) => {
      checkCacheDir(o);
      const load = loadOptions(o);
      delete load.onProgress; // the model processes share this terminal; the log says when they are ready
      const w = await runWorker({
        queue: o.queue,
        model: o.model ?? defaultModelDir(),
        load,
        concurrency: o.concurrency,
        cacheBytes: o.cacheMb * 1024 * 1024,
        maxPixels: o.maxPixels,
        lockMs: o.lockMs,
      });
      // SIGTERM / Ctrl-C: finish the running jobs, take no new ones, leave the worker registry.
      await new Promise<void>((resolve) => {
        const stop = (sig: string): void => {
          process.stderr.write(`lisa worker ${w.id}: ${sig}: finishing the running job(s)\n`);
          void w.stop().then(resolve);
        };
        process.once('SIGTERM', () => stop('SIGTERM'));
        process.once('SIGINT', () => stop('SIGINT'));
      });
    });
}
