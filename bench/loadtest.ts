/**
 * `npm run loadtest`: `lisa serve` under 100 concurrent clients on loopback, beside a Gradio-style baseline run the
 * same way in the same run.
 *
 *   npm run loadtest -- [--clients 100] [--duration 120] [--model DIR --vision-tower DIR] [--json FILE]
 *
 * Each client loops until the deadline over a mix: uploads (then questions by image_id), segment calls with the
 * image inline, streamed OpenAI-style chats with a follow-up, and bad requests (each must get its 4xx). A 429 is
 * by design (the bounded queue): the client waits its Retry-After and goes on. Anything else (a 5xx, a bad
 * request accepted, a good one refused, a request unanswered after 5 minutes) is counted as a failure; the server's
 * RSS is sampled every second. The baseline is what the Gradio demo does: one request at a time, an unbounded
 * queue, and every request encodes its image again (`--cache-mb 0 --max-queue 100000`).
 * Default model: the tiny test checkpoint in ../shared (the server's behaviour under load, not the model's speed).
 */
import { spawn } from 'node:child_process';
import { readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { cpus } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(fileURLToPath(import.meta.url), '..', '..', '..');
const SHARED = resolve(ROOT, '..', 'shared');

function arg(name: string, def: string): string {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : def;
}
const CLIENTS = Number(arg('clients', '100'));
const DURATION_S = Number(arg('duration', '120'));
const MODEL = arg('model', join(SHARED, 'fixtures', 'lisa-tiny', 'checkpoint'));
const TOWER = arg('vision-tower', join(MODEL, 'clip-vit-tiny-patch14'));
const JSON_OUT = arg('json', join(ROOT, 'bench', `results-loadtest-${new Date().toISOString().slice(0, 10)}.json`));
const REQUEST_TIMEOUT_MS = 300_000;

const imageDir = join(SHARED, 'data', 'coco128-seg', 'images');
const IMAGES = readdirSync(imageDir)
  .filter((f) => f.endsWith('.jpg'))
  .slice(0, 12)
  .map((f) => readFileSync(join(imageDir, f)));
const QUESTIONS = [
  'What is the object that can carry cargo in this image? Please output segmentation mask.',
  'Where would a person sit here? Please output segmentation mask.',
  'Что здесь можно съесть? Please output segmentation mask.',
  '这张图里有什么动物？',
];

interface Sample {
  kind: string;
  status: number;
  ms: number;
  ok: boolean;
}

function startServer(extra: string[]): Promise<{ url: string; pid: number; stop: () => Promise<number | null> }> {
  const child = spawn(
    process.execPath,
    [
      join(ROOT, 'bin', 'lisa.js'),
      'serve',
      '--model',
      MODEL,
      '--vision-tower',
      TOWER,
      '--port',
      '0',
      '--cache-dir',
      join(ROOT, '.cache', 'loadtest'),
      ...extra,
    ],
    { stdio: ['ignore', 'ignore', 'pipe'] },
  );
  let err = '';
  return new Promise((res, rej) => {
    child.stderr!.on('data', (d: Buffer) => {
      err += d.toString();
      const m = /at (http:\/\/\S+)/.exec(err);
      if (m)
        res({
          url: m[1]!,
          pid: child.pid!,
          stop: () =>
            new Promise((r) => {
              child.on('exit', (code) => r(code));
              child.kill('SIGTERM');
            }),
        });
    });
    child.on('exit', (code) => rej(new Error(`lisa serve exited ${code}: ${err}`)));
  });
}

function rssBytes(pid: number): number {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'));
    return m ? Number(m[1]) * 1024 : 0;
  } catch {
    return 0;
  }
}

const pick = <T>(a: readonly T[]): T => a[Math.floor(Math.random() * a.length)]!;
const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function timed(
  kind: string,
  send: () => Promise<Response>,
  expectBad = false,
): Promise<{ s: Sample; res?: Response; body?: string }> {
  const t = performance.now();
  try {
    const res = await send();
    const body = await res.text(); // the whole answer (a stream to its end)
    const ms = performance.now() - t;
    const ok = expectBad ? res.status >= 400 && res.status < 500 : res.status === 200 || res.status === 429;
    return { s: { kind, status: res.status, ms, ok }, res, body };
  } catch {
    return { s: { kind, status: 0, ms: performance.now() - t, ok: false } };
  }
}

async function client(url: string, deadline: number, samples: Sample[], useIds: boolean): Promise<void> {
  const json = (path: string, body: unknown): Promise<Response> =>
    fetch(`${url}${path}`, {
      method: 'POST',
      headers: { 'content-type': 'application/json' },
      body: JSON.stringify(body),
      signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
    });
  while (performance.now() < deadline) {
    const r = Math.random();
    const img = pick(IMAGES);
    const b64 = img.toString('base64');
    let out: { s: Sample; res?: Response; body?: string };
    if (r < 0.25 && useIds) {
      out = await timed('upload', () =>
        fetch(`${url}/v1/images`, {
          method: 'POST',
          headers: { 'content-type': 'image/jpeg' },
          body: img,
          signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
        }),
      );
      samples.push(out.s);
      if (out.res?.status === 200) {
        const id = (JSON.parse(out.body!) as { image_id: string }).image_id;
        const q = await timed('segment-by-id', () => json('/v1/segment', { image_id: id, question: pick(QUESTIONS), max_new_tokens: 16 }));
        // An id evicted under memory pressure is a 404 by design.
        if (q.s.status === 404) q.s.ok = true;
        out = q;
      }
    } else if (r < 0.55) {
      out = await timed('segment', () => json('/v1/segment', { image: b64, question: pick(QUESTIONS), max_new_tokens: 16 }));
    } else if (r < 0.85) {
      const first = [
        {
          role: 'user',
          content: [
            { type: 'text', text: pick(QUESTIONS) },
            { type: 'image_url', image_url: { url: `data:image/jpeg;base64,${b64}` } },
          ],
        },
      ];
      out = await timed('chat-stream', () => json('/v1/chat/completions', { messages: first, stream: true, max_tokens: 16 }));
      if (out.res?.status === 200 && Math.random() < 0.5) {
        const answer = out
          .body!.split('\n\n')
          .filter((l) => l.startsWith('data: {'))
          .map((l) => (JSON.parse(l.slice(6)) as { choices: { delta: { content?: string } }[] }).choices[0]?.delta.content ?? '')
          .join('');
        samples.push(out.s);
        const messages = [...first, { role: 'assistant', content: answer }, { role: 'user', content: 'And the other one?' }];
        out = await timed('chat-follow-up', () => json('/v1/chat/completions', { messages, stream: true, max_tokens: 16 }));
      }
    } else {
      const bad = pick([
        () => json('/v1/segment', { image: '%%%not base64', question: 'q' }),
        () => json('/v1/segment', { image: b64, question: 42 }),
        () => json('/v1/segment', { image_id: 'deadbeef', question: 'q' }),
        () => json('/v1/chat/completions', { messages: [{ role: 'user', content: 'no image' }] }),
        () => json('/v1/segment', { image: Buffer.from('not an image').toString('base64'), question: 'q' }),
        () =>
          fetch(`${url}/v1/segment`, {
            method: 'POST',
            headers: { 'content-type': 'multipart/form-data; boundary=z' },
            body: '--z\r\ngarbage',
          }),
        () => fetch(`${url}/v1/segment`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{"image":' }),
      ]);
      out = await timed('bad', bad, true);
      // Under load a bad request may meet a full queue first.
      if (out.s.status === 429) out.s.ok = true;
    }
    samples.push(out.s);
    if (out.s.status === 429) await sleep(Math.min(5, Number(out.res?.headers.get('retry-after') ?? 1)) * 1000);
  }
}

function percentile(xs: number[], p: number): number {
  if (!xs.length) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!;
}

async function run(name: string, extra: string[], useIds: boolean): Promise<Record<string, unknown>> {
  const server = await startServer(extra);
  // Warm up: compile/load every graph once, outside the measurement.
  await fetch(`${server.url}/v1/segment`, {
    method: 'POST',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify({ image: IMAGES[0]!.toString('base64'), question: 'warm up', answer: '[SEG]' }),
  });
  const samples: Sample[] = [];
  const rss: number[] = [];
  const sampler = setInterval(() => rss.push(rssBytes(server.pid)), 1000);
  const t0 = performance.now();
  const deadline = t0 + DURATION_S * 1000;
  await Promise.all(Array.from({ length: CLIENTS }, () => client(server.url, deadline, samples, useIds)));
  const wall = (performance.now() - t0) / 1000;
  clearInterval(sampler);
  const code = await server.stop();
  const served = samples.filter((s) => s.status === 200 && s.kind !== 'bad');
  const byStatus: Record<string, number> = {};
  for (const s of samples) byStatus[s.status] = (byStatus[s.status] ?? 0) + 1;
  const lat = served.map((s) => s.ms);
  const kinds = [...new Set(served.map((s) => s.kind))];
  const third = Math.floor(rss.length / 3);
  const result = {
    name,
    clients: CLIENTS,
    duration_s: Math.round(wall),
    requests: samples.length,
    by_status: byStatus,
    failures: samples.filter((s) => !s.ok).length,
    served_per_s: +(served.length / wall).toFixed(2),
    p50_ms: Math.round(percentile(lat, 50)),
    p99_ms: Math.round(percentile(lat, 99)),
    by_kind: Object.fromEntries(
      kinds.map((k) => {
        const l = served.filter((s) => s.kind === k).map((s) => s.ms);
        return [k, { n: l.length, p50_ms: Math.round(percentile(l, 50)), p99_ms: Math.round(percentile(l, 99)) }];
      }),
    ),
    bad_request_p50_ms: Math.round(
      percentile(
        samples.filter((s) => s.kind === 'bad' && s.status !== 429).map((s) => s.ms),
        50,
      ),
    ),
    rss_max_mib: Math.round(Math.max(...rss) / 2 ** 20),
    rss_first_third_max_mib: Math.round(Math.max(...rss.slice(0, Math.max(1, third))) / 2 ** 20),
    rss_last_third_max_mib: Math.round(Math.max(...rss.slice(-Math.max(1, third))) / 2 ** 20),
    exit_code_after_sigterm: code,
  };
  process.stdout.write(`${JSON.stringify(result)}\n`);
  return result;
}

const machine = { cpus: cpus().length, cpu: cpus()[0]?.model, node: process.version };
const lisa = await run('lisa serve (bounded queue 32, image and KV caches)', ['--max-queue', '32'], true);
const gradio = await run(
  'Gradio-style baseline (one at a time, unbounded queue, no caches)',
  ['--max-queue', '100000', '--cache-mb', '0'],
  false,
);
const out = { date: new Date().toISOString(), machine, model: MODEL, lisa, gradio };
writeFileSync(JSON_OUT, `${JSON.stringify(out, null, 2)}\n`);
process.stdout.write(`written ${JSON_OUT}\n`);
const failed = (lisa.failures as number) + (lisa.exit_code_after_sigterm === 0 ? 0 : 1);
process.exit(failed ? 1 : 0);
