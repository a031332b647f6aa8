import { existsSync, readdirSync, rmSync, statSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { LisaError } from '../errors.js';
import { defaultCacheDir } from '../graph/session.js';

interface Entry {
  kind: 'graph' | 'weights';
  name: string;
  bytes: number;
  files: number;
}

/** What the cache holds: each compiled graph's own files (links to converted weights not counted) and the weight store. */
export function listCache(dir: string): Entry[] {
  const out: Entry[] = [];
  const graphs = join(dir, 'graphs');
  if (existsSync(graphs)) {
    for (const name of readdirSync(graphs).sort()) {
      const p = join(graphs, name);
      if (!statSync(p).isDirectory() || name.startsWith('.staging')) continue;
      let bytes = 0,
        files = 0;
      for (const f of readdirSync(p)) {
        const st = statSync(join(p, f));
        files++;
        // Hard links into the weight store or to checkpoint files are shared: counted there, not here.
        if (st.nlink <= 1) bytes += st.size;
      }
      out.push({ kind: 'graph', name, bytes, files });
    }
  }
  const weights = join(dir, 'weights');
  if (existsSync(weights)) {
    let bytes = 0,
      files = 0;
    for (const f of readdirSync(weights)) {
      bytes += statSync(join(weights, f)).size;
      if (f.endsWith('.bin')) files++; // each with its .crc32 beside it
    }
    out.push({ kind: 'weights', name: 'weights', bytes, files });
  }
  return out;
}

const human = (b: number): string =>
  b >= 2 ** 30 ? `${(b / 2 ** 30).toFixed(2)} GiB` : b >= 2 ** 20 ? `${(b / 2 ** 20).toFixed(1)} MiB` : `${(b / 1024).toFixed(1)} KiB`;

export function registerCache(program: Command): void {
  const cache = program.command('cache').description('list or clear the compiled graphs and converted weights in the cache');
  cache
    .command('list')
    .description('every compiled graph and the converted-weight store, with sizes')
    .option('--cache-dir <dir>', 'cache folder (default $LISA_CACHE or ~/.cache/lisa-ts)')
    .option('--json', 'print JSON')
    .action((o: { cacheDir?: string; json?: boolean }) => {
      const dir = o.cacheDir ?? defaultCacheDir();
      const entries = listCache(dir);
      if (o.json) {
        process.stdout.write(JSON.stringify({ dir, entries }, null, 2) + '\n');
        return;
      }
      for (const e of entries)
        process.stdout.write(`${human(e.bytes).padStart(10)}  ${e.kind === 'graph' ? e.name : `converted weights (${e.files} files)`}\n`);
      process.stdout.write(`${human(entries.reduce((n, e) => n + e.bytes, 0)).padStart(10)}  in ${dir}\n`);
    });
  cache
    .command('clear')
    .description(
      'remove compiled graphs whose name starts with one of NAMES (all of them without NAMES), and with --all the converted weights too',
    )
    .argument('[names...]', 'graph name prefixes, e.g. llm_int4 sam_image_encoder')
    .option('--cache-dir <dir>', 'cache folder (default $LISA_CACHE or ~/.cache/lisa-ts)')
    .option('--all', 'also the converted-weight store (every conversion is redone on next use)')
    .action((names: string[], o: { cacheDir?: string; all?: boolean }) => {
      const dir = o.cacheDir ?? defaultCacheDir();
      if (!existsSync(dir)) throw new LisaError(`${dir}: no cache folder`);
      const entries = listCache(dir).filter((e) => e.kind === 'graph' && (names.length === 0 || names.some((n) => e.name.startsWith(n))));
      if (names.length && entries.length === 0) throw new LisaError(`no compiled graph in ${dir} starts with ${names.join(' or ')}`);
      let freed = 0;
      for (const e of entries) {
        rmSync(join(dir, 'graphs', e.name), { recursive: true, force: true });
        freed += e.bytes;
      }
      if (o.all) {
        for (const e of listCache(dir)) if (e.kind === 'weights') freed += e.bytes;
        rmSync(join(dir, 'weights'), { recursive: true, force: true });
      }
      process.stdout.write(
        `removed ${entries.length} graph${entries.length === 1 ? '' : 's'}${o.all ? ' and the converted weights' : ''} (${human(freed)})\n`,
      );
    });
}
