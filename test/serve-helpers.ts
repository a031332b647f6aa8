import { spawn, type ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import type { FastifyInstance } from 'fastify';
import { createServer, type ServerOptions } from '../src/serve/server.js';
import { LisaService, type ServiceOptions } from '../src/serve/service.js';
import { FIXTURES, ROOT } from './helpers.js';

export const CKPT = join(FIXTURES, 'lisa-tiny', 'checkpoint');
export const CLIP = join(CKPT, 'clip-vit-tiny-patch14');
export const GOLDEN = join(FIXTURES, 'lisa-tiny', 'golden');
export const TRUCK = join(GOLDEN, 'inputs', 'truck.jpg');
export const SYNTHETIC = join(GOLDEN, 'inputs', 'synthetic.png');

export const LIMITS: Omit<ServerOptions, 'version'> = {
  maxImageBytes: 8 * 1024 * 1024,
  maxBodyBytes: 12 * 1024 * 1024,
  maxQuestionChars: 2000,
  requestTimeoutMs: 60_000,
};

export interface RunningServer {
  url: string;
  app: FastifyInstance;
  service: LisaService;
  close(): Promise<void>;
}

/** The server in this process on a free loopback port, over the tiny checkpoint. */
export async function startServer(
  cacheDir: string,
  opts: Partial<ServerOptions> = {},
  service: Partial<ServiceOptions> = {},
): Promise<RunningServer> {
  const svc = LisaService.load(
    CKPT,
    { visionTower: CLIP, cacheDir, threads: 1 },
    { cacheBytes: 1024 ** 3, maxQueue: 16, maxPixels: 40_000_000, ...service },
  );
  const app = await createServer(svc, { ...LIMITS, version: 'test', ...opts });
  const url = await app.listen({ host: '127.0.0.1', port: 0 });
  return {
    url,
    app,
    service: svc,
    close: async () => {
      await app.close();
      await svc.close();
    },
  };
}

/** `lisa serve` as a child process; resolves with its URL once it listens. */
export function spawnServe(cacheDir: string, extra: string[] = []): Promise<{ url: string; child: ChildProcess; stderr: () => string }> {
  const child = spawn(
    process.execPath,
    [
      join(ROOT, 'bin', 'lisa.js'),
      'serve',
      '--model',
      CKPT,
      '--vision-tower',
      CLIP,
      '--cache-dir',
      cacheDir,
      '--threads',
      '1',
      '--port',
      '0',
      ...extra,
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  let err = '';
  return new Promise((resolve, reject) => {
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      const m = /at (http:\/\/[^\s]+)/.exec(err);
      if (m) resolve({ url: m[1]!, child, stderr: () => err });
    });
    child.on('exit', (code) => reject(new Error(`lisa serve exited ${code}: ${err}`)));
  });
}

/** Server-sent events of a response body, as [event, data] pairs. */
export async function readEvents(res: Response): Promise<[string, string][]> {
  const text = await res.text();
  return text
    .split('\n\n')
    .filter((b) => b.trim())
    .map((b) => {
      const event = /^event: (.*)$/m.exec(b)?.[1] ?? 'message';
      const data = b
        .split('\n')
        .filter((l) => l.startsWith('data: '))
        .map((l) => l.slice(6))
        .join('\n');
      return [event, data];
    });
}
