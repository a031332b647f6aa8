import { readFileSync } from 'node:fs';
import { Queue, QueueEvents } from 'bullmq';
import { LisaError } from '../errors.js';
import type { MaskPredictor, PredictedMask } from '../eval/runner.js';
import { decodeRle } from '../image/mask-encoding.js';
import { JOB_OPTIONS } from './queue-backend.js';
import { connect, putImage, redisOptions, reportErrors, sha256, SHARED_QUEUE } from './redis.js';
import type { WireEval } from './wire.js';

/**
 * `lisa eval --queue`: each image (with its queries' prompts) is one job on the shared queue; the masks come back as
 * RLE and are scored here against the ground truth, into the same results.jsonl as a single-process run. A job's
 * id is the hash of what it computes, so a resumed run (or a retried job) never counts a query twice.
 */
export function queuePredictor(
  url: string,
  opts: { protocol: 'teacher-forced' | 'generate'; maxNewTokens?: number; concurrency: number },
): MaskPredictor & { close(): Promise<void> } {
  const connection = redisOptions(url);
  const redis = connect(connection, (s) => process.stderr.write(`lisa eval: ${s}\n`));
  const queue = new Queue(SHARED_QUEUE, { connection });
  const events = new QueueEvents(SHARED_QUEUE, { connection });
  reportErrors(queue, () => {});
  reportErrors(events, () => {});
  return {
    concurrency: opts.concurrency,
    async predict(path, image, prompts) {
      const imageHash = await putImage(redis, readFileSync(path));
      const data = {
        kind: 'eval' as const,
        imageHash,
        prompts,
        protocol: opts.protocol,
        ...(opts.maxNewTokens ? { maxNewTokens: opts.maxNewTokens } : {}),
      };
      const jobId = `eval-${sha256(new TextEncoder().encode(JSON.stringify(data))).slice(0, 40)}`;
      await events.waitUntilReady();
      const job = await queue.add('eval', data, { ...JOB_OPTIONS, jobId });
      let out: WireEval;
      try {
        out = (await job.waitUntilFinished(events)) as WireEval;
      } catch (e) {
        // A failed job (a corrupt image: the worker's one clear line) is this image's error, as in one process.
        const msg = (e as Error).message;
        try {
          throw new LisaError((JSON.parse(msg) as { message: string }).message);
        } catch (u) {
          if (u instanceof LisaError) throw u;
          throw new LisaError(msg);
        }
      }
      return out.preds.map((p): PredictedMask | { error: string } => {
        if ('error' in p) return p;
        const m = decodeRle(p.rle);
        if (m.width !== image.width || m.height !== image.height) return { error: `worker returned a ${m.width}x${m.height} mask` };
        return { mask: m.data, noSeg: p.noSeg };
      });
    },
    async close() {
      await Promise.all([queue.close(), events.close()]);
      redis.disconnect();
    },
  };
}
