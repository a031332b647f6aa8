/**
 * `npm run fuzz [-- --cases N] [--only NAME,…] [--seed S] [--case-timeout-ms 10000] [--heap-mb 1024]`: a mutation fuzzer over lisa-ts's parsers of untrusted
 * files. Each case takes a real seed file, applies mutations (bit flips, byte sets, truncation, extension, splices,
 * and structure-aware edits of JSON values and of length/offset fields) and parses the result. Every outcome must
 * be a parse or a LisaError naming the file; any other exception is a finding (printed with its seed and case to
 * reproduce). The slowest case per parser is reported. Each parser's campaign runs in a child process with a heap cap;
 * a case past the time limit or one that kills the process is a finding, and the campaign goes on after it.
 * test/fuzz.test.ts runs a short seeded campaign in process.
 */
import { fork } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LisaError } from '../src/errors.js';
import { Graph } from '../src/graph/graph.js';
import { readOnnx } from '../src/graph/onnx-read.js';
import { serializeModel } from '../src/graph/onnx.js';
import { decodeImage } from '../src/image/decode.js';
import { mulberry32 } from '../src/inference/generate.js';
import { parseNpy } from '../src/io/npy.js';
import { unpickle } from '../src/io/pickle.js';
import { readSafetensors } from '../src/io/safetensors.js';
import { readTorchBin } from '../src/io/torch-bin.js';
import { rasterizeShapes, readReasonSegJson } from '../src/eval/reasonseg.js';
import { referAnnotations, referMask } from '../src/eval/refer.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { readLisaConfig } from '../src/models/config.js';
import { SentencePieceModel } from '../src/text/sentencepiece.js';
import { LlamaTokenizer } from '../src/text/tokenizer.js';

const SHARED = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'shared');
const FIX = join(SHARED, 'fixtures');

export interface Target {
  name: string;
  seeds: () => Uint8Array[] | Promise<Uint8Array[]>;
  /** Parses one case written at `path` (what a user's file would be); the message of a LisaError must name `path`. */
  parse: (path: string, bytes: Uint8Array) => unknown | Promise<unknown>;
  /** The parse reads a folder (a config.json, a tokenizer folder): the case is written as `file` inside one. */
  file?: string;
}

export interface Finding {
  target: string;
  caseIndex: number;
  error: string;
}
export interface CampaignResult {
  target: string;
  cases: number;
  parsed: number;
  refused: number;
  findings: Finding[];
  slowestMs: number;
}

const u8 = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'utf8'));

async function smallImages(): Promise<Uint8Array[]> {
  const sharp = (await import('sharp')).default;
  const base = sharp({ create: { width: 12, height: 9, channels: 3, background: { r: 200, g: 40, b: 90 } } });
  return [
    new Uint8Array(await base.clone().png().toBuffer()),
    new Uint8Array(await base.clone().jpeg().toBuffer()),
    new Uint8Array(await base.clone().webp().toBuffer()),
  ];
}

function tinyOnnx(): Uint8Array {
  const g = new Graph('fuzz');
  const x = g.input('x', 'float32', [2, 3]);
  g.output(g.add(g.matmul(x, g.constant('float32', [3, 2], [1, 2, 3, 4, 5, 6])), g.constant('float32', [2], [0.5, -1])), 'y');
  const bytes = serializeModel(g, (v) => {
    const init = g.initializers.find((i) => i.value === v)!;
    return { kind: 'inline', bytes: (init.source as { bytes: Uint8Array }).bytes };
  });
  return new Uint8Array(bytes);
}

/** A pickle like the refs files: a list of dicts of strings, ints, floats, lists. */
function refsPickle(): Uint8Array {
  // Protocol 2: PROTO 2, EMPTY_LIST, MARK, EMPTY_DICT, MARK, 'split' 'train' 'ann_id' 7 'sentences' [ {'sent': 'a cat'} ] SETITEMS, APPENDS, STOP
  const s = (t: string): number[] => {
    const b = [...Buffer.from(t, 'utf8')];
    return [0x58, b.length, 0, 0, 0, ...b];
  };
  const bytes = [
    0x80,
    2,
    0x5d,
    0x28,
    0x7d,
    0x28,
    ...s('split'),
    ...s('train'),
    ...s('ann_id'),
    0x4b,
    7,
    ...s('score'),
    0x47,
    0x3f,
    0xe0,
    0,
    0,
    0,
    0,
    0,
    0,
    ...s('sentences'),
    0x5d,
    0x28,
    0x7d,
    ...s('sent'),
    ...s('a cat'),
    0x73,
    0x65,
    0x75,
    0x65,
    0x2e,
  ];
  return new Uint8Array(bytes);
}

export const TARGETS: Target[] = [
  {
    name: 'safetensors',
    seeds: () => [readFileSync(join(FIX, 'llama-stories260k', 'model.safetensors'))],
    parse: (p) => {
      const f = readSafetensors(p);
      try {
        for (const t of f.tensors.slice(0, 4)) t.float32();
      } finally {
        f.close();
      }
    },
  },
  {
    name: 'torch-bin',
    seeds: () => [readFileSync(join(FIX, 'torch-bin', 'pytorch_model-00002-of-00002.bin'))],
    parse: (p) => {
      const f = readTorchBin(p);
      try {
        for (const t of f.tensors.slice(0, 4)) t.float32();
      } finally {
        f.close();
      }
    },
  },
  { name: 'pickle', seeds: () => [refsPickle()], parse: (p, b) => unpickle(b, { source: p, globals: new Map() }) },
  {
    name: 'npy',
    seeds: () => [
      readFileSync(join(FIX, 'llama-stories260k', 'final_hidden.npy')),
      readFileSync(join(FIX, 'train-step', 'batch', 'input_ids.npy')),
    ],
    parse: (p, b) => parseNpy(b, p),
  },
  {
    name: 'sentencepiece',
    seeds: () => [readFileSync(join(FIX, 'lisa-tiny', 'checkpoint', 'tokenizer.model'))],
    parse: (p, b) => SentencePieceModel.parse(b, p).encode('a cat on a mat'),
  },
  {
    name: 'config-json',
    file: 'config.json',
    seeds: () => [readFileSync(join(FIX, 'lisa-tiny', 'checkpoint', 'config.json'))],
    parse: (p) => readLisaConfig(dirname(p)),
  },
  {
    name: 'added-tokens-json',
    file: 'added_tokens.json',
    seeds: () => [readFileSync(join(FIX, 'lisa-tiny', 'checkpoint', 'added_tokens.json'))],
    parse: (p) => LlamaTokenizer.load(dirname(p)).encode('Sure, [SEG].'),
  },
  {
    name: 'reasonseg-json',
    seeds: () => [
      readFileSync(join(SHARED, 'data', 'reasonseg_annotations_only', 'val', '101677526_e9a3ba3ae1_o.json')),
      u8(
        JSON.stringify({
          text: ['x'],
          is_sentence: false,
          shapes: [
            {
              label: 'target',
              points: [
                [1, 1],
                [30, 2],
                [12, 40],
              ],
            },
          ],
        }),
      ),
    ],
    parse: (p) => {
      const a = readReasonSegJson(p);
      return rasterizeShapes(a.shapes, 64, 80);
    },
  },
  {
    // A sharded checkpoint's index (the case) beside the fixture's real shards.
    name: 'shard-index',
    file: 'pytorch_model.bin.index.json',
    seeds: () => [readFileSync(join(FIX, 'torch-bin', 'pytorch_model.bin.index.json'))],
    parse: (p) => {
      for (const f of ['pytorch_model-00001-of-00002.bin', 'pytorch_model-00002-of-00002.bin'])
        if (!existsSync(join(dirname(p), f))) copyFileSync(join(FIX, 'torch-bin', f), join(dirname(p), f));
      const c = openCheckpoint(p);
      try {
        for (const t of [...c.tensors.values()].slice(0, 4)) t.float32();
      } finally {
        c.close();
      }
    },
  },
  {
    // refCOCO's instances.json, then each annotation's ground truth (polygons or RLE) rasterised.
    name: 'refer-instances',
    file: 'instances.json',
    seeds: () => [
      u8(
        JSON.stringify({
          annotations: [
            { id: 1, image_id: 9, category_id: 1, segmentation: [[1, 1, 30, 2, 12, 40]], bbox: [1, 1, 29, 39] },
            { id: 2, image_id: 9, category_id: 2, segmentation: { size: [48, 64], counts: [100, 20, 2952] } },
          ],
        }),
      ),
    ],
    parse: (p) => {
      const anns = referAnnotations(dirname(dirname(p)), basename(dirname(p)));
      for (const id of anns.keys()) referMask(anns, { annIds: [id], noTarget: false } as never, 48, 64, p);
    },
  },
  { name: 'image', seeds: smallImages, parse: (p) => decodeImage(p) },
  { name: 'onnx', seeds: () => [tinyOnnx()], parse: (p) => readOnnx(p) },
];

const cat = (...parts: Uint8Array[]): Uint8Array => new Uint8Array(Buffer.concat(parts));

/** The case's bytes: one to four mutations of a seed (some structure-aware). */
export function mutate(seed: Uint8Array, others: readonly Uint8Array[], rand: () => number): Uint8Array {
  let b: Uint8Array = Uint8Array.from(seed);
  const n = 1 + Math.floor(rand() * 4);
  const pos = (): number => Math.floor(rand() * Math.max(1, b.length));
  const interesting = [0, 1, 0x7f, 0x80, 0xff, 0xfe];
  for (let k = 0; k < n; k++) {
    const kind = Math.floor(rand() * 9);
    if (kind === 0 && b.length)
      b[pos()]! ^= 1 << Math.floor(rand() * 8); // bit flip
    else if (kind === 1 && b.length)
      b[pos()] = interesting[Math.floor(rand() * interesting.length)]!; // byte set
    else if (kind === 2)
      b = b.subarray(0, pos()); // truncation
    else if (kind === 3) {
      const extra = Uint8Array.from({ length: 1 + Math.floor(rand() * 64) }, () => Math.floor(rand() * 256));
      const p = pos();
      b = cat(b.subarray(0, p), extra, b.subarray(p));
    } else if (kind === 4 && others.length) {
      const o = others[Math.floor(rand() * others.length)]!;
      const a = Math.floor(rand() * o.length),
        len = Math.floor(rand() * Math.min(256, o.length - a));
      const p = pos();
      b = cat(b.subarray(0, p), o.subarray(a, a + len), b.subarray(p));
    } else if (kind === 5 && b.length >= 8) {
      // A little-endian 32- or 64-bit field (a length, an offset, a count) set to an extreme.
      const p = Math.floor(rand() * (b.length - 8)),
        v = [0, 1, 0xffffffff, 0x7fffffff, 0x80000000][Math.floor(rand() * 5)]!;
      new DataView(b.buffer, b.byteOffset).setUint32(p, v, true);
      if (rand() < 0.5) new DataView(b.buffer, b.byteOffset).setUint32(p + 4, rand() < 0.5 ? 0 : 0xffffffff, true);
    } else if (kind === 6)
      b = mutateJson(b, rand); // structure-aware JSON (headers, configs, annotations)
    else if (kind === 7 && b.length) {
      const p = pos();
      b.fill(0, p, Math.min(b.length, p + Math.floor(rand() * 32)));
    } else if (b.length > 2) {
      const p = pos(),
        q = pos();
      const t = b[p]!;
      b[p] = b[q]!;
      b[q] = t;
    }
  }
  return b;
}

/** Replaces one value of the first JSON object inside the bytes (a whole file, or a safetensors header) with an extreme one. */
function mutateJson(b: Uint8Array, rand: () => number): Uint8Array {
  // The first JSON object of the first 64 KiB (a header, a config, an annotation): a bounded scan.
  const text = Buffer.from(b.subarray(0, 65536)).toString('latin1');
  const start = text.indexOf('{');
  if (start < 0) return b;
  let depth = 0,
    end = -1;
  for (let i = start; i < text.length; i++) {
    if (text[i] === '{') depth++;
    else if (text[i] === '}' && --depth === 0) {
      end = i + 1;
      break;
    }
  }
  if (end < 0) return b;
  let obj: unknown;
  try {
    obj = JSON.parse(Buffer.from(b.subarray(start, end)).toString('utf8'));
  } catch {
    return b;
  }
  const extremes: unknown[] = [
    -1,
    0,
    1e308,
    -1e308,
    2 ** 53,
    1.5,
    '',
    'x'.repeat(1000),
    null,
    [],
    {},
    [[]],
    true,
    [-1, 2 ** 40],
    [
      [1e12, -1e12],
      [3, 4],
    ],
  ];
  const paths: (string | number)[][] = [];
  const walk = (v: unknown, path: (string | number)[]): void => {
    paths.push(path);
    if (Array.isArray(v)) v.slice(0, 8).forEach((x, i) => walk(x, [...path, i]));
    else if (v && typeof v === 'object')
      Object.keys(v)
        .slice(0, 24)
        .forEach((k) => walk((v as Record<string, unknown>)[k], [...path, k]));
  };
  walk(obj, []);
  const path = paths[Math.floor(rand() * paths.length)]!;
  if (path.length === 0) return b;
  let parent = obj as Record<string | number, unknown>;
  for (const k of path.slice(0, -1)) parent = parent[k] as Record<string | number, unknown>;
  parent[path[path.length - 1]!] = extremes[Math.floor(rand() * extremes.length)];
  const body = Buffer.from(JSON.stringify(obj), 'utf8');
  return cat(b.subarray(0, start), body, b.subarray(end));
}

type Outcome = { i: number; kind: 'parsed' | 'refused' | 'finding'; ms: number; error?: string };

/**
 * One parser's campaign: `cases` mutated files, each parsed; findings are the exceptions that are not LisaErrors
 * naming the file. `from`: cases before it are generated (the random stream is the same) but not parsed, so a
 * campaign restarted after a hung or crashed case goes on with the next one. `onCase` hears each case begin and end.
 */
export async function campaign(
  t: Target,
  cases: number,
  seed: number,
  opts: { from?: number; onCase?: (i: number) => void; onOutcome?: (o: Outcome) => void } = {},
): Promise<CampaignResult> {
  const seeds = await t.seeds();
  const dir = mkdtempSync(join(tmpdir(), `lisa-fuzz-${t.name}-`));
  const rand = mulberry32(seed);
  const result: CampaignResult = { target: t.name, cases, parsed: 0, refused: 0, findings: [], slowestMs: 0 };
  try {
    // Folder parsers get the other files of their folder from the fixture (the case replaces one of them).
    if (t.file)
      for (const f of ['config.json', 'tokenizer.model', 'added_tokens.json', 'special_tokens_map.json', 'tokenizer_config.json']) {
        try {
          writeFileSync(join(dir, f), readFileSync(join(FIX, 'lisa-tiny', 'checkpoint', f)));
        } catch {
          /* optional */
        }
      }
    const path = join(dir, t.file ?? `case.bin`);
    for (let i = 0; i < cases; i++) {
      const bytes = mutate(seeds[Math.floor(rand() * seeds.length)]!, seeds, rand);
      if (i < (opts.from ?? 0)) continue;
      mkdirSync(dir, { recursive: true });
      writeFileSync(path, bytes);
      opts.onCase?.(i);
      const t0 = performance.now();
      let o: Outcome;
      try {
        await t.parse(path, bytes);
        result.parsed++;
        o = { i, kind: 'parsed', ms: 0 };
      } catch (e) {
        if (e instanceof LisaError && (e.message.includes(path) || e.message.includes(dir))) {
          result.refused++;
          o = { i, kind: 'refused', ms: 0 };
        } else {
          const error =
            e instanceof LisaError
              ? `LisaError without the file name: ${e.message}`
              : `${(e as Error).name}: ${(e as Error).message}`.slice(0, 300);
          result.findings.push({ target: t.name, caseIndex: i, error });
          o = { i, kind: 'finding', ms: 0, error };
        }
      }
      o.ms = performance.now() - t0;
      result.slowestMs = Math.max(result.slowestMs, o.ms);
      opts.onOutcome?.(o);
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  return result;
}

/**
 * A campaign in a child process under a memory cap, watched: a case that runs past `caseMs` (a hang) or kills the
 * process (out of memory, a native crash) is a finding, and the campaign restarts after it.
 */
async function watchedCampaign(t: Target, cases: number, seed: number, caseMs: number, heapMb: number): Promise<CampaignResult> {
  const result: CampaignResult = { target: t.name, cases, parsed: 0, refused: 0, findings: [], slowestMs: 0 };
  let from = 0;
  while (from < cases) {
    let current = from;
    let last = Date.now();
    const child = fork(
      fileURLToPath(import.meta.url),
      ['--child', t.name, '--cases', String(cases), '--seed', String(seed), '--from', String(from)],
      {
        execArgv: [`--max-old-space-size=${heapMb}`],
        stdio: ['ignore', 'ignore', 'ignore', 'ipc'],
      },
    );
    const end = await new Promise<{ code: number | null; signal: string | null; hung: boolean }>((resolve) => {
      const timer = setInterval(() => {
        if (Date.now() - last > caseMs) {
          child.kill('SIGKILL');
          clearInterval(timer);
          resolve({ code: null, signal: 'SIGKILL', hung: true });
        }
      }, 200);
      child.on('message', (m: { case?: number; outcome?: Outcome }) => {
        last = Date.now();
        if (m.case !== undefined) current = m.case;
        const o = m.outcome;
        if (!o) return;
        if (o.kind === 'parsed') result.parsed++;
        else if (o.kind === 'refused') result.refused++;
        else result.findings.push({ target: t.name, caseIndex: o.i, error: o.error! });
        result.slowestMs = Math.max(result.slowestMs, o.ms);
        current = o.i + 1;
      });
      child.on('exit', (code, signal) => {
        clearInterval(timer);
        resolve({ code, signal, hung: false });
      });
    });
    if (end.code === 0 && current >= cases) break;
    result.findings.push({
      target: t.name,
      caseIndex: current,
      error: end.hung
        ? `hang: no result within ${caseMs} ms`
        : `the process died (${end.signal ?? `exit ${end.code}`}; out of memory under ${heapMb} MB?)`,
    });
    result.slowestMs = Math.max(result.slowestMs, end.hung ? caseMs : 0);
    from = current + 1;
  }
  return result;
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const get = (f: string): string | undefined => {
    const i = args.indexOf(f);
    return i >= 0 ? args[i + 1] : undefined;
  };
  const cases = Number(get('--cases') ?? 100000),
    seed = Number(get('--seed') ?? 1);
  const child = get('--child');
  if (child) {
    const t = TARGETS.find((x) => x.name === child)!;
    await campaign(t, cases, seed, {
      from: Number(get('--from') ?? 0),
      onCase: (i) => process.send?.({ case: i }),
      onOutcome: (outcome) => process.send?.({ outcome }),
    });
    process.disconnect?.();
    return;
  }
  const only = get('--only')?.split(',');
  const caseMs = Number(get('--case-timeout-ms') ?? 10_000),
    heapMb = Number(get('--heap-mb') ?? 1024);
  let failed = 0;
  for (const t of TARGETS) {
    if (only && !only.includes(t.name)) continue;
    const r = await watchedCampaign(t, cases, seed, caseMs, heapMb);
    failed += r.findings.length;
    process.stdout.write(
      `${t.name.padEnd(18)} ${r.cases} cases: ${r.parsed} parsed, ${r.refused} refused with a LisaError, ${r.findings.length} ` +
        `findings; slowest ${r.slowestMs.toFixed(1)} ms\n`,
    );
    for (const f of r.findings.slice(0, 5)) process.stdout.write(`  case ${f.caseIndex} (seed ${seed}): ${f.error}\n`);
  }
  process.exitCode = failed ? 1 : 0;
}

if (process.argv[1] && fileURLToPath(import.meta.url) === process.argv[1]) await main();
