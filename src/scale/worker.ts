import { fork, type ChildProcess } from 'node:child_process';
import { hostname } from 'node:os';
import { fileURLToPath } from 'node:url';
import { Queue, UnrecoverableError, Worker, type Job } from 'bullmq';
import type { Redis } from 'ioredis';
import type { LisaLoadOptions } from '../models/lisa.js';
import type { FromChild, ModelProcessConfig, ToChild } from './model-process.js';
import { AFFINITY_TTL_S, connect, HEARTBEAT_TTL_S, KEYS, redisOptions, reportErrors, SHARED_QUEUE, workerQueue } from './redis.js';
import type { JobData, WireEvent } from './wire.js';

export interface WorkerOptions {
  queue: string;
  model: string;
  load: LisaLoadOptions;
  /** Model processes, each running one job at a time. */
  concurrency: number;
  cacheBytes: number;
  maxPixels: number;
  /** A job whose worker died is retried elsewhere this long after its last lock renewal. */
  lockMs: number;
  log?: (s: string) => void;
}

const MODEL_PROCESS = fileURLToPath(new URL('./model-process.js', import.meta.url));

/** A user mistake the job cannot recover from by retrying: carried to the front end as its HTTP status. */
export function userError(status: number, message: string, field?: string): UnrecoverableError {
  return new UnrecoverableError(JSON.stringify({ status, message, ...(field ? { field } : {}) }));
}

/** One model child process and the job it runs. */
class ModelChild {
  private child!: ChildProcess;
  private ready!: Promise<void>;
  private readonly pending = new Map<string, { resolve: (v: unknown) => void; reject: (e: Error) => void; onText: (d: string) => void }>();

  constructor(private readonly config: ModelProcessConfig) {
    this.start();
  }

  private start(): void {
    this.child = fork(MODEL_PROCESS, [], {
      serialization: 'advanced',
      env: { ...process.env, LISA_WORKER_CONFIG: JSON.stringify(this.config) },
      stdio: ['ignore', 'inherit', 'inherit', 'ipc'],
    });
    this.ready = new Promise((resolve) => {
      this.child.on('message', (m: FromChild) => {
        if (m.id === 'ready') return resolve();
        const p = this.pending.get(m.id);
        if (!p) return;
        if (m.type === 'text') p.onText(m.delta);
        else {
          this.pending.delete(m.id);
          if (m.type === 'done') p.resolve(m.value);
          else p.reject(m.user ? userError(m.status ?? 400, m.message, m.field) : new Error(m.message));
        }
      });
    });
    // A crashed model process (out of memory, a native fault) fails its job, which BullMQ retries; a new one starts.
    this.child.on('exit', (code, signal) => {
      for (const p of this.pending.values()) p.reject(new Error(`the model process exited (${signal ?? code})`));
      this.pending.clear();
      if (!this.stopping) this.start();
    });
  }

  private stopping = false;

  async run(id: string, data: JobData, image: Uint8Array, onText: (d: string) => void): Promise<unknown> {
    await this.ready;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject, onText });
      this.child.send({ type: 'job', id, data, image } satisfies ToChild);
    });
  }

  cancel(requestId: string): void {
    this.child.send({ type: 'cancel', requestId } satisfies ToChild);
  }

  stop(): void {
    this.stopping = true;
    this.child.kill('SIGTERM');
  }
}

/**
 * `lisa worker`: takes jobs from the shared queue and from its own (follow-ups on images it holds), runs them in
 * model child processes, and streams text back over Redis pub/sub. BullMQ keeps each job's lock alive from this
 * process, whose event loop never runs model code; a worker killed outright stops renewing, and another worker
 * retries its job after `lockMs`. Jobs waiting in a dead worker's own queue are moved to the shared one.
 */
export async function runWorker(o: WorkerOptions): Promise<{ id: string; stop: () => Promise<void> }> {
  const id = `${hostname()}-${process.pid}`;
  const connection = redisOptions(o.queue);
  const log = o.log ?? ((s: string) => process.stderr.write(`lisa worker ${id}: ${s}\n`));
  const redis: Redis = connect(connection, log);
  const children = Array.from(
    { length: o.concurrency },
    () => new ModelChild({ model: o.model, load: o.load, cacheBytes: o.cacheBytes, maxPixels: o.maxPixels, worker: id }),
  );
  // Each model process runs one job at a time; other jobs wait here, their locks renewed by BullMQ meanwhile.
  const free = [...children];
  const waiters: ((c: ModelChild) => void)[] = [];
  const acquire = (): Promise<ModelChild> => (free.length ? Promise.resolve(free.pop()!) : new Promise((r) => waiters.push(r)));
  const release = (c: ModelChild): void => {
    const w = waiters.shift();
    if (w) w(c);
    else free.push(c);
  };
  const byRequest = new Map<string, ModelChild>();
  const publish = (requestId: string | undefined, e: WireEvent): void => {
    if (requestId) void redis.publish(KEYS.events(requestId), JSON.stringify(e)).catch(() => {});
  };

  const processor = async (job: Job<JobData>): Promise<unknown> => {
    const data = job.data;
    const requestId = data.kind === 'eval' ? undefined : data.requestId;
    const image = await redis.getBuffer(KEYS.image(data.imageHash));
    if (!image) throw userError(404, `image_id: unknown image "${data.imageHash}" (expired from Redis: upload it again)`, 'image_id');
    const child = await acquire();
    let value: unknown;
    if (requestId) byRequest.set(requestId, child);
    try {
      await job.updateProgress({ worker: id });
      const attempt = `${id}:${job.attemptsStarted}`;
      value = await child.run(job.id!, data, image, (delta) => publish(requestId, { type: 'text', attempt, delta }));
      if (data.kind !== 'eval') await redis.set(KEYS.affinity(data.imageHash), id, 'EX', AFFINITY_TTL_S);
    } finally {
      if (requestId) byRequest.delete(requestId);
      release(child);
    }
    publish(requestId, { type: 'done', value: value as never });
    return value;
  };
  const options = {
    connection,
    concurrency: o.concurrency,
    lockDuration: o.lockMs,
    stalledInterval: Math.max(1000, o.lockMs / 2),
    maxStalledCount: 3,
  };
  const workers = [new Worker<JobData>(SHARED_QUEUE, processor, options), new Worker<JobData>(workerQueue(id), processor, options)];
  for (const w of workers) {
    w.on('failed', (job, err) => {
      if (!job || job.data.kind === 'eval') return;
      const final = err instanceof UnrecoverableError || err.name === 'UnrecoverableError' || job.attemptsMade >= (job.opts.attempts ?? 1);
      if (!final) return;
      let e: WireEvent = { type: 'error', status: 500, message: `the job failed on every attempt: ${err.message}` };
      try {
        const u = JSON.parse(err.message) as { status: number; message: string; field?: string };
        e = { type: 'error', ...u };
      } catch {
        /* not a user error */
      }
      publish(job.data.requestId, e);
    });
    reportErrors(w, log);
  }

  // A client that went away: its generation stops at the next token.
  const sub = connect(connection, () => {}); // the main connection reports the same trouble
  await sub.subscribe(KEYS.cancel);
  sub.on('message', (_ch, requestId: string) => byRequest.get(requestId)?.cancel(requestId));

  const beat = async (): Promise<void> => {
    await redis
      .multi()
      .set(KEYS.worker(id), JSON.stringify({ pid: process.pid, model: o.model, host: hostname() }), 'EX', HEARTBEAT_TTL_S)
      .sadd(KEYS.workers, id)
      .exec();
  };
  await beat();
  const shared = new Queue(SHARED_QUEUE, { connection });
  reportErrors(shared, () => {});
  /** Jobs left in the own queue of a worker that stopped beating go to the shared queue (kept job ids: no duplicate). */
  const rescue = async (): Promise<void> => {
    for (const other of await redis.smembers(KEYS.workers)) {
      if (other === id || (await redis.exists(KEYS.worker(other)))) continue;
      const q = new Queue(workerQueue(other), { connection });
      reportErrors(q, () => {});
      try {
        const jobs = await q.getJobs(['wait', 'prioritized', 'delayed', 'active']);
        for (const j of jobs) {
          await shared.add(j.name, j.data, { ...j.opts, jobId: j.id });
          await j.remove().catch(() => shared.remove(j.id!).catch(() => {})); // still locked: taken again next round
        }
        if (jobs.length === 0) await redis.srem(KEYS.workers, other);
        else log(`moved ${jobs.length} job(s) of the stopped worker ${other} to the shared queue`);
      } finally {
        await q.close();
      }
    }
  };
  const timer = setInterval(() => {
    beat()
      .then(rescue)
      .catch((e: Error) => log(`heartbeat: ${e.message}`));
  }, 2000);
  log(`ready (model ${o.model}, ${o.concurrency} model process(es))`);

  return {
    id,
    stop: async () => {
      clearInterval(timer);
      await Promise.all(workers.map((w) => w.close()));
      children.forEach((c) => c.stop());
      await redis.del(KEYS.worker(id)).catch(() => {});
      await redis.srem(KEYS.workers, id).catch(() => {});
      await shared.close();
      sub.disconnect();
      redis.disconnect();
    },
  };
}
