import { closeSync, openSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { crc32 } from 'node:zlib';
import { DTYPE_BYTES, numel, type DType } from './dtype.js';

/**
 * Writes a checkpoint in the format `torch.save` uses (zip of `<archive>/data.pkl`, `<archive>/data/<i>`,
 * `<archive>/version`; members STORED and 64-byte aligned; ZIP64 past 4 GB), streaming each tensor's bytes
 * from a producer so a 10 GB shard never sits in memory. Used to build full-size test checkpoints in the
 * released layout. Written to a temp file and renamed into place.
 */

const STORAGE: Partial<Record<DType, string>> = {
  float32: 'FloatStorage', bfloat16: 'BFloat16Storage', float16: 'HalfStorage', float64: 'DoubleStorage',
  int64: 'LongStorage', int32: 'IntStorage', int16: 'ShortStorage', int8: 'CharStorage', uint8: 'ByteStorage', bool: 'BoolStorage',
};

export interface TensorSpec {
  name: string;
  dtype: DType;
  shape: number[];
  /** Fills `out` (a chunk of the tensor's bytes starting at byte `offset`). */
  fill(out: Uint8Array, offset: number): void;
}

/** The state-dict pickle (protocol 2) torch.save writes: OrderedDict of _rebuild_tensor_v2(storage, 0, size, stride, False, OrderedDict()). */
export function stateDictPickle(tensors: readonly TensorSpec[]): Buffer {
  const out: Buffer[] = [Buffer.from([0x80, 2])];
  const str = (s: string): void => { const b = Buffer.from(s, 'utf8'); const n = Buffer.alloc(4); n.writeUInt32LE(b.length); out.push(Buffer.from([0x58]), n, b); };
  const int = (v: number): void => {
    if (v >= 0 && v < 256) out.push(Buffer.from([0x4b, v]));
    else if (v >= 0 && v < 65536) { const b = Buffer.alloc(3); b[0] = 0x4d; b.writeUInt16LE(v, 1); out.push(b); }
    else if (v < 2 ** 31) { const b = Buffer.alloc(5); b[0] = 0x4a; b.writeInt32LE(v, 1); out.push(b); }
    else { const b = Buffer.alloc(10); b[0] = 0x8a; b[1] = 8; b.writeBigInt64LE(BigInt(v), 2); out.push(b); }
  };
  const tuple = (xs: number[]): void => { out.push(Buffer.from([0x28])); xs.forEach(int); out.push(Buffer.from([0x74])); };
  const global = (mod: string, name: string): void => { out.push(Buffer.from(`c${mod}\n${name}\n`, 'latin1')); };
  global('collections', 'OrderedDict'); out.push(Buffer.from([0x29, 0x52, 0x28])); // OrderedDict(), MARK
  tensors.forEach((t, i) => {
    const storage = STORAGE[t.dtype];
    if (!storage) throw new Error(`torch storages cannot hold ${t.dtype}`);
    str(t.name);
    global('torch._utils', '_rebuild_tensor_v2');
    out.push(Buffer.from([0x28, 0x28])); // MARK (args), MARK (persistent id)
    str('storage'); global('torch', storage); str(String(i)); str('cpu'); int(numel(t.shape));
    out.push(Buffer.from([0x74, 0x51])); // TUPLE, BINPERSID
    int(0);
    tuple(t.shape);
    const strides = t.shape.map((_, d) => t.shape.slice(d + 1).reduce((a, b) => a * b, 1));
    tuple(strides);
    out.push(Buffer.from([0x89])); // False
    global('collections', 'OrderedDict'); out.push(Buffer.from([0x29, 0x52])); // backward hooks
    out.push(Buffer.from([0x74, 0x52])); // TUPLE, REDUCE
  });
  out.push(Buffer.from([0x75, 0x2e])); // SETITEMS, STOP
  return Buffer.concat(out);
}

interface Written { name: string; offset: number; size: number; crc: number }

export function writeTorchBin(path: string, archive: string, tensors: readonly TensorSpec[], chunkBytes = 64 * 1024 * 1024): void {
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w');
  let pos = 0;
  const written: Written[] = [];
  const write = (b: Uint8Array): void => { let d = 0; while (d < b.byteLength) d += writeSync(fd, b, d, b.byteLength - d, pos + d); pos += b.byteLength; };
  /** A local header whose extra field pads the data to a 64-byte boundary (torch's "FB" padding). */
  const member = (name: string, size: number, body: (emit: (b: Uint8Array) => number) => number): void => {
    const nameBuf = Buffer.from(name, 'utf8');
    const headerEnd = pos + 30 + nameBuf.length + 4;
    const pad = (64 - (headerEnd % 64)) % 64;
    const zip64 = size >= 0xffffffff;
    const lh = Buffer.alloc(30);
    lh.writeUInt32LE(0x04034b50, 0); lh.writeUInt16LE(zip64 ? 45 : 20, 4);
    lh.writeUInt32LE(zip64 ? 0xffffffff : size, 18); lh.writeUInt32LE(zip64 ? 0xffffffff : size, 22);
    lh.writeUInt16LE(nameBuf.length, 26); lh.writeUInt16LE(4 + pad, 28);
    const extra = Buffer.alloc(4 + pad); extra.writeUInt16LE(0x4246, 0); extra.writeUInt16LE(pad, 2);
    const offset = pos;
    write(lh); write(nameBuf); write(extra);
    let crc = 0;
    const emitted = body((b) => { crc = crc32(b, crc); write(b); return b.byteLength; });
    if (emitted !== size) throw new Error(`${name}: wrote ${emitted} bytes, expected ${size}`);
    // CRC in the local header (sizes are known up front, so no data descriptor is needed).
    const c = Buffer.alloc(4); c.writeUInt32LE(crc >>> 0);
    writeSync(fd, c, 0, 4, offset + 14);
    written.push({ name, offset, size, crc: crc >>> 0 });
  };
  try {
    const pkl = stateDictPickle(tensors);
    member(`${archive}/data.pkl`, pkl.length, (emit) => emit(pkl));
    tensors.forEach((t, i) => {
      const size = numel(t.shape) * DTYPE_BYTES[t.dtype];
      member(`${archive}/data/${i}`, size, (emit) => {
        let done = 0;
        while (done < size) {
          const n = Math.min(chunkBytes, size - done);
          const chunk = new Uint8Array(n);
          t.fill(chunk, done);
          done += emit(chunk);
        }
        return done;
      });
    });
    const version = Buffer.from('3\n');
    member(`${archive}/version`, version.length, (emit) => emit(version));
    // Central directory, with ZIP64 extra fields where offsets or sizes pass 4 GB.
    const cdStart = pos;
    for (const w of written) {
      const nameBuf = Buffer.from(w.name, 'utf8');
      const big = w.offset >= 0xffffffff || w.size >= 0xffffffff;
      const x: Buffer[] = [];
      if (big) {
        const fields: number[] = [];
        if (w.size >= 0xffffffff) fields.push(w.size, w.size);
        if (w.offset >= 0xffffffff) fields.push(w.offset);
        const e = Buffer.alloc(4 + 8 * fields.length);
        e.writeUInt16LE(1, 0); e.writeUInt16LE(8 * fields.length, 2);
        fields.forEach((v, k) => e.writeBigUInt64LE(BigInt(v), 4 + 8 * k));
        x.push(e);
      }
      const extra = Buffer.concat(x);
      const ch = Buffer.alloc(46);
      ch.writeUInt32LE(0x02014b50, 0); ch.writeUInt16LE(big ? 45 : 20, 4); ch.writeUInt16LE(big ? 45 : 20, 6);
      ch.writeUInt32LE(w.crc, 16);
      ch.writeUInt32LE(w.size >= 0xffffffff ? 0xffffffff : w.size, 20); ch.writeUInt32LE(w.size >= 0xffffffff ? 0xffffffff : w.size, 24);
      ch.writeUInt16LE(nameBuf.length, 28); ch.writeUInt16LE(extra.length, 30);
      ch.writeUInt32LE(w.offset >= 0xffffffff ? 0xffffffff : w.offset, 42);
      write(ch); write(nameBuf); write(extra);
    }
    const cdSize = pos - cdStart;
    const zip64 = cdStart >= 0xffffffff || written.length >= 0xffff;
    if (zip64) {
      const rec = Buffer.alloc(56);
      rec.writeUInt32LE(0x06064b50, 0); rec.writeBigUInt64LE(44n, 4); rec.writeUInt16LE(45, 12); rec.writeUInt16LE(45, 14);
      rec.writeBigUInt64LE(BigInt(written.length), 24); rec.writeBigUInt64LE(BigInt(written.length), 32);
      rec.writeBigUInt64LE(BigInt(cdSize), 40); rec.writeBigUInt64LE(BigInt(cdStart), 48);
      const recAt = pos;
      write(rec);
      const loc = Buffer.alloc(20);
      loc.writeUInt32LE(0x07064b50, 0); loc.writeBigUInt64LE(BigInt(recAt), 8); loc.writeUInt32LE(1, 16);
      write(loc);
    }
    const end = Buffer.alloc(22);
    end.writeUInt32LE(0x06054b50, 0);
    end.writeUInt16LE(zip64 ? 0xffff : written.length, 8); end.writeUInt16LE(zip64 ? 0xffff : written.length, 10);
    end.writeUInt32LE(zip64 ? 0xffffffff : cdSize, 12); end.writeUInt32LE(zip64 ? 0xffffffff : cdStart, 16);
    write(end);
    closeSync(fd);
    renameSync(tmp, path);
  } catch (e) {
    try { closeSync(fd); } catch { /* closed */ }
    try { unlinkSync(tmp); } catch { /* gone */ }
    throw e;
  }
}
