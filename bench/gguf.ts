/**
 * Writes a LLaMA GGUF (v3) with random Q4_0 weights in a given shape, for the llama.cpp baseline in
 * `npm run bench`: same dimensions and vocabulary as our checkpoint, so both engines stream the same bytes
 * per token. Values are random (speed does not depend on them), distinct per tensor, and streamed to disk.
 *
 * Layout (ggml's gguf.c): magic "GGUF", version 3, tensor count, KV count; KVs (key string, type, value);
 * tensor infos (name, n_dims, ne[] innermost first, ggml type, offset into the data section); padding to
 * general.alignment (32); data, each tensor aligned. Q4_0 block: fp16 scale d, 16 bytes of 4-bit quants
 * (value = d·(q − 8)), 32 weights per block along the row.
 */
import { closeSync, openSync, renameSync, writeSync } from 'node:fs';
import type { LlamaConfig } from '../src/models/config.js';
import type { Piece } from '../src/text/sentencepiece.js';

const ALIGN = 32;
const enum KvType { U32 = 4, I32 = 5, F32 = 6, STRING = 8, ARRAY = 9 }
const enum GgmlType { F32 = 0, Q4_0 = 2 }

type KvValue = { t: KvType.U32 | KvType.I32 | KvType.F32; v: number } | { t: KvType.STRING; v: string }
  | { t: KvType.ARRAY; of: KvType.STRING; v: string[] } | { t: KvType.ARRAY; of: KvType.F32 | KvType.I32; v: number[] };

/** Little-endian byte sink that grows as needed. */
class Bytes {
  private buf = new Uint8Array(1 << 20);
  private view = new DataView(this.buf.buffer);
  length = 0;
  private room(n: number): void {
    if (this.length + n <= this.buf.length) return;
    const next = new Uint8Array(Math.max(this.buf.length * 2, this.length + n));
    next.set(this.buf.subarray(0, this.length));
    this.buf = next;
    this.view = new DataView(next.buffer);
  }
  u32(x: number): void { this.room(4); this.view.setUint32(this.length, x, true); this.length += 4; }
  i32(x: number): void { this.room(4); this.view.setInt32(this.length, x, true); this.length += 4; }
  u64(x: number): void { this.room(8); this.view.setBigUint64(this.length, BigInt(x), true); this.length += 8; }
  f32(x: number): void { this.room(4); this.view.setFloat32(this.length, x, true); this.length += 4; }
  str(s: string): void { const b = Buffer.from(s, 'utf8'); this.u64(b.length); this.room(b.length); this.buf.set(b, this.length); this.length += b.length; }
  pad(align: number): void { const n = (align - (this.length % align)) % align; this.room(n); this.buf.fill(0, this.length, this.length + n); this.length += n; }
  bytes(): Uint8Array { return this.buf.subarray(0, this.length); }
}

function writeKv(b: Bytes, key: string, kv: KvValue): void {
  b.str(key);
  b.u32(kv.t);
  switch (kv.t) {
    case KvType.U32: b.u32(kv.v); break;
    case KvType.I32: b.i32(kv.v); break;
    case KvType.F32: b.f32(kv.v); break;
    case KvType.STRING: b.str(kv.v); break;
    case KvType.ARRAY:
      b.u32(kv.of);
      b.u64(kv.v.length);
      if (kv.of === KvType.STRING) for (const s of kv.v) b.str(s);
      else for (const x of kv.v) (kv.of === KvType.F32 ? b.f32(x) : b.i32(x));
  }
}

interface TensorInfo { name: string; ne: number[]; type: GgmlType; bytes: number; offset: number }

/** llama.cpp's tensor names for a LLaMA decoder; ne is [in_features, out_features] for linear weights. */
function llamaTensors(cfg: LlamaConfig): TensorInfo[] {
  const H = cfg.hiddenSize, F = cfg.intermediateSize, kv = (H / cfg.numHeads) * cfg.numKvHeads;
  const out: TensorInfo[] = [];
  const add = (name: string, ne: number[]): void => {
    const q = ne.length === 2;
    const bytes = q ? (ne[0]! / 32) * 18 * ne[1]! : ne[0]! * 4;
    out.push({ name, ne, type: q ? GgmlType.Q4_0 : GgmlType.F32, bytes, offset: 0 });
  };
  add('token_embd.weight', [H, cfg.vocabSize]);
  for (let l = 0; l < cfg.numLayers; l++) {
    add(`blk.${l}.attn_norm.weight`, [H]);
    add(`blk.${l}.attn_q.weight`, [H, H]);
    add(`blk.${l}.attn_k.weight`, [H, kv]);
    add(`blk.${l}.attn_v.weight`, [H, kv]);
    add(`blk.${l}.attn_output.weight`, [H, H]);
    add(`blk.${l}.ffn_norm.weight`, [H]);
    add(`blk.${l}.ffn_gate.weight`, [H, F]);
    add(`blk.${l}.ffn_up.weight`, [H, F]);
    add(`blk.${l}.ffn_down.weight`, [F, H]);
  }
  add('output_norm.weight', [H]);
  add('output.weight', [H, cfg.vocabSize]);
  let off = 0;
  for (const t of out) { t.offset = off; off += Math.ceil(t.bytes / ALIGN) * ALIGN; }
  return out;
}

/** fp16 bits of a positive normal float (enough for Q4_0 scales). */
function fp16(x: number): number {
  const e = Math.floor(Math.log2(x));
  const m = Math.round((x / 2 ** e - 1) * 1024);
  return ((e + 15) << 10) | (m & 0x3ff);
}

/** Fills `out` with tensor data: RMSNorm weights ≈ 1, Q4_0 blocks with scales ≈ 0.002–0.004 and random nibbles. */
function fillTensor(t: TensorInfo, out: Uint8Array, seed: number): void {
  let s = seed >>> 0 || 1;
  const next = (): number => { s ^= s << 13; s ^= s >>> 17; s ^= s << 5; return s >>> 0; };
  if (t.type === GgmlType.F32) {
    const f = new Float32Array(out.buffer, out.byteOffset, t.bytes / 4);
    for (let i = 0; i < f.length; i++) f[i] = 1 + ((next() / 2 ** 32) - 0.5) * 0.1;
    return;
  }
  const v = new DataView(out.buffer, out.byteOffset, out.byteLength);
  for (let o = 0; o < t.bytes; o += 18) {
    v.setUint16(o, fp16(0.002 + (next() / 2 ** 32) * 0.002), true);
    for (let j = 0; j < 16; j += 4) v.setUint32(o + 2 + j, next(), true);
  }
}

/** Writes `path` (through a temp file) and returns its size in bytes. */
export function writeRandomLlamaGguf(path: string, cfg: LlamaConfig, vocab: readonly Piece[], name: string): number {
  if (cfg.hiddenSize % 32 || cfg.intermediateSize % 32) throw new Error('Q4_0 needs row lengths that are multiples of 32');
  const tokens = vocab.map((p) => p.piece);
  const scores = vocab.map((p) => p.score);
  const types = vocab.map((p) => p.type);
  // Added tokens beyond the SentencePiece vocabulary ([SEG], <im_start>, …) are user-defined tokens.
  for (let i = tokens.length; i < cfg.vocabSize; i++) { tokens.push(`<added_${i}>`); scores.push(0); types.push(4); }
  const kvs: [string, KvValue][] = [
    ['general.architecture', { t: KvType.STRING, v: 'llama' }],
    ['general.name', { t: KvType.STRING, v: name }],
    ['general.file_type', { t: KvType.U32, v: 2 }], // MOSTLY_Q4_0
    ['general.alignment', { t: KvType.U32, v: ALIGN }],
    ['llama.context_length', { t: KvType.U32, v: cfg.maxPositionEmbeddings }],
    ['llama.embedding_length', { t: KvType.U32, v: cfg.hiddenSize }],
    ['llama.block_count', { t: KvType.U32, v: cfg.numLayers }],
    ['llama.feed_forward_length', { t: KvType.U32, v: cfg.intermediateSize }],
    ['llama.rope.dimension_count', { t: KvType.U32, v: cfg.hiddenSize / cfg.numHeads }],
    ['llama.rope.freq_base', { t: KvType.F32, v: cfg.ropeTheta }],
    ['llama.attention.head_count', { t: KvType.U32, v: cfg.numHeads }],
    ['llama.attention.head_count_kv', { t: KvType.U32, v: cfg.numKvHeads }],
    ['llama.attention.layer_norm_rms_epsilon', { t: KvType.F32, v: cfg.rmsNormEps }],
    ['tokenizer.ggml.model', { t: KvType.STRING, v: 'llama' }],
    ['tokenizer.ggml.tokens', { t: KvType.ARRAY, of: KvType.STRING, v: tokens }],
    ['tokenizer.ggml.scores', { t: KvType.ARRAY, of: KvType.F32, v: scores }],
    ['tokenizer.ggml.token_type', { t: KvType.ARRAY, of: KvType.I32, v: types }],
    ['tokenizer.ggml.bos_token_id', { t: KvType.U32, v: cfg.bosTokenId }],
    ['tokenizer.ggml.eos_token_id', { t: KvType.U32, v: cfg.eosTokenId }],
    ['tokenizer.ggml.unknown_token_id', { t: KvType.U32, v: 0 }],
  ];
  const tensors = llamaTensors(cfg);
  const head = new Bytes();
  head.u32(0x46554747); // "GGUF"
  head.u32(3);
  head.u64(tensors.length);
  head.u64(kvs.length);
  for (const [k, v] of kvs) writeKv(head, k, v);
  for (const t of tensors) {
    head.str(t.name);
    head.u32(t.ne.length);
    for (const d of t.ne) head.u64(d);
    head.u32(t.type);
    head.u64(t.offset);
  }
  head.pad(ALIGN);
  const tmp = `${path}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w');
  let size = 0;
  try {
    size += writeSync(fd, head.bytes());
    const CHUNK = 18 * 32 * 1024 * 4; // whole Q4_0 blocks and whole f32 values
    const buf = new Uint8Array(CHUNK);
    tensors.forEach((t, i) => {
      for (let o = 0; o < t.bytes; o += CHUNK) {
        const part = buf.subarray(0, Math.min(CHUNK, t.bytes - o));
        fillTensor({ ...t, bytes: part.length }, part, (i + 1) * 0x9e3779b1 + o);
        size += writeSync(fd, part);
      }
      const pad = Math.ceil(t.bytes / ALIGN) * ALIGN - t.bytes;
      if (pad) size += writeSync(fd, new Uint8Array(pad));
    });
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, path);
  return size;
}
