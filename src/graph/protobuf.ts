import { LisaError } from '../errors.js';

/**
 * The protobuf wire format, as small as ONNX and SentencePiece need: varints, fixed 32/64, and
 * length-delimited fields. Hand-written so the ONNX writer has no generated code and no Long type.
 */

export class ProtoWriter {
  private chunks: Uint8Array[] = [];
  private cur = Buffer.allocUnsafe(1 << 16);
  private pos = 0;
  private total = 0;

  private ensure(n: number): void {
    if (this.pos + n <= this.cur.length) return;
    this.flush();
    if (n > this.cur.length) this.cur = Buffer.allocUnsafe(Math.max(n, 1 << 16));
  }
  private flush(): void {
    if (this.pos > 0) {
      this.chunks.push(Buffer.from(this.cur.subarray(0, this.pos)));
      this.pos = 0;
    }
  }
  private varintRaw(v: number | bigint): void {
    this.ensure(10);
    let x = BigInt.asUintN(64, BigInt(v));
    if (x < 0x80n) {
      this.cur[this.pos++] = Number(x);
      this.total++;
      return;
    }
    while (x >= 0x80n) {
      this.cur[this.pos++] = Number(x & 0x7fn) | 0x80;
      x >>= 7n;
      this.total++;
    }
    this.cur[this.pos++] = Number(x);
    this.total++;
  }
  private tag(field: number, wire: number): void {
    this.varintRaw((field << 3) | wire);
  }

  get length(): number {
    return this.total;
  }

  varint(field: number, v: number | bigint): this {
    this.tag(field, 0);
    this.varintRaw(v);
    return this;
  }
  float(field: number, v: number): this {
    this.tag(field, 5);
    this.ensure(4);
    this.cur.writeFloatLE(v, this.pos);
    this.pos += 4;
    this.total += 4;
    return this;
  }
  bytes(field: number, b: Uint8Array): this {
    this.tag(field, 2);
    this.varintRaw(b.byteLength);
    if (b.byteLength > 4096) {
      this.flush();
      this.chunks.push(b);
    } else {
      this.ensure(b.byteLength);
      this.cur.set(b, this.pos);
      this.pos += b.byteLength;
    }
    this.total += b.byteLength;
    return this;
  }
  string(field: number, s: string): this {
    return this.bytes(field, Buffer.from(s, 'utf8'));
  }
  message(field: number, build: (w: ProtoWriter) => void): this {
    const w = new ProtoWriter();
    build(w);
    return this.bytes(field, w.finish());
  }
  finish(): Uint8Array {
    this.flush();
    return this.chunks.length === 1 ? this.chunks[0]! : Buffer.concat(this.chunks);
  }
}

/** One field of a message; `where` names the file, for errors about its value. */
export type ProtoField = { where?: string } & (
  | { field: number; wire: 0; value: bigint }
  | { field: number; wire: 1; value: Uint8Array }
  | { field: number; wire: 2; value: Uint8Array }
  | { field: number; wire: 5; value: Uint8Array }
);

/** Splits a message into its fields, in order; nested messages stay bytes until asked for. */
export function readFields(buf: Uint8Array, where: string): ProtoField[] {
  const out: ProtoField[] = [];
  let p = 0;
  const varint = (): bigint => {
    let x = 0n,
      shift = 0n;
    for (;;) {
      if (p >= buf.length) throw new LisaError(`${where}: protobuf varint runs past the end`);
      const b = buf[p++]!;
      x |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) return x;
      shift += 7n;
      if (shift > 63n) throw new LisaError(`${where}: protobuf varint too long`);
    }
  };
  const take = (n: number): Uint8Array => {
    if (n < 0 || p + n > buf.length)
      throw new LisaError(`${where}: protobuf field runs past the end (${n} bytes at ${p} of ${buf.length})`);
    const v = buf.subarray(p, p + n);
    p += n;
    return v;
  };
  while (p < buf.length) {
    const key = Number(varint());
    const field = key >>> 3,
      wire = key & 7;
    if (wire === 0) out.push({ field, wire, value: varint(), where });
    else if (wire === 1) out.push({ field, wire, value: take(8), where });
    else if (wire === 2) {
      const n = varint();
      out.push({ field, wire, value: take(n > BigInt(buf.length) ? buf.length + 1 : Number(n)), where });
    } else if (wire === 5) out.push({ field, wire, value: take(4), where });
    else throw new LisaError(`${where}: protobuf wire type ${wire} is not supported`);
  }
  return out;
}

/** A field whose wire type is not what the schema says (a damaged or hostile file): one error naming the file. */
function wrongWire(f: ProtoField, want: string): LisaError {
  return new LisaError(`${f.where ?? 'protobuf'}: field ${f.field} should be ${want}, found wire type ${f.wire}`);
}
export function fieldFloat(f: ProtoField): number {
  if (f.wire === 5) return Buffer.from(f.value).readFloatLE(0);
  if (f.wire === 1) return Buffer.from(f.value).readDoubleLE(0);
  throw wrongWire(f, 'a float');
}
/** A length-delimited field's bytes (a nested message, raw data). */
export function fieldBytes(f: ProtoField): Uint8Array {
  if (f.wire !== 2) throw wrongWire(f, 'length-delimited bytes');
  return f.value;
}
/** A field the schema requires, or one error naming the file. */
export function requireField(f: ProtoField | undefined, what: string, where: string): ProtoField {
  if (!f) throw new LisaError(`${where}: ${what} is missing`);
  return f;
}
export function fieldString(f: ProtoField): string {
  if (f.wire !== 2) throw wrongWire(f, 'a string');
  return Buffer.from(f.value).toString('utf8');
}
export function fieldInt(f: ProtoField): number {
  if (f.wire !== 0) throw wrongWire(f, 'a varint');
  return Number(BigInt.asIntN(64, f.value));
}
/** Repeated varints may come packed (one bytes field) or one per field. */
export function fieldInts(fields: ProtoField[], field: number, where: string): number[] {
  const out: number[] = [];
  for (const f of fields) {
    if (f.field !== field) continue;
    if (f.wire === 0) out.push(Number(BigInt.asIntN(64, f.value)));
    else if (f.wire === 2) for (const g of readPacked(f.value, where)) out.push(g);
  }
  return out;
}
function readPacked(buf: Uint8Array, where: string): number[] {
  const out: number[] = [];
  let p = 0;
  while (p < buf.length) {
    let x = 0n,
      shift = 0n;
    for (;;) {
      if (p >= buf.length) throw new LisaError(`${where}: packed varint runs past the end`);
      const b = buf[p++]!;
      x |= BigInt(b & 0x7f) << shift;
      if (!(b & 0x80)) break;
      shift += 7n;
    }
    out.push(Number(BigInt.asIntN(64, x)));
  }
  return out;
}
