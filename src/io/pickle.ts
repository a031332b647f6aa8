import { LisaError } from '../errors.js';

/**
 * A safe unpickler. Pickle is a small stack machine whose GLOBAL/REDUCE opcodes would let a file call any
 * Python function; here a global resolves only through an allow-list the caller gives, and an unknown one is
 * refused by name before anything is built. Nothing in the file is ever executed.
 *
 * Python values map to: None → null, bool → boolean, int → number (bigint past 2^53), float → number,
 * str → string, bytes → Uint8Array, tuple → PyTuple, list → unknown[], dict → Map.
 */

/** A tuple, told apart from a list so callers can check what they were given. */
export class PyTuple extends Array<unknown> {}

/** A callable the allow-list exposes: REDUCE calls it with the argument tuple. */
export interface PyGlobal {
  readonly qualname: string;
  call(args: readonly unknown[]): unknown;
  /** BUILD on a value this global made (OrderedDict's state, say). Absent: BUILD is refused. */
  build?(obj: unknown, state: unknown): unknown;
}

export interface UnpickleOptions {
  /** "module.name" → implementation. Anything else named by the pickle is refused. */
  globals: ReadonlyMap<string, PyGlobal>;
  /** Handles persistent ids (torch's storages); absent: BINPERSID is refused. */
  persistentLoad?: (pid: unknown) => unknown;
  /** Name used in errors (the file). */
  source: string;
  maxMemo?: number;
}

const MARK = Symbol('mark');
type StackItem = unknown;

export function unpickle(data: Uint8Array, opts: UnpickleOptions): unknown {
  const src = opts.source;
  const maxMemo = opts.maxMemo ?? 10_000_000;
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  const stack: StackItem[] = [];
  const memo = new Map<number, unknown>();
  const madeBy = new WeakMap<object, PyGlobal>();
  let p = 0;
  const fail = (msg: string): never => {
    throw new LisaError(`${src}: pickle ${msg} (at byte ${p})`);
  };
  const need = (n: number): void => {
    if (p + n > buf.length) fail('ends unexpectedly');
  };
  const u8 = (): number => {
    need(1);
    return buf[p++]!;
  };
  /** An n-byte little-endian field at the cursor, bounds-checked, the cursor moved past it. */
  const fixed = <T>(n: number, read: (at: number) => T): T => {
    need(n);
    const v = read(p);
    p += n;
    return v;
  };
  const u16 = (): number => fixed(2, (at) => buf.readUInt16LE(at));
  const u32 = (): number => fixed(4, (at) => buf.readUInt32LE(at));
  const i32 = (): number => fixed(4, (at) => buf.readInt32LE(at));
  const u64 = (): number => {
    const v = fixed(8, (at) => buf.readBigUInt64LE(at));
    if (v > BigInt(buf.length)) fail(`length ${v} exceeds the data`);
    return Number(v);
  };
  const bytes = (n: number): Buffer => {
    if (n < 0) fail('negative length');
    return fixed(n, (at) => buf.subarray(at, at + n));
  };
  const line = (): string => {
    const end = buf.indexOf(0x0a, p);
    if (end < 0) fail('text line not terminated');
    const s = buf.toString('latin1', p, end);
    p = end + 1;
    return s;
  };
  const pop = (): unknown => {
    if (stack.length === 0) fail('stack underflow');
    const v = stack.pop();
    if (v === MARK) fail('unexpected MARK');
    return v;
  };
  const top = (): unknown => {
    if (stack.length === 0) fail('stack underflow');
    return stack[stack.length - 1];
  };
  const popMark = (): unknown[] => {
    const i = stack.lastIndexOf(MARK);
    if (i < 0) fail('no MARK on the stack');
    const items = stack.splice(i);
    items.shift();
    return items;
  };
  const put = (k: number, v: unknown): void => {
    if (memo.size >= maxMemo && !memo.has(k)) fail('memo too large');
    memo.set(k, v);
  };
  const get = (k: number): unknown => {
    if (!memo.has(k)) fail(`memo key ${k} not set`);
    return memo.get(k);
  };
  const findGlobal = (module: string, name: string): PyGlobal => {
    const g = opts.globals.get(`${module}.${name}`);
    if (!g)
      throw new LisaError(
        `${src}: refused: the pickle names the global ${module}.${name}, which is not allowed in a checkpoint ` +
          '(only state-dict types are); nothing was executed',
      );
    return g;
  };
  const str = (b: Buffer): string => b.toString('utf8');
  const setItems = (d: unknown, kv: unknown[]): void => {
    if (!(d instanceof Map)) fail('SETITEM(S) on a non-dict');
    for (let i = 0; i + 1 < kv.length; i += 2) (d as Map<unknown, unknown>).set(kv[i], kv[i + 1]);
  };
  const longLE = (b: Buffer): number | bigint => {
    if (b.length === 0) return 0;
    let v = 0n;
    for (let i = b.length - 1; i >= 0; i--) v = (v << 8n) | BigInt(b[i]!);
    if (b[b.length - 1]! & 0x80) v -= 1n << BigInt(8 * b.length);
    return v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v;
  };

  for (;;) {
    const op = u8();
    switch (op) {
      case 0x80:
        u8();
        break; // PROTO
      case 0x95:
        bytes(8);
        break; // FRAME: framing only
      case 0x2e: {
        // STOP
        return pop();
      }
      case 0x28:
        stack.push(MARK);
        break;
      case 0x29:
        stack.push(new PyTuple());
        break;
      case 0x5d:
        stack.push([]);
        break;
      case 0x7d:
        stack.push(new Map());
        break;
      case 0x4e:
        stack.push(null);
        break;
      case 0x88:
        stack.push(true);
        break;
      case 0x89:
        stack.push(false);
        break;
      case 0x4a:
        stack.push(i32());
        break; // BININT
      case 0x4b:
        stack.push(u8());
        break; // BININT1
      case 0x4d:
        stack.push(u16());
        break; // BININT2
      case 0x8a:
        stack.push(longLE(bytes(u8())));
        break; // LONG1
      case 0x8b: {
        const n = i32();
        stack.push(longLE(bytes(n)));
        break;
      } // LONG4
      case 0x47: {
        need(8);
        stack.push(buf.readDoubleBE(p));
        p += 8;
        break;
      } // BINFLOAT
      case 0x49: {
        // INT (text; "I01"/"I00" are protocol-0 booleans)
        const s = line();
        if (s === '01') stack.push(true);
        else if (s === '00') stack.push(false);
        else {
          const v = Number.parseInt(s, 10);
          if (!Number.isFinite(v)) fail(`bad INT ${s}`);
          stack.push(v);
        }
        break;
      }
      case 0x4c: {
        // LONG text: digits only (BigInt would throw its own SyntaxError), at most 4300 of them as Python
        const s = line().replace(/L$/, '');
        if (!/^[+-]?\d{1,4300}$/.test(s)) fail(`bad LONG ${JSON.stringify(s.slice(0, 40))}`);
        const v = BigInt(s);
        stack.push(v >= BigInt(Number.MIN_SAFE_INTEGER) && v <= BigInt(Number.MAX_SAFE_INTEGER) ? Number(v) : v);
        break;
      }
      case 0x46: {
        const v = Number.parseFloat(line());
        stack.push(v);
        break;
      } // FLOAT text
      case 0x58:
        stack.push(str(bytes(u32())));
        break; // BINUNICODE
      case 0x8c:
        stack.push(str(bytes(u8())));
        break; // SHORT_BINUNICODE
      case 0x8d:
        stack.push(str(bytes(u64())));
        break; // BINUNICODE8
      case 0x54:
        stack.push(str(bytes(i32())));
        break; // BINSTRING (Python 2 str)
      case 0x55:
        stack.push(str(bytes(u8())));
        break; // SHORT_BINSTRING
      case 0x42:
        stack.push(new Uint8Array(bytes(u32())));
        break; // BINBYTES
      case 0x43:
        stack.push(new Uint8Array(bytes(u8())));
        break; // SHORT_BINBYTES
      case 0x8e:
        stack.push(new Uint8Array(bytes(u64())));
        break; // BINBYTES8
      case 0x74:
        stack.push(PyTuple.from(popMark()) as PyTuple);
        break; // TUPLE
      case 0x85: {
        const a = pop();
        stack.push(PyTuple.of(a));
        break;
      }
      case 0x86: {
        const b = pop();
        const a = pop();
        stack.push(PyTuple.of(a, b));
        break;
      }
      case 0x87: {
        const c = pop();
        const b = pop();
        const a = pop();
        stack.push(PyTuple.of(a, b, c));
        break;
      }
      case 0x6c:
        stack.push(popMark());
        break; // LIST
      case 0x64: {
        const kv = popMark();
        const d = new Map();
        setItems(d, kv);
        stack.push(d);
        break;
      } // DICT
      case 0x61: {
        const v = pop();
        const l = top();
        if (!Array.isArray(l)) fail('APPEND on a non-list');
        (l as unknown[]).push(v);
        break;
      }
      case 0x65: {
        const items = popMark();
        const l = top();
        if (!Array.isArray(l)) fail('APPENDS on a non-list');
        (l as unknown[]).push(...items);
        break;
      }
      case 0x73: {
        const v = pop();
        const k = pop();
        setItems(top(), [k, v]);
        break;
      } // SETITEM
      case 0x75: {
        const kv = popMark();
        setItems(top(), kv);
        break;
      } // SETITEMS
      case 0x63: {
        const module = line();
        const name = line();
        stack.push(findGlobal(module, name));
        break;
      } // GLOBAL
      case 0x93: {
        // STACK_GLOBAL
        const name = pop();
        const module = pop();
        if (typeof module !== 'string' || typeof name !== 'string') fail('STACK_GLOBAL needs two strings');
        stack.push(findGlobal(module as string, name as string));
        break;
      }
      case 0x52:
      case 0x81: {
        // REDUCE, NEWOBJ: call an allowed global
        const args = pop();
        const fn = pop();
        if (!isGlobal(fn)) fail('REDUCE/NEWOBJ on something that is not an allowed global');
        if (!Array.isArray(args)) fail('REDUCE/NEWOBJ arguments are not a tuple');
        const g = fn as PyGlobal;
        const v = g.call(args as unknown[]);
        if (typeof v === 'object' && v !== null) madeBy.set(v, g);
        stack.push(v);
        break;
      }
      case 0x62: {
        // BUILD
        const state = pop();
        const obj = top();
        const g = typeof obj === 'object' && obj !== null ? madeBy.get(obj) : undefined;
        if (!g?.build) fail('BUILD on an object that takes no state');
        stack[stack.length - 1] = g!.build!(obj, state);
        break;
      }
      case 0x51: {
        // BINPERSID
        if (!opts.persistentLoad) fail('has a persistent id, which this kind of file does not use');
        stack.push(opts.persistentLoad!(pop()));
        break;
      }
      case 0x71:
        put(u8(), top());
        break; // BINPUT
      case 0x72:
        put(u32(), top());
        break; // LONG_BINPUT
      case 0x94:
        put(memo.size, top());
        break; // MEMOIZE
      case 0x70:
        put(Number.parseInt(line(), 10), top());
        break; // PUT
      case 0x68:
        stack.push(get(u8()));
        break; // BINGET
      case 0x6a:
        stack.push(get(u32()));
        break; // LONG_BINGET
      case 0x67:
        stack.push(get(Number.parseInt(line(), 10)));
        break; // GET
      case 0x30:
        pop();
        break; // POP
      case 0x31:
        popMark();
        break; // POP_MARK
      case 0x32:
        stack.push(top());
        break; // DUP
      default:
        fail(`uses opcode 0x${op.toString(16).padStart(2, '0')}, which is not supported`);
    }
  }
}

function isGlobal(v: unknown): v is PyGlobal {
  return typeof v === 'object' && v !== null && typeof (v as PyGlobal).call === 'function' && typeof (v as PyGlobal).qualname === 'string';
}

/** Helper for allow-lists. */
export function pyGlobal(
  qualname: string,
  call: (args: readonly unknown[]) => unknown,
  build?: (obj: unknown, state: unknown) => unknown,
): PyGlobal {
  return build ? { qualname, call, build } : { qualname, call };
}
