import { LisaError } from '../errors.js';
import { DTYPE_BYTES, numel, type DType } from './dtype.js';
import { openWith, RandomAccessFile } from './file.js';
import { PyTuple, pyGlobal, unpickle, type PyGlobal } from './pickle.js';
import { BaseTensorRef, type FileSpan, type TensorRef } from './tensor-ref.js';
import { readZipDirectory, readZipEntry, type ZipEntry } from './zip.js';

/**
 * PyTorch `.bin` checkpoints as `torch.save` writes them (PyTorch ≥ 1.6): a zip archive holding
 * `<archive>/data.pkl` (the state dict, pickled, with tensors as persistent references to storages) and
 * `<archive>/data/<key>` (each storage's raw little-endian bytes, STORED). We read the pickle with the safe
 * unpickler and every tensor's bytes by offset from its storage member.
 */

const STORAGE_DTYPES: Readonly<Record<string, DType>> = {
  FloatStorage: 'float32', BFloat16Storage: 'bfloat16', HalfStorage: 'float16', DoubleStorage: 'float64',
  LongStorage: 'int64', IntStorage: 'int32', ShortStorage: 'int16', CharStorage: 'int8', ByteStorage: 'uint8', BoolStorage: 'bool',
};

/** The pickle's data.pkl of a 13B shard is ~100 KB; this leaves a wide margin and still refuses a bomb. */
const MAX_PICKLE_BYTES = 256 * 1024 * 1024;

interface StorageRef { readonly kind: 'storage'; dtype: DType; key: string; numel: number }
interface RebuiltTensor { readonly kind: 'tensor'; storage: StorageRef; offset: number; shape: number[]; stride: number[] }

function isInt(v: unknown): v is number { return typeof v === 'number' && Number.isSafeInteger(v); }
function intTuple(v: unknown, what: string, src: string): number[] {
  if (!Array.isArray(v) || !v.every((d) => isInt(d) && d >= 0)) throw new LisaError(`${src}: ${what} must be a tuple of non-negative integers, found ${JSON.stringify(v)}`);
  return v as number[];
}

function stateDictGlobals(src: string): Map<string, PyGlobal> {
  const g = new Map<string, PyGlobal>();
  const add = (x: PyGlobal): void => { g.set(x.qualname, x); };
  // OrderedDict(); BUILD may attach `_metadata` (module versions), which we keep nowhere.
  add(pyGlobal('collections.OrderedDict', () => new Map(), (obj) => obj));
  const rebuild = (args: readonly unknown[]): RebuiltTensor => {
    const [storage, offset, size, stride] = args;
    if (typeof storage !== 'object' || storage === null || (storage as StorageRef).kind !== 'storage') throw new LisaError(`${src}: tensor rebuilt from something that is not a storage`);
    if (!isInt(offset) || offset < 0) throw new LisaError(`${src}: bad storage offset ${String(offset)}`);
    const shape = intTuple(size, 'tensor size', src);
    const strides = intTuple(stride, 'tensor stride', src);
    if (strides.length !== shape.length) throw new LisaError(`${src}: tensor size ${JSON.stringify(shape)} and stride ${JSON.stringify(strides)} differ in rank`);
    return { kind: 'tensor', storage: storage as StorageRef, offset, shape, stride: strides };
  };
  add(pyGlobal('torch._utils._rebuild_tensor_v2', rebuild));
  add(pyGlobal('torch._utils._rebuild_tensor', rebuild));
  add(pyGlobal('torch._utils._rebuild_parameter', (args) => {
    const t = args[0];
    if (typeof t !== 'object' || t === null || (t as RebuiltTensor).kind !== 'tensor') throw new LisaError(`${src}: parameter rebuilt from something that is not a tensor`);
    return t;
  }));
  for (const name of Object.keys(STORAGE_DTYPES)) {
    add(pyGlobal(`torch.${name}`, () => { throw new LisaError(`${src}: torch.${name} may only appear inside a storage reference`); }));
  }
  return g;
}

class TorchTensor extends BaseTensorRef {
  constructor(name: string, private readonly t: RebuiltTensor, private readonly f: RandomAccessFile, private readonly entry: ZipEntry) {
    super(name, t.storage.dtype, t.shape, f.path);
  }
  private get contiguous(): boolean {
    let expect = 1;
    for (let i = this.shape.length - 1; i >= 0; i--) {
      if (this.shape[i] !== 1 && this.t.stride[i] !== expect) return false;
      expect *= this.shape[i]!;
    }
    return true;
  }
  get span(): FileSpan | null {
    if (!this.contiguous) return null;
    return { path: this.f.path, offset: this.entry.dataOffset + this.t.offset * DTYPE_BYTES[this.dtype], length: this.byteLength };
  }
  bytes(): Uint8Array {
    const span = this.span;
    if (span) return this.f.read(span.offset, span.length, `tensor ${this.name}`);
    // A strided view (a transposed weight, say): read the whole storage once and gather.
    const es = DTYPE_BYTES[this.dtype];
    const storage = this.f.read(this.entry.dataOffset, this.t.storage.numel * es, `storage of ${this.name}`);
    const out = new Uint8Array(this.byteLength);
    const rank = this.shape.length;
    const idx = new Array<number>(rank).fill(0);
    const n = numel(this.shape);
    for (let i = 0; i < n; i++) {
      let src = this.t.offset;
      for (let d = 0; d < rank; d++) src += idx[d]! * this.t.stride[d]!;
      out.set(storage.subarray(src * es, src * es + es), i * es);
      for (let d = rank - 1; d >= 0; d--) { if (++idx[d]! < this.shape[d]!) break; idx[d] = 0; }
    }
    return out;
  }
}

export interface TorchBinFile {
  path: string;
  tensors: TensorRef[];
  close(): void;
}

/** Opens a `torch.save` zip checkpoint; reads the pickle and validates every tensor against its storage. */
export function readTorchBin(path: string): TorchBinFile {
  return openWith(path, parse);
}

function parse(f: RandomAccessFile): TorchBinFile {
  const src = f.path;
  const magic = f.read(0, Math.min(4, f.size), 'magic');
  if (magic.length < 4 || magic.readUInt32LE(0) !== 0x04034b50) {
    throw new LisaError(`${src}: not a zip-format torch checkpoint (legacy pre-1.6 torch.save files and other formats are not supported)`);
  }
  const entries = readZipDirectory(f);
  const pkl = [...entries.keys()].find((k) => /^[^/]+\/data\.pkl$/.test(k));
  if (!pkl) throw new LisaError(`${src}: zip archive has no <archive>/data.pkl; not a torch.save checkpoint`);
  const prefix = pkl.slice(0, -'data.pkl'.length);
  const persistentLoad = (pid: unknown): StorageRef => {
    if (!(pid instanceof PyTuple) || pid[0] !== 'storage' || pid.length < 5) throw new LisaError(`${src}: unexpected persistent id ${JSON.stringify(pid)}`);
    const [, type, key, , count] = pid;
    const typeName = (type as PyGlobal | undefined)?.qualname?.replace(/^torch\./, '');
    const dtype = typeName ? STORAGE_DTYPES[typeName] : undefined;
    if (!dtype) throw new LisaError(`${src}: storage of unsupported type ${typeName ?? String(type)}`);
    if (typeof key !== 'string' || !/^\w+$/.test(key)) throw new LisaError(`${src}: bad storage key ${JSON.stringify(key)}`);
    if (!isInt(count) || count < 0) throw new LisaError(`${src}: bad storage size ${String(count)}`);
    return { kind: 'storage', dtype, key, numel: count };
  };
  const root = unpickle(readZipEntry(f, entries.get(pkl)!, MAX_PICKLE_BYTES), { source: `${src} (${pkl})`, globals: stateDictGlobals(src), persistentLoad });
  if (!(root instanceof Map)) throw new LisaError(`${src}: the pickle is not a state dict (a dict of tensors)`);
  const tensors: TensorRef[] = [];
  for (const [name, v] of root) {
    if (typeof name !== 'string') throw new LisaError(`${src}: state dict key ${String(name)} is not a string`);
    if (typeof v !== 'object' || v === null || (v as RebuiltTensor).kind !== 'tensor') throw new LisaError(`${src}: state dict entry ${name} is not a tensor`);
    const t = v as RebuiltTensor;
    const member = `${prefix}data/${t.storage.key}`;
    const entry = entries.get(member);
    if (!entry) throw new LisaError(`${src}: tensor ${name} refers to storage ${member}, which is not in the archive`);
    if (entry.method !== 0) throw new LisaError(`${src}: storage ${member} is compressed; torch.save stores them uncompressed`);
    const es = DTYPE_BYTES[t.storage.dtype];
    if (entry.size < t.storage.numel * es) throw new LisaError(`${src}: storage ${member} holds ${entry.size} bytes but is declared as ${t.storage.numel} ${t.storage.dtype} elements`);
    let last = t.offset;
    for (let d = 0; d < t.shape.length; d++) if (t.shape[d]! > 0) last += (t.shape[d]! - 1) * t.stride[d]!;
    if (numel(t.shape) > 0 && last >= t.storage.numel) throw new LisaError(`${src}: tensor ${name} reaches element ${last} of a storage with ${t.storage.numel}`);
    tensors.push(new TorchTensor(name, t, f, entry));
  }
  return { path: src, tensors, close: () => f.close() };
}
