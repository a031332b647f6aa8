/**
 * `npm run bench:scale`: evaluation throughput over the queue with 1, 2 and 3 `lisa worker`s on this machine
 * (its cores split between them), beside the single-process `lisa eval` in the same run.
 *
 *   npm run bench:scale -- [--model DIR --vision-tower DIR] [--protocol generate] [--max-new-tokens 32] [--json FILE]
 *
 * The workload is the real-image sanity set built from ../shared/data (19 images, one query each). Each worker count
 * gets a fresh Redis and fresh workers, warmed up (graphs compiled) before the clock starts.
 */
import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(fileURLToPath(import.meta.url), '..', '..', '..');
const SHARED = resolve(ROOT, '..', 'shared');
const LISA = join(ROOT, 'bin', 'lisa.js');
const arg = (name: string, def: string): string => {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1]! : def;
};
const MODEL = arg('model', join(SHARED, 'fixtures', 'lisa-tiny', 'checkpoint'));
const TOWER = arg('vision-tower', join(MODEL, 'clip-vit-tiny-patch14'));
const PROTOCOL = arg('protocol', 'generate');
const TOKENS = arg('max-new-tokens', '32');
const JSON_OUT = arg('json', join(ROOT, 'bench', `results-scale-out-${new Date().toISOString().slice(0, 10)}.json`));
const CORES = availableParallelism();

const tmp = mkdtempSync(join(tmpdir(), 'lisa-scale-bench-'));
const cache = join(ROOT, '.cache', 'scale-bench');
const data = join(tmp, 'sanity');
spawnSync(process.execPath, [LISA, 'sanity-set', '--data', join(SHARED, 'data'), '--out', data], { stdio: 'inherit' });
const evalArgs = ['--data', data, '--dataset', 'reasonseg', '--protocol', PROTOCOL, '--max-new-tokens', TOKENS];
const model = ['--model', MODEL, '--vision-tower', TOWER, '--cache-dir', cache];
spawnSync(process.execPath, [LISA, 'convert', ...model], { stdio: 'ignore' });

function freePort(): Promise<number> {
  return new Promise((r) => {
    const s = createServer().listen(0, '127.0.0.1', () => {
      const p = (s.address() as { port: number }).port;
      s.close(() => r(p));
    });
  });
}

function timedEval(extra: string[], out: string): { seconds: number; queries: number } {
  const t = performance.now();
  const r = spawnSync(process.execPath, [LISA, 'eval', ...evalArgs, ...extra, '--out', out], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`lisa eval failed: ${r.stderr}`);
  const queries = readFileSync(join(out, 'results.jsonl'), 'utf8').trim().split('\n').length;
  return { seconds: (performance.now() - t) / 1000, queries };
}

async function withWorkers(n: number): Promise<{ seconds: number; queries: number; threads: number }> {
  const port = await freePort();
  const redis = spawn('redis-server', ['--port', String(port), '--bind', '127.0.0.1', '--save', '', '--appendonly', 'no'], {
    stdio: 'ignore',
  });
  await new Promise((r) => setTimeout(r, 300));
  const url = `redis://127.0.0.1:${port}`;
  const threads = Math.max(1, Math.floor(CORES / n));
  const workers: ChildProcess[] = [];
  let log = '';
  for (let i = 0; i < n; i++) {
    const w = spawn(process.execPath, [LISA, 'worker', '--queue', url, ...model, '--threads', String(threads)], {
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    w.stderr!.on('data', (d: Buffer) => (log += d.toString()));
    workers.push(w);
  }
  while ((log.match(/ready/g) ?? []).length < n) await new Promise((r) => setTimeout(r, 100));
  // Warm-up: every worker opens its sessions on a first job (not timed).
  timedEval(['--queue', url, '--limit', String(2 * n)], join(tmp, `warm-${n}`));
  const r = timedEval(['--queue', url, '--in-flight', String(4 * n)], join(tmp, `queue-${n}`));
  for (const w of workers) w.kill('SIGTERM');
  redis.kill('SIGTERM');
  return { ...r, threads };
}

timedEval([...model, '--limit', '2'], join(tmp, 'warm-local'));
const local = timedEval([...model, '--threads', String(CORES)], join(tmp, 'local'));
const rows: Record<string, unknown>[] = [
  {
    name: 'single process (lisa eval --model)',
    workers: 0,
    threads: CORES,
    seconds: +local.seconds.toFixed(2),
    queries_per_s: +(local.queries / local.seconds).toFixed(3),
  },
];
let one = 0;
for (const n of [1, 2, 3]) {
  const r = await withWorkers(n);
  const qps = r.queries / r.seconds;
  if (n === 1) one = qps;
  rows.push({
    name: `lisa eval --queue, ${n} worker(s)`,
    workers: n,
    threads_per_worker: r.threads,
    seconds: +r.seconds.toFixed(2),
    queries_per_s: +qps.toFixed(3),
    speedup_vs_1_worker: +(qps / one).toFixed(2),
    scaling_efficiency: +(qps / one / n).toFixed(2),
  });
  process.stdout.write(`${JSON.stringify(rows[rows.length - 1])}\n`);
}
const result = {
  date: new Date().toISOString(),
  machine: { cpus: CORES, cpu: cpus()[0]?.model },
  model: MODEL,
  protocol: PROTOCOL,
  max_new_tokens: Number(TOKENS),
  queries: local.queries,
  rows,
};
writeFileSync(JSON_OUT, `${JSON.stringify(result, null, 2)}\n`);
process.stdout.write(`${JSON.stringify(rows[0])}\nwritten ${JSON_OUT}\n`);
rmSync(tmp, { recursive: true, force: true });
