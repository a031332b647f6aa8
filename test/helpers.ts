import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { crc32 } from 'node:zlib';
import { mulberry32 } from '../src/inference/generate.js';

/** The project root (tests run compiled from dist/test). */
export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..');
/** `../shared` beside the checkout: read-only fixtures and data. */
export const SHARED = resolve(ROOT, '..', 'shared');
export const FIXTURES = join(SHARED, 'fixtures');

export function tempDir(prefix = 'lisa-test-'): { path: string; [Symbol.dispose](): void } {
  const path = mkdtempSync(join(tmpdir(), prefix));
  return { path, [Symbol.dispose]: () => rmSync(path, { recursive: true, force: true }) };
}

/** Deterministic pseudo-random numbers (the sampler's mulberry32) so a failing test fails the same way every time. */
export const rng = mulberry32;

export function randn(n: number, seed: number, scale = 1): Float32Array {
  const r = rng(seed);
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = Math.max(r(), 1e-12),
      v = r();
    out[i] = scale * Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
  }
  return out;
}

/** Writes a STORED zip (what torch.save writes) from members, for crafting hostile checkpoints in tests. */
export function makeZip(members: { name: string; data: Uint8Array }[]): Buffer {
  const locals: Buffer[] = [];
  const central: Buffer[] = [];
  let offset = 0;
  for (const m of members) {
    const name = Buffer.from(m.name, 'utf8');
    const crc = crc32(m.data);
    const lh = Buffer.alloc(30);
    lh.writeUInt32LE(0x04034b50, 0);
    lh.writeUInt16LE(20, 4);
    lh.writeUInt32LE(crc, 14);
    lh.writeUInt32LE(m.data.length, 18);
    lh.writeUInt32LE(m.data.length, 22);
    lh.writeUInt16LE(name.length, 26);
    const ch = Buffer.alloc(46);
    ch.writeUInt32LE(0x02014b50, 0);
    ch.writeUInt16LE(20, 4);
    ch.writeUInt16LE(20, 6);
    ch.writeUInt32LE(crc, 16);
    ch.writeUInt32LE(m.data.length, 20);
    ch.writeUInt32LE(m.data.length, 24);
    ch.writeUInt16LE(name.length, 28);
    ch.writeUInt32LE(offset, 42);
    locals.push(lh, name, Buffer.from(m.data));
    central.push(ch, name);
    offset += 30 + name.length + m.data.length;
  }
  const cd = Buffer.concat(central);
  const end = Buffer.alloc(22);
  end.writeUInt32LE(0x06054b50, 0);
  end.writeUInt16LE(members.length, 8);
  end.writeUInt16LE(members.length, 10);
  end.writeUInt32LE(cd.length, 12);
  end.writeUInt32LE(offset, 16);
  return Buffer.concat([...locals, cd, end]);
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`length ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - b[i]!);
    if (!(d <= m)) m = Number.isNaN(d) ? Infinity : d;
  }
  return m;
}

/** A protocol-2 pickle of plain data (lists, dicts, strings, ints), as Python's pickle.dump writes it. */
export function pickleDump(v: unknown): Buffer {
  const parts: Buffer[] = [Buffer.from([0x80, 2])];
  const enc = (x: unknown): void => {
    if (typeof x === 'string') {
      const b = Buffer.from(x, 'utf8');
      const n = Buffer.alloc(4);
      n.writeUInt32LE(b.length);
      parts.push(Buffer.from([0x58]), n, b);
    } else if (typeof x === 'number' && Number.isInteger(x)) {
      const n = Buffer.alloc(4);
      n.writeInt32LE(x);
      parts.push(Buffer.from([0x4a]), n);
    } else if (typeof x === 'boolean') parts.push(Buffer.from([x ? 0x88 : 0x89]));
    else if (x === null) parts.push(Buffer.from([0x4e]));
    else if (Array.isArray(x)) {
      parts.push(Buffer.from([0x5d, 0x28]));
      x.forEach(enc);
      parts.push(Buffer.from([0x65]));
    } else if (typeof x === 'object') {
      parts.push(Buffer.from([0x7d, 0x28]));
      for (const [k, val] of Object.entries(x as object)) {
        enc(k);
        enc(val);
      }
      parts.push(Buffer.from([0x75]));
    } else throw new Error(`pickleDump: unsupported ${typeof x}`);
  };
  enc(v);
  parts.push(Buffer.from([0x2e]));
  return Buffer.concat(parts);
}

/** Pixels of a 0/1 mask that differ from the official logits thresholded at 0, not counting logits within float noise of 0. */
export function officialMaskFlips(mask: Uint8Array, logits: Float32Array): number {
  let scale = 0;
  for (const v of logits) scale = Math.max(scale, Math.abs(v));
  let n = 0;
  logits.forEach((v, i) => {
    if ((v > 0 ? 1 : 0) !== mask[i] && Math.abs(v) > 1e-5 * scale) n++;
  });
  return n;
}
