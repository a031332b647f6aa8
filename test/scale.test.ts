import assert from 'node:assert/strict';
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { Queue } from 'bullmq';
import OpenAI from 'openai';
import { ROOT, SHARED, tempDir } from './helpers.js';
import { CKPT, CLIP, GOLDEN, readEvents, TRUCK } from './serve-helpers.js';

/** Debian's redis-server (installed by .ci/run when missing). */
const REDIS = ['/usr/bin/redis-server', '/usr/local/bin/redis-server'].find((p) => existsSync(p));
const LISA = join(ROOT, 'bin', 'lisa.js');
const manifest = JSON.parse(readFileSync(join(GOLDEN, 'manifest.json'), 'utf8')) as {
  cases: Record<string, { chat: { query: string; new_token_ids: number[]; text_output: string } }>;
};
const truck = manifest.cases.truck_jpg!.chat;
const truckText = truck.text_output.split('ASSISTANT: ').pop()!;
const truckBytes = readFileSync(TRUCK);

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => resolve(port));
    });
  });
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function until<T>(what: string, f: () => Promise<T | undefined | false>, ms = 30_000): Promise<T> {
  const end = Date.now() + ms;
  for (;;) {
    const v = await f().catch(() => undefined);
    if (v) return v;
    if (Date.now() > end) throw new Error(`timed out waiting for ${what}`);
    await sleep(100);
  }
}

describe(
  'scale-out: lisa serve --queue, three lisa workers and lisa eval --queue on a real Redis',
  { skip: REDIS ? false : 'redis-server is not installed (apt-get install redis-server)' },
  () => {
    const tmp = tempDir('lisa-scale-');
    const cache = join(tmp.path, 'cache');
    let port: number;
    let redisUrl: string;
    let redis: ChildProcess;
    const workers: ChildProcess[] = [];
    let front: ChildProcess;
    let url: string;
    let workerLog = '';

    const startRedis = async (): Promise<void> => {
      redis = spawn(REDIS!, ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], { stdio: 'ignore' });
      await until('redis', async () => spawnSync('redis-cli', ['-p', String(port), 'ping'], { encoding: 'utf8' }).stdout.trim() === 'PONG');
    };
    const startWorker = (): ChildProcess => {
      const w = spawn(
        process.execPath,
        [
          LISA,
          'worker',
          '--queue',
          redisUrl,
          '--model',
          CKPT,
          '--vision-tower',
          CLIP,
          '--cache-dir',
          cache,
          '--threads',
          '1',
          '--lock-ms',
          '3000',
        ],
        { stdio: ['ignore', 'ignore', 'pipe'] },
      );
      w.stderr!.on('data', (d: Buffer) => (workerLog += d.toString()));
      workers.push(w);
      return w;
    };
    const post = (path: string, body: unknown): Promise<Response> =>
      fetch(`${url}${path}`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: JSON.stringify(body) });

    before(async () => {
      port = await freePort();
      redisUrl = `redis://127.0.0.1:${port}`;
      await startRedis();
      // Compile the graphs once, so the workers do not all build them at the same time.
      spawnSync(process.execPath, [LISA, 'convert', '--model', CKPT, '--vision-tower', CLIP, '--cache-dir', cache], { stdio: 'ignore' });
      for (let i = 0; i < 3; i++) startWorker();
      front = spawn(process.execPath, [LISA, 'serve', '--queue', redisUrl, '--port', '0', '--request-timeout', '20'], {
        stdio: ['ignore', 'ignore', 'pipe'],
      });
      let err = '';
      url = await new Promise<string>((resolve) =>
        front.stderr!.on('data', (d: Buffer) => {
          err += d.toString();
          const m = /at (http:\/\/\S+)/.exec(err);
          if (m) resolve(m[1]!);
        }),
      );
      await until('three workers', async () => (workerLog.match(/ready/g) ?? []).length === 3);
    });
    after(async () => {
      for (const p of [front, ...workers]) p?.kill('SIGKILL');
      redis?.kill('SIGKILL');
      tmp[Symbol.dispose]();
    });

    it('answers through the workers with the official greedy text; follow-ups go to the worker holding the image', async () => {
      const up = (await (
        await fetch(`${url}/v1/images`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: truckBytes })
      ).json()) as {
        image_id: string;
        width: number;
      };
      assert.equal(up.width, 1800);
      for (let i = 0; i < 5; i++) {
        const r = (await (
          await post('/v1/segment', { image_id: up.image_id, question: truck.query, max_new_tokens: truck.new_token_ids.length })
        ).json()) as {
          tokens: number[];
          text: string;
          timings: { encode_image_ms: number };
        };
        assert.deepEqual(r.tokens, truck.new_token_ids);
        assert.equal(r.text, truckText);
        assert.equal(r.timings.encode_image_ms, 0, `request ${i} went to a worker without the image`);
      }
      const stream = await post('/v1/segment', {
        image_id: up.image_id,
        question: truck.query,
        max_new_tokens: truck.new_token_ids.length,
        stream: true,
      });
      const events = await readEvents(stream);
      assert.equal(
        events
          .filter(([e]) => e === 'text')
          .map(([, d]) => (JSON.parse(d) as { delta: string }).delta)
          .join(''),
        truckText,
      );
      const client = new OpenAI({ baseURL: `${url}/v1`, apiKey: 'none', maxRetries: 0 });
      const chat = await client.chat.completions.create({
        model: 'lisa',
        messages: [
          {
            role: 'user',
            content: [
              { type: 'text', text: truck.query },
              { type: 'image_url', image_url: { url: `data:image/jpeg;base64,${truckBytes.toString('base64')}` } },
            ],
          },
        ],
        max_tokens: truck.new_token_ids.length,
      });
      assert.equal(chat.choices[0]!.message.content, truckText);
    });

    it('a corrupt image fails once with its clear error (not retried), and job payloads hold no image', async () => {
      // A JPEG cut short: its header reads (the front end accepts it), the worker cannot decode it.
      const cut = truckBytes.subarray(0, 4000);
      const res = await post('/v1/segment', { image: cut.toString('base64'), question: 'q' });
      assert.equal(res.status, 400);
      assert.match(((await res.json()) as { error: { message: string } }).error.message, /cannot decode image/);
      const q = new Queue('lisa-jobs', { connection: { host: '127.0.0.1', port } });
      try {
        const failed = await q.getFailed();
        const poison = failed.filter((j) => j.data.kind === 'turn');
        assert.equal(poison.length, 1);
        assert.equal(poison[0]!.attemptsMade, 1, 'failed once, not retried');
        const done = await q.getCompleted();
        for (const j of [...failed, ...done])
          assert.ok(JSON.stringify(j.data).length < 2048, `job ${j.id}: ${JSON.stringify(j.data).length} bytes`);
      } finally {
        await q.close();
      }
    });

    it('lisa eval --queue gives the same results as one process, and survives a worker killed with kill -9 mid-run', async () => {
      const data = join(tmp.path, 'sanity');
      spawnSync(process.execPath, [LISA, 'sanity-set', '--data', join(SHARED, 'data'), '--out', data]);
      const args = ['--data', data, '--dataset', 'reasonseg', '--protocol', 'generate', '--max-new-tokens', '60'];
      const local = spawnSync(
        process.execPath,
        [LISA, 'eval', ...args, '--model', CKPT, '--vision-tower', CLIP, '--cache-dir', cache, '--out', join(tmp.path, 'local')],
        {
          encoding: 'utf8',
        },
      );
      assert.equal(local.status, 0, local.stderr);
      const remote = spawn(process.execPath, [LISA, 'eval', ...args, '--queue', redisUrl, '--out', join(tmp.path, 'queued')], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let out = '';
      remote.stdout!.on('data', (d: Buffer) => (out += d.toString()));
      remote.stderr!.on('data', (d: Buffer) => (out += d.toString()));
      const exited = new Promise<number | null>((r) => remote.on('exit', (c) => r(c)));
      // Kill the worker running a job, mid-job.
      const q = new Queue('lisa-jobs', { connection: { host: '127.0.0.1', port } });
      try {
        const victim = await until('an active eval job', async () => {
          const active = (await q.getActive()).find((j) => j.data.kind === 'eval' && (j.progress as { worker?: string }).worker);
          return active ? (active.progress as { worker: string }).worker : undefined;
        });
        const pid = Number(victim.split('-').pop());
        const w = workers.find((p) => p.pid === pid);
        assert.ok(w, `worker ${victim} is one of ours`);
        w.kill('SIGKILL');
      } finally {
        await q.close();
      }
      assert.equal(await exited, 0, out);
      const lines = readFileSync(join(tmp.path, 'queued', 'results.jsonl'), 'utf8')
        .trim()
        .split('\n');
      const ids = lines.map((l) => (JSON.parse(l) as { id: string }).id);
      assert.equal(new Set(ids).size, ids.length, 'no query counted twice');
      assert.equal(ids.length, 19, 'no query lost');
      const report = (dir: string): unknown => JSON.parse(readFileSync(join(tmp.path, dir, 'report.json'), 'utf8'));
      assert.deepEqual(report('queued'), report('local'));
      startWorker();
    });

    it('a Redis restart: workers and the front end reconnect by themselves', async () => {
      redis.kill('SIGKILL');
      await sleep(500);
      await startRedis();
      const r = await until(
        'an answer after the restart',
        async () => {
          const res = await post('/v1/segment', { image: truckBytes.toString('base64'), question: truck.query, max_new_tokens: 3 });
          return res.status === 200 ? ((await res.json()) as { tokens: number[] }) : undefined;
        },
        60_000,
      );
      assert.deepEqual(r.tokens, truck.new_token_ids.slice(0, 3));
    });
  },
);
