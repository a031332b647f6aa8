import { closeSync, fstatSync, openSync, readSync, renameSync, unlinkSync, writeSync } from 'node:fs';
import { LisaError } from '../errors.js';

/**
 * A file read by offset, never whole: checkpoints are many gigabytes and only the headers and the
 * tensors a consumer asks for are ever in memory.
 */
export class RandomAccessFile {
  readonly path: string;
  readonly size: number;
  private fd: number | null;

  constructor(path: string) {
    this.path = path;
    try {
      this.fd = openSync(path, 'r');
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      throw new LisaError(code === 'ENOENT' ? `${path}: no such file` : `${path}: cannot open (${code ?? String(e)})`);
    }
    const st = fstatSync(this.fd);
    if (!st.isFile()) { closeSync(this.fd); throw new LisaError(`${path}: not a regular file`); }
    this.size = st.size;
  }

  /** Reads exactly `length` bytes at `offset`; a range past the end is the file's fault, so it names it. */
  read(offset: number, length: number, what = 'data'): Buffer {
    if (this.fd === null) throw new Error(`${this.path} is closed`);
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      throw new LisaError(`${this.path}: ${what} at bytes ${offset}..${offset + length} lies outside the file (${this.size} bytes); the file is truncated or corrupt`);
    }
    const buf = Buffer.allocUnsafe(length);
    let done = 0;
    while (done < length) {
      const n = readSync(this.fd, buf, done, Math.min(length - done, 1 << 30), offset + done);
      if (n === 0) throw new LisaError(`${this.path}: unexpected end of file reading ${what}`);
      done += n;
    }
    return buf;
  }

  close(): void {
    if (this.fd !== null) { closeSync(this.fd); this.fd = null; }
  }
}

/** Writes chunks to `path` through a temp file and a rename, so a crash never leaves half a file. */
export function writeAtomic(path: string, chunks: readonly (Uint8Array | string)[]): void {
  const tmp = `${path}.tmp-${process.pid}-${Date.now()}`;
  const fd = openSync(tmp, 'w');
  try {
    for (const chunk of chunks) {
      const c = typeof chunk === 'string' ? Buffer.from(chunk, 'utf8') : chunk;
      let done = 0;
      while (done < c.byteLength) done += writeSync(fd, c, done, c.byteLength - done);
    }
    closeSync(fd);
    renameSync(tmp, path);
  } catch (e) {
    try { closeSync(fd); } catch { /* already closed */ }
    try { unlinkSync(tmp); } catch { /* nothing to clean */ }
    throw e;
  }
}

/** Opens `path` and hands it to `parse`; the file is closed if parsing throws (the result owns it otherwise). */
export function openWith<T>(path: string, parse: (f: RandomAccessFile) => T): T {
  const f = new RandomAccessFile(path);
  try {
    return parse(f);
  } catch (e) {
    f.close();
    throw e;
  }
}
