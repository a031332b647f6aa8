import { createHash } from 'node:crypto';
import type { RedisOptions } from 'bullmq';
import { Redis, type RedisOptions as IoRedisOptions } from 'ioredis';
import { LisaError } from '../errors.js';

/** The shared job queue every worker takes from, and each worker's own (for follow-ups on what it holds). */
export const SHARED_QUEUE = 'lisa-jobs';
export const workerQueue = (id: string): string => `lisa-worker-${id}`;

export const KEYS = {
  image: (hash: string): string => `lisa:image:${hash}`,
  /** Which worker last encoded an image (and so holds its encoding and conversations). */
  affinity: (hash: string): string => `lisa:affinity:${hash}`,
  /** A worker's heartbeat: `{pid, model, host}`, expiring when the worker stops beating. */
  worker: (id: string): string => `lisa:worker:${id}`,
  workers: 'lisa:workers',
  events: (requestId: string): string => `lisa:events:${requestId}`,
  cancel: 'lisa:cancel',
};

/** Images are kept a day after their last use; a job naming an expired one fails with a clear 404. */
export const IMAGE_TTL_S = 24 * 3600;
export const AFFINITY_TTL_S = 600;
export const HEARTBEAT_TTL_S = 6;

/** `redis://[user:password@]host[:port][/db]` → ioredis options; one clear error for anything else. */
export function redisOptions(url: string, flag = '--queue'): RedisOptions {
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new LisaError(`${flag} ${url}: expected redis://HOST:PORT`, 2);
  }
  if (u.protocol !== 'redis:' && u.protocol !== 'rediss:') throw new LisaError(`${flag} ${url}: expected redis://HOST:PORT`, 2);
  const db = u.pathname.replace(/^\//, '');
  if (db && !/^\d+$/.test(db)) throw new LisaError(`${flag} ${url}: the database after / must be a number`, 2);
  return {
    host: u.hostname || '127.0.0.1',
    port: u.port ? Number(u.port) : 6379,
    ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
    ...(db ? { db: Number(db) } : {}),
    ...(u.protocol === 'rediss:' ? { tls: {} } : {}),
    // BullMQ's workers block on Redis: a command must wait for a reconnect rather than fail.
    maxRetriesPerRequest: null,
    // Reconnect forever, backing off to 2 s (a restarted Redis is picked up again by itself).
    retryStrategy: (times: number) => Math.min(times * 100, 2000),
  };
}

/**
 * Connection trouble is said once per distinct message per process (ioredis and BullMQ retry by themselves, every
 * 2 s at most, on several connections at once); every client and queue gets this listener, since an EventEmitter
 * without one turns 'error' into a crash.
 */
let lastRedisError = '';
export function reportErrors(emitter: { on(event: 'error', f: (e: Error) => void): unknown }, log: (s: string) => void): void {
  emitter.on('error', (e: Error) => {
    if (e.message === lastRedisError) return;
    lastRedisError = e.message;
    log(`Redis: ${e.message} (retrying)`);
  });
}

export function connect(opts: RedisOptions, log: (s: string) => void): Redis {
  const r = new Redis(opts as IoRedisOptions);
  reportErrors(r, log);
  r.on('ready', () => {
    if (lastRedisError) log('Redis: connected');
    lastRedisError = '';
  });
  return r;
}

export function sha256(bytes: Uint8Array): string {
  return createHash('sha256').update(bytes).digest('hex');
}

/** Stores an image once under its hash (or refreshes its expiry); returns the hash. */
export async function putImage(redis: Redis, bytes: Uint8Array): Promise<string> {
  const hash = sha256(bytes);
  const key = KEYS.image(hash);
  if ((await redis.set(key, Buffer.from(bytes), 'EX', IMAGE_TTL_S, 'NX')) === null) await redis.expire(key, IMAGE_TTL_S);
  return hash;
}
