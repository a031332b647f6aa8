import {
  closeSync,
  fstatSync,
  openSync,
  readdirSync,
  readSync,
  renameSync,
  statSync,
  unlinkSync,
  writeFileSync,
  writeSync,
  type Stats,
} from 'node:fs';
import { dirname, join, resolve } from 'node:path';
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
    if (!st.isFile()) {
      closeSync(this.fd);
      throw new LisaError(`${path}: not a regular file`);
    }
    this.size = st.size;
  }

  /** Reads exactly `length` bytes at `offset`; a range past the end is the file's fault, so it names it. */
  read(offset: number, length: number, what = 'data'): Buffer {
    if (this.fd === null) throw new Error(`${this.path} is closed`);
    if (!Number.isSafeInteger(offset) || !Number.isSafeInteger(length) || offset < 0 || length < 0 || offset + length > this.size) {
      throw new LisaError(
        `${this.path}: ${what} at bytes ${offset}..${offset + length} lies outside the file (${this.size} bytes); the file is ` +
          `truncated or corrupt`,
      );
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
    if (this.fd !== null) {
      closeSync(this.fd);
      this.fd = null;
    }
  }
}

/**
 * Checks, before any long run, that `dir` can take output: not a file, not under a file, writable (a probe file is
 * created and removed in it or in its nearest existing parent). With `mustBeEmpty`, a non-empty folder is refused
 * unless `ownOutput` recognises it as a previous output of the same command (which may be replaced).
 */
export function checkOutputDir(
  dir: string,
  flag: string,
  opts: { mustBeEmpty?: boolean; ownOutput?: (dir: string) => boolean } = {},
): void {
  const st = statOrNull(dir);
  if (st && !st.isDirectory()) throw new LisaError(`${flag} ${dir}: is a file, not a folder`);
  if (st && opts.mustBeEmpty && readdirSync(dir).length > 0 && !opts.ownOutput?.(dir)) {
    throw new LisaError(`${flag} ${dir}: the folder is not empty and holds no earlier output of this command; give a new or empty folder`);
  }
  let probeDir = resolve(dir);
  while (!statOrNull(probeDir)) {
    const up = dirname(probeDir);
    if (up === probeDir) break;
    probeDir = up;
  }
  const pst = statOrNull(probeDir);
  if (pst && !pst.isDirectory()) throw new LisaError(`${flag} ${dir}: ${probeDir} is a file, so the folder cannot be made under it`);
  const probe = join(probeDir, `.lisa-write-test-${process.pid}-${Date.now()}`);
  try {
    writeFileSync(probe, '');
    unlinkSync(probe);
  } catch (e) {
    throw new LisaError(`${flag} ${dir}: cannot write in ${probeDir} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
}
function statOrNull(p: string): Stats | null {
  try {
    return statSync(p);
  } catch {
    return null;
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
    try {
      closeSync(fd);
    } catch {
      /* already closed */
    }
    try {
      unlinkSync(tmp);
    } catch {
      /* nothing to clean */
    }
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
