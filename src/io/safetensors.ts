import { LisaError } from '../errors.js';
import { DTYPE_BYTES, numel, type DType } from './dtype.js';
import { openWith, RandomAccessFile, writeAtomic } from './file.js';
import { BaseTensorRef, type FileSpan, type TensorRef } from './tensor-ref.js';

/** safetensors dtype names ↔ ours. */
const FROM_ST: Readonly<Record<string, DType>> = {
  F32: 'float32', F16: 'float16', BF16: 'bfloat16', F64: 'float64', I64: 'int64', I32: 'int32',
  I16: 'int16', I8: 'int8', U8: 'uint8', BOOL: 'bool',
};
const TO_ST: Readonly<Record<DType, string>> = Object.fromEntries(
  Object.entries(FROM_ST).map(([k, v]) => [v, k]),
) as Record<DType, string>;

/** A header this large is not a real checkpoint's (the 13B one has ~1,400 tensors in ~200 KB). */
const MAX_HEADER_BYTES = 100 * 1024 * 1024;

class SafetensorsTensor extends BaseTensorRef {
  constructor(name: string, dtype: DType, shape: number[], private readonly f: RandomAccessFile, private readonly offset: number) {
    super(name, dtype, shape, f.path);
  }
  get span(): FileSpan { return { path: this.f.path, offset: this.offset, length: this.byteLength }; }
  bytes(): Uint8Array { return this.f.read(this.offset, this.byteLength, `tensor ${this.name}`); }
}

export interface SafetensorsFile {
  path: string;
  tensors: TensorRef[];
  metadata: Record<string, string>;
  close(): void;
}

/** Opens a .safetensors file: reads and validates the header only; tensors are read on demand. */
export function readSafetensors(path: string): SafetensorsFile {
  return openWith(path, parse);
}

function parse(f: RandomAccessFile): SafetensorsFile {
  const where = f.path;
  if (f.size < 8) throw new LisaError(`${where}: too short for a safetensors file (${f.size} bytes)`);
  const n = f.read(0, 8, 'header length').readBigUInt64LE(0);
  if (n > BigInt(MAX_HEADER_BYTES)) throw new LisaError(`${where}: safetensors header claims ${n} bytes (limit ${MAX_HEADER_BYTES}); not a safetensors file or corrupt`);
  const headerLen = Number(n);
  if (8 + headerLen > f.size) throw new LisaError(`${where}: safetensors header claims ${headerLen} bytes but the file has only ${f.size - 8} after the length; truncated`);
  let header: unknown;
  try {
    header = JSON.parse(f.read(8, headerLen, 'header').toString('utf8'));
  } catch (e) {
    throw new LisaError(`${where}: safetensors header is not valid JSON (${(e as Error).message})`);
  }
  if (typeof header !== 'object' || header === null || Array.isArray(header)) throw new LisaError(`${where}: safetensors header must be a JSON object`);
  const dataStart = 8 + headerLen;
  const dataSize = f.size - dataStart;
  const tensors: SafetensorsTensor[] = [];
  const ranges: { name: string; begin: number; end: number }[] = [];
  let metadata: Record<string, string> = {};
  for (const [name, raw] of Object.entries(header as Record<string, unknown>)) {
    if (name === '__metadata__') {
      if (typeof raw !== 'object' || raw === null || Array.isArray(raw) || !Object.values(raw).every((v) => typeof v === 'string')) {
        throw new LisaError(`${where}: __metadata__ must map strings to strings`);
      }
      metadata = raw as Record<string, string>;
      continue;
    }
    const t = raw as { dtype?: unknown; shape?: unknown; data_offsets?: unknown };
    const at = `${where}: tensor "${name}"`;
    if (typeof t !== 'object' || t === null) throw new LisaError(`${at}: entry must be an object`);
    const dtype = typeof t.dtype === 'string' ? FROM_ST[t.dtype] : undefined;
    if (!dtype) throw new LisaError(`${at}: unknown dtype ${JSON.stringify(t.dtype)} (expected one of ${Object.keys(FROM_ST).join(', ')})`);
    if (!Array.isArray(t.shape) || !t.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) throw new LisaError(`${at}: shape must be a list of non-negative integers, found ${JSON.stringify(t.shape)}`);
    const offs = t.data_offsets;
    if (!Array.isArray(offs) || offs.length !== 2 || !offs.every((d) => Number.isSafeInteger(d) && d >= 0) || offs[1] < offs[0]) {
      throw new LisaError(`${at}: data_offsets must be [begin, end] with 0 <= begin <= end, found ${JSON.stringify(offs)}`);
    }
    const shape = t.shape as number[];
    const [begin, end] = offs as [number, number];
    const want = numel(shape) * DTYPE_BYTES[dtype];
    if (end - begin !== want) throw new LisaError(`${at}: data_offsets span ${end - begin} bytes but ${dtype}${JSON.stringify(shape)} needs ${want}`);
    if (end > dataSize) throw new LisaError(`${at}: data ends at byte ${end} of the data section but the file holds only ${dataSize} data bytes; truncated or wrong offsets`);
    ranges.push({ name, begin, end });
    tensors.push(new SafetensorsTensor(name, dtype, shape, f, dataStart + begin));
  }
  ranges.sort((a, b) => a.begin - b.begin || a.end - b.end);
  for (let i = 1; i < ranges.length; i++) {
    const p = ranges[i - 1]!, c = ranges[i]!;
    if (c.begin < p.end) throw new LisaError(`${where}: tensors "${p.name}" and "${c.name}" overlap (bytes ${p.begin}..${p.end} and ${c.begin}..${c.end})`);
  }
  return { path: f.path, tensors, metadata, close: () => f.close() };
}

export interface TensorToWrite {
  name: string;
  dtype: DType;
  shape: readonly number[];
  data: Uint8Array;
}

/** Writes a .safetensors file atomically (temp file, then rename), header padded to 8 bytes. */
export function writeSafetensors(path: string, tensors: readonly TensorToWrite[], metadata?: Record<string, string>): void {
  const header: Record<string, unknown> = {};
  if (metadata) header.__metadata__ = metadata;
  let offset = 0;
  for (const t of tensors) {
    const want = numel(t.shape) * DTYPE_BYTES[t.dtype];
    if (t.data.byteLength !== want) throw new Error(`tensor ${t.name}: ${t.data.byteLength} bytes given, ${t.dtype}${JSON.stringify(t.shape)} needs ${want}`);
    header[t.name] = { dtype: TO_ST[t.dtype], shape: t.shape, data_offsets: [offset, offset + want] };
    offset += want;
  }
  let json = Buffer.from(JSON.stringify(header), 'utf8');
  const pad = (8 - (json.length % 8)) % 8;
  if (pad) json = Buffer.concat([json, Buffer.alloc(pad, 0x20)]);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(json.length));
  writeAtomic(path, [len, json, ...tensors.map((t) => t.data)]);
}
