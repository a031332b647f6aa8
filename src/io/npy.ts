import { readFileSync } from 'node:fs';
import { LisaError } from '../errors.js';
import { DTYPE_BYTES, numel, typedView, type AnyTypedArray, type DType } from './dtype.js';
import { writeAtomic } from './file.js';

/** NumPy `.npy` (format 1.0–3.0, little-endian, C order): fixtures, and dumps of intermediates. */

const DESCR_TO_DTYPE: Readonly<Record<string, DType>> = {
  '<f4': 'float32', '<f2': 'float16', '<f8': 'float64', '<i8': 'int64', '<i4': 'int32', '<i2': 'int16',
  '|i1': 'int8', '|u1': 'uint8', '|b1': 'bool',
};
const DTYPE_TO_DESCR: Partial<Record<DType, string>> = Object.fromEntries(Object.entries(DESCR_TO_DTYPE).map(([k, v]) => [v, k]));

export interface NpyArray {
  dtype: DType;
  shape: number[];
  data: AnyTypedArray;
}

export function parseNpy(buf: Uint8Array, where = 'npy'): NpyArray {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength);
  if (b.length < 10 || b.toString('latin1', 0, 6) !== '\x93NUMPY') throw new LisaError(`${where}: not a .npy file (bad magic)`);
  const major = b[6]!;
  let headerLen: number, start: number;
  if (major === 1) { headerLen = b.readUInt16LE(8); start = 10; }
  else if (major === 2 || major === 3) { if (b.length < 12) throw new LisaError(`${where}: truncated header`); headerLen = b.readUInt32LE(8); start = 12; }
  else throw new LisaError(`${where}: unsupported .npy version ${major}`);
  if (start + headerLen > b.length) throw new LisaError(`${where}: header runs past the end of the file`);
  const header = b.toString('latin1', start, start + headerLen);
  const descr = /'descr':\s*'([^']+)'/.exec(header)?.[1];
  const fortran = /'fortran_order':\s*(True|False)/.exec(header)?.[1];
  const shapeText = /'shape':\s*\(([^)]*)\)/.exec(header)?.[1];
  if (descr === undefined || fortran === undefined || shapeText === undefined) throw new LisaError(`${where}: header lacks descr, fortran_order or shape: ${header.trim()}`);
  const dtype = DESCR_TO_DTYPE[descr];
  if (!dtype) throw new LisaError(`${where}: dtype ${descr} is not supported (expected one of ${Object.keys(DESCR_TO_DTYPE).join(', ')})`);
  if (fortran === 'True') throw new LisaError(`${where}: Fortran-order arrays are not supported`);
  const shape = shapeText.split(',').map((s) => s.trim()).filter((s) => s.length > 0).map((s) => {
    const n = Number(s);
    if (!Number.isSafeInteger(n) || n < 0) throw new LisaError(`${where}: bad dimension ${s} in shape`);
    return n;
  });
  const dataStart = start + headerLen;
  const nbytes = numel(shape) * DTYPE_BYTES[dtype];
  if (dataStart + nbytes > b.length) throw new LisaError(`${where}: shape ${JSON.stringify(shape)} needs ${nbytes} data bytes but only ${b.length - dataStart} follow the header`);
  return { dtype, shape, data: typedView(dtype, new Uint8Array(b.subarray(dataStart, dataStart + nbytes))) };
}

export function readNpy(path: string): NpyArray {
  let buf: Buffer;
  try { buf = readFileSync(path); } catch (e) { throw new LisaError(`${path}: cannot read (${(e as NodeJS.ErrnoException).code ?? String(e)})`); }
  return parseNpy(buf, path);
}

export function encodeNpy(dtype: DType, shape: readonly number[], data: AnyTypedArray): Buffer {
  const descr = DTYPE_TO_DESCR[dtype];
  if (!descr) throw new Error(`.npy cannot hold ${dtype}`);
  const nbytes = numel(shape) * DTYPE_BYTES[dtype];
  if (data.byteLength !== nbytes) throw new Error(`.npy ${dtype}${JSON.stringify(shape)} needs ${nbytes} bytes, got ${data.byteLength}`);
  const shapeText = shape.length === 1 ? `(${shape[0]},)` : `(${shape.join(', ')})`;
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shapeText}, }`;
  // Pad with spaces so the data starts on a 64-byte boundary, newline-terminated, as numpy does.
  const total = Math.ceil((10 + header.length + 1) / 64) * 64;
  header = header.padEnd(total - 10 - 1, ' ') + '\n';
  const head = Buffer.alloc(10);
  head.write('\x93NUMPY', 0, 'latin1');
  head[6] = 1; head[7] = 0;
  head.writeUInt16LE(header.length, 8);
  return Buffer.concat([head, Buffer.from(header, 'latin1'), Buffer.from(data.buffer, data.byteOffset, data.byteLength)]);
}

export function writeNpy(path: string, dtype: DType, shape: readonly number[], data: AnyTypedArray): void {
  writeAtomic(path, [encodeNpy(dtype, shape, data)]);
}
