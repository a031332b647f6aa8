import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { LisaError } from '../src/errors.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16, toFloat32 } from '../src/io/dtype.js';
import { encodeNpy, parseNpy, readNpy } from '../src/io/npy.js';
import { readSafetensors, writeSafetensors } from '../src/io/safetensors.js';
import { readTorchBin } from '../src/io/torch-bin.js';
import { unpickle } from '../src/io/pickle.js';
import { FIXTURES, makeZip, tempDir } from './helpers.js';

const TORCH_BIN = join(FIXTURES, 'torch-bin');
const TINY = join(FIXTURES, 'lisa-tiny', 'checkpoint');

function throwsLisa(fn: () => unknown, pattern: RegExp): void {
  assert.throws(fn, (e: unknown) => {
    assert.ok(e instanceof LisaError, `expected a LisaError, got ${String(e)}`);
    assert.match(e.message, pattern);
    return true;
  });
}

describe('torch .bin reader', () => {
  const expected = JSON.parse(readFileSync(join(TORCH_BIN, 'expected.json'), 'utf8')) as Record<
    string,
    { dtype: string; shape: number[]; contiguous: boolean; values_as_float64: number[] }
  >;

  it('reads every tensor of the two-shard fixture through the index, equal to expected.json', () => {
    const ckpt = openCheckpoint(join(TORCH_BIN, 'pytorch_model.bin.index.json'));
    try {
      assert.deepEqual([...ckpt.tensors.keys()].sort(), Object.keys(expected).sort());
      for (const [name, exp] of Object.entries(expected)) {
        const t = ckpt.get(name);
        assert.equal(t.dtype, exp.dtype, name);
        assert.deepEqual([...t.shape], exp.shape, name);
        assert.equal(t.span !== null, exp.contiguous, `${name} contiguity`);
        assert.deepEqual([...t.float32()], exp.values_as_float64, name);
      }
    } finally {
      ckpt.close();
    }
  });

  it('opens the folder the same way', () => {
    const ckpt = openCheckpoint(TORCH_BIN);
    assert.equal(ckpt.tensors.size, Object.keys(expected).length);
    assert.equal(ckpt.files.length, 2);
    ckpt.close();
  });

  it('refuses a pickle that names a forbidden global, without calling it', () => {
    // GLOBAL 'os system', the string 'echo pwned', TUPLE1, REDUCE, STOP.
    const pkl = Buffer.concat([
      Buffer.from([0x80, 2]),
      Buffer.from('cos\nsystem\n', 'latin1'),
      Buffer.from([0x58, 10, 0, 0, 0]),
      Buffer.from('echo pwned'),
      Buffer.from([0x85, 0x52, 0x2e]),
    ]);
    using d = tempDir();
    const p = join(d.path, 'evil.bin');
    writeFileSync(p, makeZip([{ name: 'archive/data.pkl', data: pkl }]));
    throwsLisa(() => readTorchBin(p), /refused.*os\.system/);
    throwsLisa(() => openCheckpoint(p), /os\.system/);
  });

  it('refuses storages that are missing or too small, and truncated archives', () => {
    const src = readFileSync(join(TORCH_BIN, 'pytorch_model-00002-of-00002.bin'));
    using d = tempDir();
    const p = join(d.path, 'trunc.bin');
    writeFileSync(p, src.subarray(0, src.length - 40));
    throwsLisa(() => readTorchBin(p), /zip|truncated/);
    // A valid pickle whose storage member was left out of the archive.
    const pkl = Buffer.concat([
      Buffer.from([0x80, 2]),
      Buffer.from('ccollections\nOrderedDict\n', 'latin1'),
      Buffer.from([0x29, 0x52]),
      Buffer.from([0x58, 1, 0, 0, 0]),
      Buffer.from('w'),
      Buffer.from('ctorch._utils\n_rebuild_tensor_v2\n', 'latin1'),
      Buffer.from([0x28]),
      Buffer.from([0x28, 0x58, 7, 0, 0, 0]),
      Buffer.from('storage'),
      Buffer.from('ctorch\nFloatStorage\n', 'latin1'),
      Buffer.from([0x58, 1, 0, 0, 0]),
      Buffer.from('0'),
      Buffer.from([0x58, 3, 0, 0, 0]),
      Buffer.from('cpu'),
      Buffer.from([0x4b, 4, 0x74, 0x51]),
      Buffer.from([0x4b, 0, 0x4b, 4, 0x85, 0x4b, 1, 0x85, 0x89, 0x4e, 0x74, 0x52, 0x73, 0x2e]),
    ]);
    const q = join(d.path, 'nostorage.bin');
    writeFileSync(q, makeZip([{ name: 'archive/data.pkl', data: pkl }]));
    throwsLisa(() => readTorchBin(q), /archive\/data\/0.*not in the archive/);
    writeFileSync(
      q,
      makeZip([
        { name: 'archive/data.pkl', data: pkl },
        { name: 'archive/data/0', data: new Uint8Array(8) },
      ]),
    );
    throwsLisa(() => readTorchBin(q), /holds 8 bytes but is declared as 4 float32/);
    writeFileSync(
      q,
      makeZip([
        { name: 'archive/data.pkl', data: pkl },
        { name: 'archive/data/0', data: new Uint8Array(new Float32Array([1, 2, 3, 4]).buffer) },
      ]),
    );
    const ok = readTorchBin(q);
    assert.deepEqual([...ok.tensors[0]!.float32()], [1, 2, 3, 4]);
    ok.close();
  });
});

describe('safetensors', () => {
  it('lists and reads every tensor of the lisa-tiny checkpoint, equal to weights_manifest.json', () => {
    const manifest = JSON.parse(readFileSync(join(TINY, 'weights_manifest.json'), 'utf8')) as {
      tensors: Record<string, { dtype: string; shape: number[]; sha256: string }>;
    };
    const ckpt = openCheckpoint(TINY);
    try {
      assert.equal(ckpt.tensors.size, Object.keys(manifest.tensors).length);
      for (const [name, m] of Object.entries(manifest.tensors)) {
        const t = ckpt.get(name);
        assert.equal(t.dtype, m.dtype, name);
        assert.deepEqual([...t.shape], m.shape, name);
        assert.equal(createHash('sha256').update(t.bytes()).digest('hex'), m.sha256, name);
      }
    } finally {
      ckpt.close();
    }
  });

  it('round-trips every dtype through the writer', () => {
    using d = tempDir();
    const p = join(d.path, 'x.safetensors');
    const f32 = new Float32Array([1.5, -2, 3e-8, 0]);
    writeSafetensors(
      p,
      [
        { name: 'a', dtype: 'float32', shape: [2, 2], data: new Uint8Array(f32.buffer) },
        { name: 'b', dtype: 'bfloat16', shape: [3], data: new Uint8Array(new Uint16Array([0x3f80, 0xc000, 0x0000]).buffer) },
        { name: 'c', dtype: 'int64', shape: [], data: new Uint8Array(new BigInt64Array([-7n]).buffer) },
        { name: 'd', dtype: 'bool', shape: [2], data: new Uint8Array([1, 0]) },
        { name: 'e', dtype: 'float16', shape: [1], data: new Uint8Array(new Uint16Array([0x3c00]).buffer) },
      ],
      { format: 'pt' },
    );
    const f = readSafetensors(p);
    const by = new Map(f.tensors.map((t) => [t.name, t]));
    assert.deepEqual(f.metadata, { format: 'pt' });
    assert.deepEqual([...by.get('a')!.float32()], [...f32]);
    assert.deepEqual([...by.get('b')!.float32()], [1, -2, 0]);
    assert.deepEqual([...by.get('c')!.float32()], [-7]);
    assert.deepEqual([...by.get('d')!.bytes()], [1, 0]);
    assert.deepEqual([...by.get('e')!.float32()], [1]);
    assert.equal((readFileSync(p).readUInt32LE(0) + 8) % 8, 0, 'data starts 8-byte aligned');
    f.close();
  });

  function craft(header: unknown, dataBytes: number, rawHeader?: string): Buffer {
    const json = Buffer.from(rawHeader ?? JSON.stringify(header));
    const len = Buffer.alloc(8);
    len.writeBigUInt64LE(BigInt(json.length));
    return Buffer.concat([len, json, Buffer.alloc(dataBytes)]);
  }

  it('gives a clear error for truncated files, bad JSON, wrong and overlapping offsets', () => {
    using d = tempDir();
    const p = join(d.path, 'bad.safetensors');
    const cases: [Buffer, RegExp][] = [
      [Buffer.alloc(3), /too short/],
      [craft({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] } }, 4), /ends at byte 8.*only 4 data bytes/],
      [craft(null, 0, '{"a": '), /not valid JSON/],
      [craft({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 12] } }, 12), /span 12 bytes but float32\[2\] needs 8/],
      [
        craft({ a: { dtype: 'F32', shape: [2], data_offsets: [0, 8] }, b: { dtype: 'F32', shape: [1], data_offsets: [4, 8] } }, 8),
        /"a" and "b" overlap/,
      ],
      [craft({ a: { dtype: 'Q4', shape: [2], data_offsets: [0, 8] } }, 8), /unknown dtype "Q4"/],
      [craft({ a: { dtype: 'F32', shape: [-1], data_offsets: [0, 8] } }, 8), /shape must be/],
      [
        (() => {
          const b = craft({}, 0);
          b.writeBigUInt64LE(1n << 40n);
          return b;
        })(),
        /header claims/,
      ],
    ];
    for (const [bytes, re] of cases) {
      writeFileSync(p, bytes);
      throwsLisa(() => readSafetensors(p), re);
    }
  });

  it('reads a tensor that is cut off by truncation with an error naming the file', () => {
    using d = tempDir();
    const src = join(TINY, 'model.safetensors');
    const p = join(d.path, 'cut.safetensors');
    const bytes = readFileSync(src);
    writeFileSync(p, bytes.subarray(0, bytes.length - 100));
    throwsLisa(() => readSafetensors(p), /cut\.safetensors.*truncated or wrong offsets/);
  });
});

describe('checkpoint index', () => {
  it('rejects an index naming a missing shard or a path outside the folder', () => {
    using d = tempDir();
    const idx = join(d.path, 'pytorch_model.bin.index.json');
    writeFileSync(idx, JSON.stringify({ weight_map: { a: '../etc/passwd' } }));
    throwsLisa(() => openCheckpoint(idx), /must name a shard file in the same folder/);
    writeFileSync(idx, JSON.stringify({ weight_map: { a: 'missing.bin' } }));
    throwsLisa(() => openCheckpoint(idx), /missing\.bin: no such file/);
    writeFileSync(idx, '{"weight_map": [1]}');
    throwsLisa(() => openCheckpoint(idx), /weight_map/);
    writeFileSync(idx, 'nope');
    throwsLisa(() => openCheckpoint(d.path), /not valid JSON/);
  });

  it('rejects an index that puts a tensor in the wrong shard', () => {
    using d = tempDir();
    const index = JSON.parse(readFileSync(join(TORCH_BIN, 'pytorch_model.bin.index.json'), 'utf8')) as {
      weight_map: Record<string, string>;
    };
    index.weight_map['model.norm.weight'] = 'pytorch_model-00002-of-00002.bin';
    for (const f of new Set(Object.values(index.weight_map))) writeFileSync(join(d.path, f), readFileSync(join(TORCH_BIN, f)));
    writeFileSync(join(d.path, 'pytorch_model.bin.index.json'), JSON.stringify(index));
    throwsLisa(
      () => openCheckpoint(d.path),
      /puts model\.norm\.weight in pytorch_model-00002-of-00002\.bin, but it is in pytorch_model-00001/,
    );
  });

  it('says what a folder without weights is not', () => {
    using d = tempDir();
    throwsLisa(() => openCheckpoint(d.path), /not a checkpoint folder/);
  });
});

describe('dtype conversion', () => {
  it('widens bf16 and fp16 exactly and rounds to nearest even when narrowing', () => {
    assert.equal(bf16ToF32(0x3f80), 1);
    assert.equal(bf16ToF32(0xc0490fdb >>> 16), -3.140625);
    assert.equal(f32ToBf16(1.00390625), 0x3f80); // halfway: ties to even (down)
    assert.equal(f32ToBf16(1.01171875), 0x3f82); // halfway: ties to even (up)
    assert.equal(f16ToF32(0x3c00), 1);
    assert.equal(f16ToF32(0x0001), 2 ** -24);
    assert.equal(f16ToF32(0x7bff), 65504);
    assert.equal(f16ToF32(0xfc00), -Infinity);
    assert.ok(Number.isNaN(f16ToF32(0x7e00)));
    for (const h of [0x0000, 0x0001, 0x03ff, 0x0400, 0x3555, 0x3c00, 0x7bff, 0x8001, 0xbc00, 0x7c00])
      assert.equal(f32ToF16(f16ToF32(h)), h);
    assert.equal(f32ToF16(65520), 0x7c00); // rounds up to infinity
    assert.equal(f32ToF16(1 + 2 ** -11), 0x3c00); // halfway, ties to even
    assert.deepEqual([...toFloat32('bfloat16', new Uint8Array(new Uint16Array([0x4040, 0xbf00]).buffer))], [3, -0.5]);
  });
});

describe('.npy', () => {
  it('reads the fixtures and round-trips every dtype', () => {
    const a = readNpy(join(FIXTURES, 'lisa-tiny', 'golden', 'synthetic_png', 'input_ids.npy'));
    assert.equal(a.dtype, 'int64');
    assert.equal(a.shape.length, 2);
    assert.equal(a.data[0], 1n, 'BOS first');
    for (const [dtype, data] of [
      ['float32', new Float32Array([1, -2.5, 3])],
      ['int64', new BigInt64Array([1n, -2n, 3n])],
      ['int32', new Int32Array([4, 5, 6])],
      ['uint8', new Uint8Array([7, 8, 9])],
      ['bool', new Uint8Array([1, 0, 1])],
      ['float16', new Uint16Array([0x3c00, 0, 0xc000])],
    ] as const) {
      const back = parseNpy(encodeNpy(dtype, [1, 3], data));
      assert.equal(back.dtype, dtype);
      assert.deepEqual(back.shape, [1, 3]);
      assert.deepEqual([...back.data], [...data]);
    }
    assert.deepEqual(parseNpy(encodeNpy('float32', [], new Float32Array([2]))).shape, []);
  });

  it('rejects malformed files clearly', () => {
    throwsLisa(() => parseNpy(Buffer.from('hello world'), 'x.npy'), /x\.npy: not a \.npy file/);
    const good = encodeNpy('float32', [4], new Float32Array(4));
    throwsLisa(() => parseNpy(good.subarray(0, good.length - 4), 'y.npy'), /needs 16 data bytes but only 12/);
    const fortran = Buffer.from(good);
    fortran.write("'fortran_order': True ", fortran.indexOf("'fortran_order'"), 'latin1');
    throwsLisa(() => parseNpy(fortran, 'z.npy'), /Fortran/);
  });
});

describe('protobuf codec', () => {
  it('reads back what the writer wrote, packed or not', async () => {
    const { ProtoWriter, readFields, fieldInts, fieldString, fieldFloat } = await import('../src/graph/protobuf.js');
    const w = new ProtoWriter();
    w.varint(1, 300)
      .string(2, 'héllo')
      .float(3, 1.5)
      .varint(4, -2)
      .message(5, (m) => m.varint(1, 7));
    w.bytes(6, Buffer.from([0x01, 0xac, 0x02])); // packed [1, 300]
    const f = readFields(w.finish(), 'test');
    assert.deepEqual(fieldInts(f, 1, 't'), [300]);
    assert.equal(fieldString(f.find((x) => x.field === 2)!), 'héllo');
    assert.equal(fieldFloat(f.find((x) => x.field === 3)!), 1.5);
    assert.deepEqual(fieldInts(f, 4, 't'), [-2]);
    assert.deepEqual(fieldInts(readFields(f.find((x) => x.field === 5)!.value as Uint8Array, 't'), 1, 't'), [7]);
    assert.deepEqual(fieldInts(f, 6, 't'), [1, 300]);
    throwsLisa(() => readFields(Uint8Array.from([0x0a, 0x05, 0x01]), 'short.pb'), /short\.pb: protobuf field runs past the end/);
  });
});

describe('torch.save-format writer', () => {
  it('writes shards our reader reads back exactly, 64-byte aligned, with valid CRCs', async () => {
    const { writeTorchBin } = await import('../src/io/torch-bin-writer.js');
    const { crc32 } = await import('node:zlib');
    using d = tempDir();
    const p = join(d.path, 'pytorch_model.bin');
    const a = new Float32Array([1.5, -2, 3.25, 4, 5, 6]);
    const b = new Uint16Array(Array.from({ length: 1000 }, (_, i) => 0x3f80 + (i % 50)));
    writeTorchBin(
      p,
      'pytorch_model',
      [
        { name: 'w', dtype: 'float32', shape: [2, 3], fill: (o, off) => o.set(new Uint8Array(a.buffer, off, o.length)) },
        { name: 'e', dtype: 'bfloat16', shape: [10, 100], fill: (o, off) => o.set(new Uint8Array(b.buffer, off, o.length)) },
        { name: 's', dtype: 'int64', shape: [], fill: (o) => o.set(new Uint8Array(new BigInt64Array([42n]).buffer)) },
      ],
      512,
    );
    const f = readTorchBin(p);
    const by = new Map(f.tensors.map((t) => [t.name, t]));
    assert.deepEqual([...by.get('w')!.float32()], [...a]);
    assert.deepEqual([...by.get('e')!.shape], [10, 100]);
    assert.deepEqual([...by.get('e')!.bytes()], [...new Uint8Array(b.buffer)]);
    assert.deepEqual([...by.get('s')!.float32()], [42]);
    for (const t of f.tensors) assert.equal(t.span!.offset % 64, 0, `${t.name} aligned`);
    // CRC of every member's data as stored in the central directory.
    const raw = readFileSync(p);
    const dir = (await import('../src/io/zip.js')).readZipDirectory(new (await import('../src/io/file.js')).RandomAccessFile(p));
    for (const e of dir.values()) {
      const cdAt = raw.lastIndexOf(Buffer.from(e.name)) - 46;
      assert.equal(raw.readUInt32LE(cdAt + 16), crc32(raw.subarray(e.dataOffset, e.dataOffset + e.size)) >>> 0, `${e.name} CRC`);
    }
    f.close();
  });
});

describe('unpickle: text opcodes', () => {
  // Protocol-0 LONG ("L<digits>L\n") as the fuzzer produced it: junk where digits belong was a raw SyntaxError.
  const pickle = (body: string): Uint8Array => Buffer.from(`${body}.`, 'latin1');
  it('reads a LONG and refuses one that is not digits with a LisaError naming the file', () => {
    assert.equal(
      unpickle(pickle('L123456789012345678901234567890L\n'), { globals: new Map(), source: 'x.pkl' }),
      123456789012345678901234567890n,
    );
    assert.equal(unpickle(pickle('L-42L\n'), { globals: new Map(), source: 'x.pkl' }), -42);
    throwsLisa(() => unpickle(pickle('LongStorageL\n'), { globals: new Map(), source: 'x.pkl' }), /x\.pkl.*bad LONG "ongStorage"/);
    throwsLisa(() => unpickle(pickle(`L${'9'.repeat(5000)}L\n`), { globals: new Map(), source: 'x.pkl' }), /x\.pkl.*bad LONG/);
  });
});

describe('zip members that do not inflate', () => {
  it('a corrupt DEFLATE member of a torch .bin is a LisaError naming the file and member', () => {
    using d = tempDir();
    const zip = makeZip([{ name: 'archive/data.pkl', data: new Uint8Array([0xff, 0xff, 0xff, 0xff, 0x07, 0x00, 0x13]) }]);
    // Mark the member DEFLATE-compressed (local header byte 8, central header byte 10): its bytes are not a valid stream.
    zip.writeUInt16LE(8, 8);
    const central = zip.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02]));
    zip.writeUInt16LE(8, central + 10);
    const p = join(d.path, 'bad.bin');
    writeFileSync(p, zip);
    throwsLisa(() => readTorchBin(p), /bad\.bin: zip member archive\/data\.pkl does not inflate/);
  });
});
