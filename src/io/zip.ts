import { inflateRawSync } from 'node:zlib';
import { LisaError } from '../errors.js';
import type { RandomAccessFile } from './file.js';

/** One member of a zip archive: where its bytes are, without reading them. */
export interface ZipEntry {
  name: string;
  method: number; // 0 = STORED, 8 = DEFLATE
  compressedSize: number;
  size: number;
  /** Offset of the member's data (after its local header) in the archive. */
  dataOffset: number;
}

const EOCD_SIG = 0x06054b50;
const ZIP64_LOCATOR_SIG = 0x07064b50;
const ZIP64_EOCD_SIG = 0x06064b50;
const CDIR_SIG = 0x02014b50;
const LOCAL_SIG = 0x04034b50;
const MAX_ENTRIES = 1_000_000;

/**
 * Reads a zip archive's central directory (ZIP64 included: the released LISA shards are ~10 GB).
 * `torch.save` writes every member STORED and 64-byte aligned, so tensors can be read by offset.
 */
export function readZipDirectory(f: RandomAccessFile): Map<string, ZipEntry> {
  const where = f.path;
  const tailLen = Math.min(f.size, 22 + 65535);
  if (tailLen < 22) throw new LisaError(`${where}: too short to be a zip archive`);
  const tail = f.read(f.size - tailLen, tailLen, 'zip end record');
  let eocd = -1;
  for (let i = tailLen - 22; i >= 0; i--)
    if (tail.readUInt32LE(i) === EOCD_SIG) {
      eocd = i;
      break;
    }
  if (eocd < 0) throw new LisaError(`${where}: no zip end-of-central-directory record; not a zip archive or truncated`);
  let count = tail.readUInt16LE(eocd + 10);
  let cdSize = tail.readUInt32LE(eocd + 12);
  let cdOffset = tail.readUInt32LE(eocd + 16);
  if (count === 0xffff || cdSize === 0xffffffff || cdOffset === 0xffffffff) {
    const locAt = f.size - tailLen + eocd - 20;
    const loc = f.read(locAt, 20, 'zip64 locator');
    if (loc.readUInt32LE(0) !== ZIP64_LOCATOR_SIG) throw new LisaError(`${where}: zip64 locator missing`);
    const recAt = safeNumber(loc.readBigUInt64LE(8), where);
    const rec = f.read(recAt, 56, 'zip64 end record');
    if (rec.readUInt32LE(0) !== ZIP64_EOCD_SIG) throw new LisaError(`${where}: zip64 end record missing`);
    count = safeNumber(rec.readBigUInt64LE(32), where);
    cdSize = safeNumber(rec.readBigUInt64LE(40), where);
    cdOffset = safeNumber(rec.readBigUInt64LE(48), where);
  }
  if (count > MAX_ENTRIES) throw new LisaError(`${where}: zip claims ${count} entries (limit ${MAX_ENTRIES})`);
  const cd = f.read(cdOffset, cdSize, 'zip central directory');
  const entries = new Map<string, ZipEntry>();
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cd.length || cd.readUInt32LE(p) !== CDIR_SIG) throw new LisaError(`${where}: zip central directory entry ${i} is corrupt`);
    const method = cd.readUInt16LE(p + 10);
    let csize = cd.readUInt32LE(p + 20);
    let usize = cd.readUInt32LE(p + 24);
    const nameLen = cd.readUInt16LE(p + 28),
      extraLen = cd.readUInt16LE(p + 30),
      commentLen = cd.readUInt16LE(p + 32);
    let localOffset = cd.readUInt32LE(p + 42);
    if (p + 46 + nameLen + extraLen + commentLen > cd.length)
      throw new LisaError(`${where}: zip central directory entry ${i} runs past the directory`);
    const name = cd.toString('utf8', p + 46, p + 46 + nameLen);
    // ZIP64 extended information: only the fields saturated in the fixed part are present, in this order.
    let x = p + 46 + nameLen;
    const xEnd = x + extraLen;
    while (x + 4 <= xEnd) {
      const id = cd.readUInt16LE(x),
        len = cd.readUInt16LE(x + 2);
      if (id === 0x0001) {
        let q = x + 4;
        const take = (): number => {
          const v = safeNumber(cd.readBigUInt64LE(q), where);
          q += 8;
          return v;
        };
        if (usize === 0xffffffff) usize = take();
        if (csize === 0xffffffff) csize = take();
        if (localOffset === 0xffffffff) localOffset = take();
      }
      x += 4 + len;
    }
    const local = f.read(localOffset, 30, `local header of ${name}`);
    if (local.readUInt32LE(0) !== LOCAL_SIG) throw new LisaError(`${where}: zip local header of ${name} is corrupt`);
    const dataOffset = localOffset + 30 + local.readUInt16LE(26) + local.readUInt16LE(28);
    if (dataOffset + csize > f.size)
      throw new LisaError(`${where}: zip member ${name} ends at byte ${dataOffset + csize} but the file has ${f.size}; truncated`);
    entries.set(name, { name, method, compressedSize: csize, size: usize, dataOffset });
    p += 46 + nameLen + extraLen + commentLen;
  }
  return entries;
}

/** Reads a whole (small) member, inflating it if needed. */
export function readZipEntry(f: RandomAccessFile, e: ZipEntry, maxBytes: number): Buffer {
  if (e.size > maxBytes) throw new LisaError(`${f.path}: zip member ${e.name} is ${e.size} bytes (limit ${maxBytes})`);
  const raw = f.read(e.dataOffset, e.compressedSize, e.name);
  if (e.method === 0) return raw;
  if (e.method === 8) {
    try {
      return inflateRawSync(raw, { maxOutputLength: maxBytes });
    } catch (err) {
      // zlib's own message ("invalid block type", "unexpected end of file", a size past the limit) for this member.
      throw new LisaError(`${f.path}: zip member ${e.name} does not inflate (${(err as Error).message})`);
    }
  }
  throw new LisaError(`${f.path}: zip member ${e.name} uses compression method ${e.method}; only STORED and DEFLATE are supported`);
}

function safeNumber(v: bigint, where: string): number {
  if (v > BigInt(Number.MAX_SAFE_INTEGER)) throw new LisaError(`${where}: zip offset ${v} is out of range`);
  return Number(v);
}
