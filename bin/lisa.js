#!/usr/bin/env node
// The `lisa` command. The TypeScript is compiled to dist/ by `npm ci` (the `prepare` script).
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { constants } from 'node:os';
import { fileURLToPath } from 'node:url';

// A long command line (a ~30 KB --query) lives on the main thread's stack, and onnxruntime's session building
// then overflowed the default 8 MB and crashed with SIGSEGV. Such a command re-runs itself with a larger stack.
const argBytes = process.argv.reduce((n, a) => n + Buffer.byteLength(a) + 1, 0);
if (argBytes > 16384 && !process.env.LISA_BIG_STACK && process.platform !== 'win32') {
  process.on('SIGINT', () => {}); // the child handles Ctrl-C (train saves a checkpoint); stay until it ends
  const script = 'ulimit -s unlimited 2>/dev/null || ulimit -s 262144 2>/dev/null; exec "$@"';
  const r = spawnSync('/bin/sh', ['-c', script, 'sh', process.execPath, ...process.execArgv, ...process.argv.slice(1)], { stdio: 'inherit', env: { ...process.env, LISA_BIG_STACK: '1' } });
  process.exit(r.status ?? (r.signal ? 128 + (constants.signals[r.signal] ?? 0) : 1));
}

const entry = new URL('../dist/src/cli/main.js', import.meta.url);
if (!existsSync(fileURLToPath(entry))) {
  console.error('lisa: not built yet; run `npm ci` (or `npm run build`) in the lisa-ts checkout first');
  process.exit(1);
}
const { main } = await import(entry.href);
process.exitCode = await main(process.argv);
