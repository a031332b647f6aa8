import { createHash } from 'node:crypto';
import {
  closeSync,
  existsSync,
  linkSync,
  mkdirSync,
  openSync,
  readFileSync,
  readSync,
  realpathSync,
  renameSync,
  rmSync,
  statSync,
  writeSync,
} from 'node:fs';
import { availableParallelism, homedir } from 'node:os';
import { join } from 'node:path';
import { crc32 } from 'node:zlib';
import ort from 'onnxruntime-node';
import { LisaError } from '../errors.js';
import type { DType } from '../io/dtype.js';
import { RandomAccessFile, writeAtomic } from '../io/file.js';
import type { Graph } from './graph.js';
import type { Initializer, Value } from './ir.js';
import { serializeModel, type Placement } from './onnx.js';
import { hostTensor, type HostTensor } from './tensor.js';

export interface EngineOptions {
  /** Where compiled graphs and converted weights are kept between runs. Default: $LISA_CACHE or ~/.cache/lisa-ts. */
  cacheDir?: string;
  /** onnxruntime intra-op threads. Default: all cores. */
  threads?: number;
  /** onnxruntime execution providers, in order of preference. Default: ['cpu']. */
  executionProviders?: string[];
  /**
   * onnxruntime's CPU memory arena. Default off: SAM's 1 GiB attention intermediates otherwise stay resident
   * (measured: SAM ViT-H peak RSS 6.5 GiB off vs ~20 GiB total on, and faster).
   */
  memoryArena?: boolean;
  /** Called as a compile writes converted weights into the cache (graph name, weights done, total). */
  onWrite?: (graph: string, done: number, total: number) => void;
  /** onnxruntime weight pre-packing (a packed copy of each MatMul weight beside the original). Default on. */
  prepack?: boolean;
  /** onnxruntime profiling: JSON traces written with this file prefix (see EngineSession.endProfiling). */
  profilePrefix?: string;
}

/** Initializers at most this big are stored inside model.onnx; bigger ones go to external data. */
const INLINE_LIMIT = 4096;
const ALIGN = 64;

/**
 * The lazy session caches' one rule: a promise is kept per key, and a rejected one is forgotten so that the next
 * call builds again (a build that failed once used to stay failed until restart).
 */
export function cachedPromise<K, V>(cache: Map<K, Promise<V>>, key: K, make: () => Promise<V>): Promise<V> {
  let p = cache.get(key);
  if (!p) {
    const made = make();
    made.catch(() => {
      if (cache.get(key) === made) cache.delete(key);
    });
    cache.set(key, made);
    p = made;
  }
  return p;
}

export function defaultCacheDir(): string {
  return process.env.LISA_CACHE ?? join(homedir(), '.cache', 'lisa-ts');
}

/**
 * Compiles graphs into a disk cache and opens onnxruntime sessions on them.
 *
 * A compiled graph is a folder `<cache>/graphs/<name>-<key>/` holding model.onnx, data.bin (constants) and
 * hard links to weight files used in place and to converted weights in `<cache>/weights/`. The key hashes the
 * serialised graph and every weight's identity (file, size, mtime, offset; or computed key), so a second run
 * with the same model finds the folder and neither rebuilds nor re-converts anything.
 */
export class Engine {
  readonly cacheDir: string;
  readonly threads: number;
  readonly executionProviders: string[];
  private readonly onWrite: EngineOptions['onWrite'];
  private readonly memoryArena: boolean;
  private readonly profilePrefix: string | undefined;
  private readonly prepack: boolean;

  constructor(opts: EngineOptions = {}) {
    this.profilePrefix = opts.profilePrefix;
    this.prepack = opts.prepack ?? true;
    this.onWrite = opts.onWrite;
    this.memoryArena = opts.memoryArena ?? false;
    this.cacheDir = opts.cacheDir ?? defaultCacheDir();
    this.threads = opts.threads ?? availableParallelism();
    this.executionProviders = opts.executionProviders ?? ['cpu'];
    if (!Number.isInteger(this.threads) || this.threads < 1) throw new LisaError(`threads must be a positive integer, got ${opts.threads}`);
  }

  /** Writes (or finds) the compiled graph on disk; returns its folder. */
  compile(graph: Graph): { dir: string; cached: boolean } {
    try {
      return this.compileOnce(graph);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      // A full disk, a quota or a read-only cache: one clear line (the staging folder and temp files are gone).
      if (code === 'ENOSPC' || code === 'EDQUOT' || code === 'EROFS' || code === 'EACCES' || code === 'EPERM') {
        throw new LisaError(
          `${this.cacheDir}: cannot write the cache (${code}) while building ${graph.name}; free space there or give another --cache-dir`,
        );
      }
      throw e;
    }
  }

  private compileOnce(graph: Graph): { dir: string; cached: boolean } {
    if (graph.outputs.length === 0) throw new Error(`graph ${graph.name} has no outputs`);
    const graphsDir = join(this.cacheDir, 'graphs');
    mkdirSync(graphsDir, { recursive: true });
    const staging = join(graphsDir, `.staging-${process.pid}-${Date.now()}-${Math.random().toString(36).slice(2)}`);
    mkdirSync(staging);
    try {
      const layout = planLayout(graph, staging, join(this.cacheDir, 'weights'), (done, total) => this.onWrite?.(graph.name, done, total));
      const model = serializeModel(graph, (v) => layout.placement.get(v.id)!);
      const hash = createHash('sha256').update(model);
      for (const id of layout.identities) hash.update(id);
      const dir = join(graphsDir, `${graph.name.replace(/[^\w.-]/g, '_')}-${hash.digest('hex').slice(0, 20)}`);
      if (existsSync(join(dir, 'model.onnx'))) {
        // A weight rebuilt since (it failed its checksum) is a new file: the folder's link still holds the old one.
        const stale = layout.converted.some(
          ({ name, stored }) => !existsSync(join(dir, name)) || statSync(join(dir, name)).ino !== statSync(stored).ino,
        );
        if (!stale) return { dir, cached: true };
        rmSync(dir, { recursive: true, force: true });
      }
      writeData(join(staging, 'data.bin'), layout.toWrite);
      writeAtomic(join(staging, 'model.onnx'), [model]);
      try {
        renameSync(staging, dir);
      } catch (e) {
        // Another process finished the same graph first: theirs is as good as ours.
        if (!existsSync(join(dir, 'model.onnx'))) throw e;
      }
      return { dir, cached: false };
    } finally {
      rmSync(staging, { recursive: true, force: true });
    }
  }

  /**
   * Compiles `graph` and opens a session on it. `memoryArena` overrides the engine's setting for this session;
   * onnxruntime's memory patterns stay off (they are planned and kept per input shape, and a KV-cache decoder
   * sees a new shape every token).
   */
  async load(graph: Graph, opts: { memoryArena?: boolean; prepack?: boolean } = {}): Promise<EngineSession> {
    const { dir, cached } = this.compile(graph);
    try {
      return await this.open(graph, dir, opts);
    } catch (e) {
      if (!cached) throw e;
      // A cached graph onnxruntime cannot load (a damaged file): rebuilt once, never trusted again.
      rmSync(dir, { recursive: true, force: true });
      return this.open(graph, this.compile(graph).dir, opts);
    }
  }

  /**
   * A session on an ONNX file made elsewhere (MobileSAM's encoder), with this engine's threads; its inputs and outputs
   * are taken as float32 under the file's own names.
   */
  async openOnnx(path: string, what = path): Promise<EngineSession> {
    let session: ort.InferenceSession;
    try {
      session = await ort.InferenceSession.create(path, {
        intraOpNumThreads: this.threads,
        interOpNumThreads: 1,
        graphOptimizationLevel: 'all',
        logSeverityLevel: 3,
        executionProviders: this.executionProviders,
      });
    } catch (e) {
      throw new LisaError(`${what}: onnxruntime cannot load ${path} (${(e as Error).message.split('\n')[0]})`);
    }
    const value = (name: string, id: number): Value => ({ id, name, dtype: 'float32', shape: [] });
    return new EngineSession(
      path,
      session,
      session.inputNames.map(value),
      session.outputNames.map((n, i) => value(n, 1000 + i)),
    );
  }

  private async open(graph: Graph, dir: string, opts: { memoryArena?: boolean; prepack?: boolean }): Promise<EngineSession> {
    const session = await ort.InferenceSession.create(join(dir, 'model.onnx'), {
      intraOpNumThreads: this.threads,
      interOpNumThreads: 1,
      executionMode: 'sequential',
      graphOptimizationLevel: 'all',
      enableCpuMemArena: opts.memoryArena ?? this.memoryArena,
      enableMemPattern: false,
      // Warnings only about initializers the optimiser dropped (constants a gradient rule made and folded away).
      logSeverityLevel: 3,
      ...(this.profilePrefix ? { enableProfiling: true, profileFilePrefix: this.profilePrefix } : {}),
      ...((opts.prepack ?? this.prepack) ? {} : { extra: { session: { disable_prepacking: '1' } } }),
      executionProviders: this.executionProviders,
    });
    return new EngineSession(graph.name, session, graph.inputs, graph.outputs);
  }
}

/** Converted weights already checked in this process, by path → size/mtime/inode when checked. */
const verified = new Map<string, string>();

function fileStamp(path: string): string {
  const st = statSync(path);
  return `${st.size}:${st.mtimeMs}:${st.ino}`;
}

/**
 * A converted weight is used only if its size and its CRC-32 (written beside it when it was made) match: a file cut
 * short, zero-filled or flipped in place is rebuilt, never loaded. Checked once per process (~2.7 GB/s here, and
 * it warms the page cache onnxruntime reads next).
 */
function storedIntact(path: string, length: number): boolean {
  if (!existsSync(path) || statSync(path).size !== length || !existsSync(`${path}.crc32`)) return false;
  const stamp = fileStamp(path);
  if (verified.get(path) === stamp) return true;
  const want = readFileSync(`${path}.crc32`, 'utf8').trim();
  const fd = openSync(path, 'r');
  let crc = 0;
  try {
    const buf = Buffer.allocUnsafe(Math.min(length, 64 * 1024 * 1024) || 1);
    for (let pos = 0; pos < length;) {
      const n = readSync(fd, buf, 0, Math.min(buf.length, length - pos), pos);
      if (n <= 0) return false;
      crc = crc32(buf.subarray(0, n), crc);
      pos += n;
    }
  } finally {
    closeSync(fd);
  }
  if (crc.toString(16) !== want) return false;
  verified.set(path, stamp);
  return true;
}

interface Layout {
  placement: Map<number, Placement>;
  /** Strings that identify every weight's content, hashed into the cache key. */
  identities: string[];
  toWrite: { offset: number; init: Initializer }[];
  /** Converted weights hard-linked into the graph folder: link name → the store's file. */
  converted: { name: string; stored: string }[];
}

/**
 * Where every initializer goes. Converted (`computed`) weights live in a content-addressed store,
 * `<cache>/weights/<sha256(key)>.bin`, written once and hard-linked into each graph that uses them, so a
 * changed graph (or a debug variant) never converts again.
 */
function planLayout(graph: Graph, staging: string, store: string, progress: (done: number, total: number) => void): Layout {
  mkdirSync(store, { recursive: true });
  const computed = graph.initializers.filter((i) => i.source.kind === 'computed');
  let converted = 0;
  const placement = new Map<number, Placement>();
  const identities: string[] = [];
  const toWrite: { offset: number; init: Initializer }[] = [];
  const convertedLinks: { name: string; stored: string }[] = [];
  const links = new Map<string, string>(); // real path → link name in the graph folder
  let dataSize = 0;
  const toData = (init: Initializer, length: number): void => {
    dataSize = Math.ceil(dataSize / ALIGN) * ALIGN;
    placement.set(init.value.id, { kind: 'external', location: 'data.bin', offset: dataSize, length });
    toWrite.push({ offset: dataSize, init });
    dataSize += length;
  };
  for (const init of graph.initializers) {
    const src = init.source;
    if (src.kind === 'bytes') {
      identities.push(`bytes:${createHash('sha256').update(src.bytes).digest('hex')}`);
      if (src.bytes.byteLength <= INLINE_LIMIT) placement.set(init.value.id, { kind: 'inline', bytes: src.bytes });
      else toData(init, src.bytes.byteLength);
    } else if (src.kind === 'computed') {
      identities.push(`computed:${src.key}`);
      const id = createHash('sha256').update(src.key).digest('hex').slice(0, 32);
      const stored = join(store, `${id}.bin`);
      if (!storedIntact(stored, src.byteLength)) {
        progress(converted, computed.length);
        const bytes = src.produce();
        if (bytes.byteLength !== src.byteLength)
          throw new Error(`computed weight ${init.value.name} produced ${bytes.byteLength} bytes, expected ${src.byteLength}`);
        writeAtomic(stored, [bytes]);
        // The checksum goes last: a crash between the two leaves an entry without one, which is rebuilt.
        writeAtomic(`${stored}.crc32`, [`${crc32(bytes).toString(16)}\n`]);
        verified.set(stored, fileStamp(stored));
      }
      converted++;
      const name = `c-${id}.bin`;
      try {
        linkSync(stored, join(staging, name));
        placement.set(init.value.id, { kind: 'external', location: name, offset: 0, length: src.byteLength });
        convertedLinks.push({ name, stored });
      } catch {
        toData(init, src.byteLength); // no hard links here: copy into data.bin
      }
    } else {
      const real = realpathSync(src.span.path);
      const st = statSync(real);
      identities.push(`file:${real}:${st.size}:${st.mtimeMs}:${st.ino}:${src.span.offset}:${src.span.length}`);
      let name = links.get(real);
      if (name === undefined) {
        name = `w${links.size}-${createHash('sha256').update(real).digest('hex').slice(0, 12)}.bin`;
        try {
          // ONNX external data must live under the model's folder: a hard link puts it there for free.
          linkSync(real, join(staging, name));
        } catch {
          name = ''; // another filesystem: copy this file's tensors into data.bin instead
        }
        links.set(real, name);
      }
      if (name) placement.set(init.value.id, { kind: 'external', location: name, offset: src.span.offset, length: src.span.length });
      else toData(init, src.span.length);
    }
  }
  progress(computed.length, computed.length);
  return { placement, identities, toWrite, converted: convertedLinks };
}

function writeData(path: string, items: { offset: number; init: Initializer }[]): void {
  const fd = openSync(path, 'w');
  try {
    for (const { offset, init } of items) {
      const src = init.source;
      let bytes: Uint8Array;
      if (src.kind === 'bytes') bytes = src.bytes;
      else if (src.kind === 'computed') {
        bytes = src.produce();
        if (bytes.byteLength !== src.byteLength)
          throw new Error(`computed weight ${init.value.name} produced ${bytes.byteLength} bytes, expected ${src.byteLength}`);
      } else {
        const f = new RandomAccessFile(src.span.path);
        try {
          bytes = f.read(src.span.offset, src.span.length, init.value.name);
        } finally {
          f.close();
        }
      }
      let done = 0;
      while (done < bytes.byteLength) done += writeSync(fd, bytes, done, bytes.byteLength - done, offset + done);
    }
  } finally {
    closeSync(fd);
  }
}

const ORT_TYPES: Partial<Record<DType, ort.Tensor.Type>> = {
  float32: 'float32',
  float16: 'float16',
  float64: 'float64',
  int64: 'int64',
  int32: 'int32',
  int16: 'int16',
  int8: 'int8',
  uint8: 'uint8',
  bool: 'bool',
};

/** An open onnxruntime session on a compiled graph, fed and fetched by the graph's value names. */
export class EngineSession {
  constructor(
    readonly name: string,
    private readonly session: ort.InferenceSession,
    readonly inputs: readonly Value[],
    readonly outputs: readonly Value[],
  ) {}

  async run(feeds: Readonly<Record<string, HostTensor>>): Promise<Record<string, HostTensor>> {
    const ortFeeds: Record<string, ort.Tensor> = {};
    for (const v of this.inputs) {
      const t = feeds[v.name];
      if (!t) throw new Error(`${this.name}: input ${v.name} not fed`);
      if (t.dtype !== v.dtype) throw new Error(`${this.name}: input ${v.name} is ${v.dtype}, fed ${t.dtype}`);
      const type = ORT_TYPES[t.dtype];
      if (!type) throw new Error(`${this.name}: onnxruntime-node cannot take ${t.dtype} tensors`);
      ortFeeds[v.name] = new ort.Tensor(type, t.data as ort.Tensor.DataType, [...t.shape]);
    }
    const out = await this.session.run(ortFeeds);
    const result: Record<string, HostTensor> = {};
    for (const v of this.outputs) {
      const t = out[v.name]!;
      result[v.name] = hostTensor(v.dtype, t.dims as number[], t.data as HostTensor['data']);
    }
    return result;
  }

  /** Ends onnxruntime profiling (when the engine was made with `profilePrefix`) and writes its JSON trace. */
  endProfiling(): void {
    this.session.endProfiling();
  }

  async release(): Promise<void> {
    await this.session.release();
  }
}
