import { existsSync, readFileSync, statSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { LisaError } from '../errors.js';
import { readSafetensors } from './safetensors.js';
import { RandomAccessFile } from './file.js';
import type { TensorRef } from './tensor-ref.js';
import { readTorchBin } from './torch-bin.js';

/**
 * A checkpoint as Hugging Face lays it out: a single `.safetensors` / `.bin`, or shards named by an index
 * (`model.safetensors.index.json`, `pytorch_model.bin.index.json`). All lazy: opening reads headers only.
 */
export interface Checkpoint {
  /** What was opened. */
  readonly path: string;
  /** The weight files, in index order. */
  readonly files: readonly string[];
  readonly tensors: ReadonlyMap<string, TensorRef>;
  get(name: string): TensorRef;
  close(): void;
}

const INDEX_NAMES = ['model.safetensors.index.json', 'pytorch_model.bin.index.json'];
const SINGLE_NAMES = ['model.safetensors', 'pytorch_model.bin'];
const MAX_INDEX_BYTES = 64 * 1024 * 1024;

/** Opens a checkpoint folder, an index file, a `.safetensors` or a `.bin`. */
export function openCheckpoint(path: string): Checkpoint {
  if (!existsSync(path)) throw new LisaError(`${path}: no such file or folder`);
  if (statSync(path).isDirectory()) {
    for (const n of [...INDEX_NAMES, ...SINGLE_NAMES]) {
      const p = join(path, n);
      if (existsSync(p)) return openCheckpoint(p);
    }
    throw new LisaError(`${path}: not a checkpoint folder (expected one of ${[...INDEX_NAMES, ...SINGLE_NAMES].join(', ')})`);
  }
  if (path.endsWith('.json')) return openIndex(path);
  return fromFiles(path, [path]);
}

/** Opens one weight file, choosing the reader by its first bytes (zip → torch, else safetensors). */
export function openWeightFile(path: string): { tensors: TensorRef[]; close(): void } {
  const f = new RandomAccessFile(path);
  const isZip = f.size >= 4 && f.read(0, 4, 'magic').readUInt32LE(0) === 0x04034b50;
  f.close();
  return isZip ? readTorchBin(path) : readSafetensors(path);
}

function openIndex(path: string): Checkpoint {
  const size = statSync(path).size;
  if (size > MAX_INDEX_BYTES) throw new LisaError(`${path}: index file is ${size} bytes (limit ${MAX_INDEX_BYTES})`);
  let index: unknown;
  try {
    index = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new LisaError(`${path}: not valid JSON (${(e as Error).message})`);
  }
  const map = (index as { weight_map?: unknown } | null)?.weight_map;
  if (typeof map !== 'object' || map === null || Array.isArray(map)) throw new LisaError(`${path}: field "weight_map" must be an object mapping tensor names to shard files`);
  const dir = dirname(path);
  const byFile = new Map<string, string[]>();
  for (const [name, file] of Object.entries(map as Record<string, unknown>)) {
    if (typeof file !== 'string' || file !== basename(file) || file === '..' || file === '.') {
      throw new LisaError(`${path}: weight_map["${name}"] must name a shard file in the same folder, found ${JSON.stringify(file)}`);
    }
    const list = byFile.get(file) ?? [];
    list.push(name);
    byFile.set(file, list);
  }
  const files = [...byFile.keys()].map((f) => join(dir, f));
  const ckpt = fromFiles(path, files);
  for (const [file, names] of byFile) {
    for (const name of names) {
      const t = ckpt.tensors.get(name);
      if (!t) { ckpt.close(); throw new LisaError(`${path}: weight_map names tensor ${name} in ${file}, but that shard does not hold it`); }
      if (basename(t.file) !== file) { ckpt.close(); throw new LisaError(`${path}: weight_map puts ${name} in ${file}, but it is in ${basename(t.file)}`); }
    }
  }
  return ckpt;
}

function fromFiles(path: string, files: string[]): Checkpoint {
  const opened: { tensors: TensorRef[]; close(): void }[] = [];
  const tensors = new Map<string, TensorRef>();
  const close = (): void => { for (const o of opened) o.close(); };
  try {
    for (const f of files) {
      const o = openWeightFile(f);
      opened.push(o);
      for (const t of o.tensors) {
        const prev = tensors.get(t.name);
        if (prev) throw new LisaError(`${path}: tensor ${t.name} appears in both ${prev.file} and ${t.file}`);
        tensors.set(t.name, t);
      }
    }
  } catch (e) {
    close();
    throw e;
  }
  return {
    path,
    files,
    tensors,
    get(name: string): TensorRef {
      const t = tensors.get(name);
      if (!t) throw new LisaError(`${path}: checkpoint has no tensor named ${name}`);
      return t;
    },
    close,
  };
}
