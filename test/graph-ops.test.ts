import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { join } from 'node:path';
import { Graph } from '../src/graph/graph.js';
import type { Value } from '../src/graph/ir.js';
import { addDecomposedRelPos, applyRotary, cacheMask, cachedAttention, F32_MIN, relPosAttention, relPosAttentionScores, attention, linear, mergeHeads, rotary, rotaryCosSin, rotaryFused, splitHeads, windowPartition, windowUnpartition } from '../src/graph/nn.js';
import { Engine } from '../src/graph/session.js';
import { f32, i64, type HostTensor } from '../src/graph/tensor.js';
import * as R from './reference.js';
import { randn, tempDir } from './helpers.js';

const cache = tempDir('lisa-ops-');
after(() => cache[Symbol.dispose]());
const engine = new Engine({ cacheDir: cache.path, threads: 1 });

async function run(g: Graph, feeds: Record<string, HostTensor>): Promise<Record<string, HostTensor>> {
  const s = await engine.load(g);
  try {
    const out = await s.run(feeds);
    // The static shapes the IR inferred must be what onnxruntime produced.
    for (const v of g.outputs) {
      const got = out[v.name]!.shape;
      assert.equal(got.length, v.shape.length, `${v.name} rank`);
      v.shape.forEach((d, i) => { if (typeof d === 'number') assert.equal(got[i], d, `${v.name} dim ${i}`); });
    }
    return out;
  } finally {
    await s.release();
  }
}

function close(actual: HostTensor, expected: R.Nd, tol = 1e-5, what = 'value'): void {
  assert.deepEqual([...actual.shape], expected.shape, `${what} shape`);
  const a = actual.data as Float32Array;
  let scale = 1e-6;
  for (const v of expected.data) scale = Math.max(scale, Math.abs(v));
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i]! - expected.data[i]!);
    if (!(d <= tol * scale)) assert.fail(`${what}[${i}]: got ${a[i]}, expected ${expected.data[i]} (|diff| ${d} > ${tol} × scale ${scale})`);
  }
}

let seed = 1;
function rand(shape: number[], scale = 1): R.Nd { return R.nd(shape, randn(shape.reduce((a, b) => a * b, 1), seed++, scale)); }
function feed(x: R.Nd): HostTensor { return f32(x.shape, x.data); }
function input(g: Graph, name: string, x: R.Nd): Value { return g.input(name, 'float32', x.shape); }

describe('graph ops against TypeScript references', () => {
  it('elementwise binary ops broadcast as numpy does', async () => {
    const a = rand([2, 3, 4]), b = rand([3, 1]);
    const bp = R.unary(b, (x) => Math.abs(x) + 0.5);
    const g = new Graph('binary');
    const va = input(g, 'a', a), vb = input(g, 'b', b), vbp = input(g, 'bp', bp);
    g.output(g.add(va, vb), 'add'); g.output(g.sub(va, vb), 'sub'); g.output(g.mul(va, vb), 'mul'); g.output(g.div(va, vbp), 'div');
    g.output(g.pow(vbp, g.scalar(1.5)), 'pow');
    const o = await run(g, { a: feed(a), b: feed(b), bp: feed(bp) });
    close(o.add!, R.binary(a, b, (x, y) => x + y)); close(o.sub!, R.binary(a, b, (x, y) => x - y));
    close(o.mul!, R.binary(a, b, (x, y) => x * y)); close(o.div!, R.binary(a, bp, (x, y) => x / y));
    close(o.pow!, R.unary(bp, (x) => x ** 1.5));
  });

  it('activations: ReLU, sigmoid, tanh, exp, neg, sqrt, exact GELU, QuickGELU, SiLU', async () => {
    const a = rand([5, 7], 3);
    const g = new Graph('unary');
    const x = input(g, 'x', a);
    g.output(g.relu(x), 'relu'); g.output(g.sigmoid(x), 'sigmoid'); g.output(g.tanh(x), 'tanh'); g.output(g.exp(x), 'exp');
    g.output(g.neg(x), 'neg'); g.output(g.sqrt(g.mul(x, x)), 'sqrt'); g.output(g.gelu(x), 'gelu'); g.output(g.quickGelu(x), 'quick'); g.output(g.silu(x), 'silu');
    const o = await run(g, { x: feed(a) });
    close(o.relu!, R.unary(a, (v) => Math.max(v, 0))); close(o.sigmoid!, R.unary(a, R.sigmoid)); close(o.tanh!, R.unary(a, Math.tanh));
    close(o.exp!, R.unary(a, Math.exp)); close(o.neg!, R.unary(a, (v) => -v)); close(o.sqrt!, R.unary(a, Math.abs));
    close(o.gelu!, R.unary(a, R.gelu)); close(o.quick!, R.unary(a, (v) => v * R.sigmoid(1.702 * v))); close(o.silu!, R.unary(a, (v) => v * R.sigmoid(v)));
  });

  it('Cast float32 → int64 truncates toward zero and back', async () => {
    const g = new Graph('cast');
    const x = g.input('x', 'float32', [4]);
    const i = g.cast(x, 'int64');
    g.output(i, 'i'); g.output(g.cast(i, 'float32'), 'f');
    const o = await run(g, { x: f32([4], [1.7, -1.7, 2.5, -0.2]) });
    assert.deepEqual([...o.i!.data], [1n, -1n, 2n, 0n]);
    assert.deepEqual([...o.f!.data], [1, -1, 2, 0]);
  });

  it('MatMul with broadcast batch dims, Gemm with transB, and linear()', async () => {
    const a = rand([2, 3, 4, 5]), b = rand([3, 5, 6]), w = rand([6, 5]), bias = rand([6]);
    const g = new Graph('matmul');
    const va = input(g, 'a', a), vb = input(g, 'b', b), vw = input(g, 'w', w), vbias = input(g, 'bias', bias);
    g.output(g.matmul(va, vb), 'mm');
    const a2 = g.reshape(va, [-1, 5]);
    g.output(g.gemm(a2, vw, vbias, { transB: true }), 'gemm');
    g.output(linear(g, va, g.transpose(vw, [1, 0]), vbias), 'lin');
    const o = await run(g, { a: feed(a), b: feed(b), w: feed(w), bias: feed(bias) });
    close(o.mm!, R.matmul(a, b));
    const ref = R.binary(R.matmul(R.nd([24, 5], a.data), R.transpose(w, [1, 0])), bias, (x, y) => x + y);
    close(o.gemm!, ref);
    close(o.lin!, R.nd([2, 3, 4, 6], ref.data));
  });

  it('Reshape, Transpose, Slice, Concat, Gather, Unsqueeze, Squeeze, Expand', async () => {
    const a = rand([2, 3, 4]), table = rand([10, 3]);
    const g = new Graph('shapes');
    const x = input(g, 'x', a), t = input(g, 't', table);
    g.output(g.reshape(x, [0, -1]), 'reshape');
    g.output(g.transpose(x, [2, 0, 1]), 'transpose');
    g.output(g.slice(x, [1, 0], [3, 4], [1, 2], [1, 2]), 'slice');
    g.output(g.slice(x, [-2], [100], [2]), 'slice_neg');
    g.output(g.concat([x, g.mul(x, g.scalar(2))], 1), 'concat');
    g.output(g.gather(t, g.constant('int64', [2, 2], [7, 0, 3, 3])), 'gather');
    const u = g.unsqueeze(x, [0, 3]);
    g.output(u, 'unsqueeze');
    g.output(g.squeeze(u, [0]), 'squeeze');
    g.output(g.expand(g.slice(x, [0], [1], [0]), [3, 3, 4]), 'expand');
    const o = await run(g, { x: feed(a), t: feed(table) });
    close(o.reshape!, R.nd([2, 12], a.data));
    close(o.transpose!, R.transpose(a, [2, 0, 1]));
    close(o.slice!, R.sliceAxis(R.sliceAxis(a, 1, 1, 3), 2, 0, 4, 2));
    close(o.slice_neg!, R.sliceAxis(a, 2, 2, 4));
    close(o.concat!, R.concat([a, R.unary(a, (v) => 2 * v)], 1));
    close(o.gather!, R.gatherRows(table, [7, 0, 3, 3], [2, 2]));
    close(o.unsqueeze!, R.nd([1, 2, 3, 1, 4], a.data));
    close(o.squeeze!, R.nd([2, 3, 1, 4], a.data));
    const first = R.sliceAxis(a, 0, 0, 1);
    close(o.expand!, R.concat([first, first, first], 0));
  });

  it('Softmax, LayerNormalization, RMSNorm', async () => {
    const a = rand([3, 4, 16], 2), gamma = rand([16]), beta = rand([16]);
    const g = new Graph('norms');
    const x = input(g, 'x', a), vg = input(g, 'g', gamma), vb = input(g, 'b', beta);
    g.output(g.softmax(x, -1), 'softmax');
    g.output(g.layerNorm(x, vg, vb, 1e-5), 'ln');
    g.output(g.rmsNorm(x, vg, 1e-6), 'rms');
    const o = await run(g, { x: feed(a), g: feed(gamma), b: feed(beta) });
    close(o.softmax!, R.softmaxLast(a));
    close(o.ln!, R.layerNormLast(a, gamma.data, beta.data, 1e-5));
    close(o.rms!, R.layerNormLast(a, gamma.data, null, 1e-6, true));
  });

  it('Conv (patch embedding, padded 3x3, grouped) and ConvTranspose (stride 2)', async () => {
    const x = rand([1, 3, 32, 32]), wp = rand([8, 3, 16, 16], 0.1), bp = rand([8]);
    const w3 = rand([6, 4, 3, 3], 0.3), x2 = rand([2, 8, 5, 5]), wt = rand([8, 4, 2, 2], 0.3), bt = rand([4]);
    const g = new Graph('conv');
    const vx = input(g, 'x', x), vx2 = input(g, 'x2', x2);
    g.output(g.conv(vx, input(g, 'wp', wp), input(g, 'bp', bp), { strides: [16, 16] }), 'patch');
    g.output(g.conv(vx2, input(g, 'w3', w3), null, { pads: [1, 1, 1, 1], group: 2 }), 'grouped');
    g.output(g.convTranspose(vx2, input(g, 'wt', wt), input(g, 'bt', bt), { strides: [2, 2] }), 'up');
    const o = await run(g, { x: feed(x), x2: feed(x2), wp: feed(wp), bp: feed(bp), w3: feed(w3), wt: feed(wt), bt: feed(bt) });
    close(o.patch!, R.conv2d(x, wp, bp.data, 16, 0));
    close(o.grouped!, R.conv2d(x2, w3, null, 1, 1, 2));
    close(o.up!, R.convTranspose2d(x2, wt, bt.data, 2));
  });

  it('bilinear Resize matches F.interpolate(align_corners=False) up and down', async () => {
    const x = rand([1, 2, 7, 9]);
    const g = new Graph('resize');
    const vx = input(g, 'x', x);
    g.output(g.resizeBilinear(vx, [16, 20]), 'up');
    g.output(g.resizeBilinear(vx, [3, 4]), 'down');
    const o = await run(g, { x: feed(x) });
    close(o.up!, R.resizeBilinear(x, 16, 20));
    close(o.down!, R.resizeBilinear(x, 3, 4));
  });
});

/** Naive multi-head attention over [B, H, S, D] with optional causal offset. */
function refAttention(q: R.Nd, k: R.Nd, v: R.Nd, causal: boolean): R.Nd {
  const [b, h, s, d] = q.shape as [number, number, number, number];
  const kvh = k.shape[1]!, t = k.shape[2]!;
  const out = new Float32Array(b * h * s * d);
  for (let bi = 0; bi < b; bi++) for (let hi = 0; hi < h; hi++) {
    const kh = Math.floor(hi / (h / kvh));
    for (let i = 0; i < s; i++) {
      const scores: number[] = [];
      for (let j = 0; j < t; j++) {
        if (causal && j > t - s + i) { scores.push(-Infinity); continue; }
        let dot = 0;
        for (let c = 0; c < d; c++) dot += q.data[((bi * h + hi) * s + i) * d + c]! * k.data[((bi * kvh + kh) * t + j) * d + c]!;
        scores.push(dot / Math.sqrt(d));
      }
      const m = Math.max(...scores);
      const e = scores.map((x) => Math.exp(x - m));
      const z = e.reduce((p, q2) => p + q2, 0);
      for (let c = 0; c < d; c++) {
        let acc = 0;
        for (let j = 0; j < t; j++) acc += (e[j]! / z) * v.data[((bi * kvh + kh) * t + j) * d + c]!;
        out[((bi * h + hi) * s + i) * d + c] = acc;
      }
    }
  }
  return R.nd([b, h, s, d], out);
}

describe('attention and rotary', () => {
  it('non-causal and causal attention, grouped-query heads, equal the reference', async () => {
    const q = rand([2, 4, 5, 8]), k = rand([2, 2, 5, 8]), v = rand([2, 2, 5, 8]);
    const g = new Graph('attn');
    const vq = input(g, 'q', q), vk = input(g, 'k', k), vv = input(g, 'v', v);
    g.output(attention(g, vq, vk, vv), 'full');
    g.output(attention(g, vq, vk, vv, { causal: true }), 'causal');
    const o = await run(g, { q: feed(q), k: feed(k), v: feed(v) });
    close(o.full!, refAttention(q, k, v, false));
    close(o.causal!, refAttention(q, k, v, true));
  });

  it('a decoder with a KV cache gives the same outputs as running the whole sequence', async () => {
    // One attention layer over [B, S, hidden] with symbolic sequence lengths, past keys/values in, present out.
    const hidden = 16, heads = 4, hd = 4, total = 7, prefix = 4;
    const wq = rand([hidden, hidden], 0.3), wk = rand([hidden, hidden], 0.3), wv = rand([hidden, hidden], 0.3);
    const invFreq = new Float32Array(hd / 2).map((_, i) => 1 / 10000 ** ((2 * i) / hd));
    const g = new Graph('decoder');
    const x = g.input('x', 'float32', [1, 'seq', hidden]);
    const pos = g.input('pos', 'float32', [1, 'seq']);
    const pastK = g.input('past_k', 'float32', [1, heads, 'past', hd]);
    const pastV = g.input('past_v', 'float32', [1, heads, 'past', hd]);
    const inv = g.constant('float32', [hd / 2], invFreq);
    const q = rotary(g, splitHeads(g, g.matmul(x, g.constant('float32', [hidden, hidden], wq.data)), heads, hd), pos, inv).out;
    const k = rotary(g, splitHeads(g, g.matmul(x, g.constant('float32', [hidden, hidden], wk.data)), heads, hd), pos, inv).out;
    const v = splitHeads(g, g.matmul(x, g.constant('float32', [hidden, hidden], wv.data)), heads, hd);
    const presentK = g.concat([pastK, k], 2), presentV = g.concat([pastV, v], 2);
    g.output(mergeHeads(g, attention(g, q, presentK, presentV, { causal: true }), heads, hd), 'y');
    g.output(presentK, 'present_k'); g.output(presentV, 'present_v');
    const s = await engine.load(g);
    const xs = rand([1, total, hidden]);
    const empty = f32([1, heads, 0, hd], []);
    const positions = (a: number, b: number): HostTensor => f32([1, b - a], Array.from({ length: b - a }, (_, i) => a + i));
    const full = await s.run({ x: feed(xs), pos: positions(0, total), past_k: empty, past_v: empty });
    let step = await s.run({ x: feed(R.sliceAxis(xs, 1, 0, prefix)), pos: positions(0, prefix), past_k: empty, past_v: empty });
    const ys: Float32Array[] = [step.y!.data as Float32Array];
    for (let t = prefix; t < total; t++) {
      step = await s.run({ x: feed(R.sliceAxis(xs, 1, t, t + 1)), pos: positions(t, t + 1), past_k: step.present_k!, past_v: step.present_v! });
      ys.push(step.y!.data as Float32Array);
    }
    await s.release();
    const cached = new Float32Array(ys.reduce<number[]>((acc, y) => acc.concat([...y]), []));
    close(f32([1, total, hidden], cached), R.nd([1, total, hidden], full.y!.data as Float32Array), 1e-5, 'cached vs full');
    assert.deepEqual([...step.present_k!.shape], [1, heads, total, hd]);
  });

  for (const past of [3, 0])
    it(`attention over ${past ? 'a' : 'an empty'} seq-major cache view (masked) equals causal attention over the whole sequence (GQA)`, async () => {
      const heads = 4, kvHeads = 2, d = 3, s = 2, total = past + s;
      const q = rand([1, heads, s, d]), k = rand([1, kvHeads, total, d]), v = rand([1, kvHeads, total, d]);
      // [1, H, T, D] head-major reference layout → rows t0..t1 as [t1 - t0, H·D] (seq-major, what the cache holds).
      const seqMajor = (x: R.Nd, t0: number, t1: number): Float32Array => {
        const h = x.shape[1]!, out = new Float32Array((t1 - t0) * h * d);
        for (let t = t0; t < t1; t++) for (let i = 0; i < h; i++) out.set(x.data.subarray((i * total + t) * d, (i * total + t + 1) * d), ((t - t0) * h + i) * d);
        return out;
      };
      const qRows = new Float32Array(s * heads * d);
      for (let t = 0; t < s; t++) for (let i = 0; i < heads; i++) qRows.set(q.data.subarray((i * s + t) * d, (i * s + t + 1) * d), (t * heads + i) * d);
      const g = new Graph('cached_attention');
      const vq = g.input('q', 'float32', [1, 's', heads * d]);
      const kn = g.input('k_new', 'float32', [1, 's', kvHeads * d]), vn = g.input('v_new', 'float32', [1, 's', kvHeads * d]);
      const pk = g.input('past_k', 'float32', ['past', kvHeads, d]), pv = g.input('past_v', 'float32', ['past', kvHeads, d]);
      const mask = cacheMask(g, g.input('past_mask', 'float32', [1, 'past']), vq);
      g.output(g.transpose(g.reshape(cachedAttention(g, vq, kn, vn, pk, pv, mask), [0, 0, heads, d]), [0, 2, 1, 3]), 'out');
      const o = await run(g, {
        q: f32([1, s, heads * d], qRows),
        k_new: f32([1, s, kvHeads * d], seqMajor(k, past, total)),
        v_new: f32([1, s, kvHeads * d], seqMajor(v, past, total)),
        // An empty cache is one junk row that the mask hides (as KvCache feeds it).
        past_k: past ? f32([past, kvHeads, d], seqMajor(k, 0, past)) : f32([1, kvHeads, d], new Float32Array(kvHeads * d).fill(1e3)),
        past_v: past ? f32([past, kvHeads, d], seqMajor(v, 0, past)) : f32([1, kvHeads, d], new Float32Array(kvHeads * d).fill(1e3)),
        past_mask: f32([1, Math.max(past, 1)], new Float32Array(Math.max(past, 1)).fill(past ? 0 : F32_MIN)),
      });
      // Reference: the s queries as the last positions of causal attention over all of them (GQA by head groups).
      close(o.out!, refAttention(q, k, v, true));
    });

  it('rotary embedding equals HF LLaMA rotate_half, and the fused op agrees', async () => {
    const b = 2, h = 3, s = 5, d = 8, base = 10000;
    const x = rand([b, h, s, d]);
    const invFreq = new Float32Array(d / 2).map((_, i) => 1 / base ** ((2 * i) / d));
    const posList = [0, 1, 2, 3, 4, 7, 8, 9, 10, 11];
    const g = new Graph('rope');
    const vx = input(g, 'x', x);
    const pos = g.input('pos', 'float32', [b, s]);
    g.output(rotary(g, vx, pos, g.constant('float32', [d / 2], invFreq)).out, 'rope');
    // Fused: caches [maxPos, d/2] of cos/sin(pos * inv_freq), input as [B, S, H*D].
    const maxPos = 16;
    const cosC = new Float32Array(maxPos * d / 2), sinC = new Float32Array(maxPos * d / 2);
    for (let p = 0; p < maxPos; p++) for (let i = 0; i < d / 2; i++) { cosC[p * d / 2 + i] = Math.cos(p * invFreq[i]!); sinC[p * d / 2 + i] = Math.sin(p * invFreq[i]!); }
    const xbs = g.reshape(g.transpose(vx, [0, 2, 1, 3]), [0, 0, h * d]);
    const fused = rotaryFused(g, xbs, g.input('pos_ids', 'int64', [b, s]), g.constant('float32', [maxPos, d / 2], cosC), g.constant('float32', [maxPos, d / 2], sinC), h);
    g.output(g.transpose(g.reshape(fused, [0, 0, h, d]), [0, 2, 1, 3]), 'fused');
    const o = await run(g, { x: feed(x), pos: f32([b, s], posList), pos_ids: i64([b, s], posList) });
    const ref = new Float32Array(x.data.length);
    for (let bi = 0; bi < b; bi++) for (let hi = 0; hi < h; hi++) for (let si = 0; si < s; si++) {
      const p = posList[bi * s + si]!;
      const row = ((bi * h + hi) * s + si) * d;
      for (let c = 0; c < d; c++) {
        const f = p * invFreq[c % (d / 2)]!;
        const rot = c < d / 2 ? -x.data[row + c + d / 2]! : x.data[row + c - d / 2]!;
        ref[row + c] = x.data[row + c]! * Math.cos(f) + rot * Math.sin(f);
      }
    }
    close(o.rope!, R.nd([b, h, s, d], ref));
    close(o.fused!, R.nd([b, h, s, d], ref));
  });

  it('rotaryCosSin/applyRotary compose to the same as rotary()', async () => {
    const x = rand([1, 2, 3, 4]);
    const g = new Graph('rope2');
    const vx = input(g, 'x', x);
    const pos = g.input('pos', 'float32', [1, 3]);
    const inv = g.constant('float32', [2], [1, 0.01]);
    const { cos, sin } = rotaryCosSin(g, pos, inv);
    g.output(applyRotary(g, vx, cos, sin), 'a');
    g.output(rotary(g, vx, pos, inv).out, 'b');
    const o = await run(g, { x: feed(x), pos: f32([1, 3], [5, 6, 7]) });
    assert.deepEqual([...o.a!.data], [...o.b!.data]);
  });
});

describe('SAM encoder helpers', () => {
  it('window partition and unpartition round-trip, with padding', async () => {
    const x = rand([1, 10, 9, 3]);
    const g = new Graph('windows');
    const vx = input(g, 'x', x);
    const { windows, hp, wp } = windowPartition(g, vx, 4);
    assert.deepEqual([hp, wp], [12, 12]);
    g.output(windows, 'windows');
    g.output(windowUnpartition(g, windows, 4, hp, wp, 10, 9), 'back');
    const o = await run(g, { x: feed(x) });
    assert.deepEqual([...o.windows!.shape], [9, 4, 4, 3]);
    // Window 4 (row 1, col 1) starts at pixel (4, 4).
    for (let i = 0; i < 4; i++) for (let j = 0; j < 4; j++) for (let c = 0; c < 3; c++) {
      assert.equal((o.windows!.data as Float32Array)[((4 * 4 + i) * 4 + j) * 3 + c], x.data[((4 + i) * 9 + (4 + j)) * 3 + c]);
    }
    assert.deepEqual([...o.back!.data], [...x.data]);
  });

  it('decomposed relative positions equal the einsum definition', async () => {
    const qh = 3, qw = 4, c = 5, b = 2;
    const q = rand([b, qh * qw, c]), attn = rand([b, qh * qw, qh * qw]), relH = rand([2 * qh - 1, c]), relW = rand([2 * qw - 1, c]);
    const g = new Graph('relpos');
    g.output(addDecomposedRelPos(g, input(g, 'attn', attn), input(g, 'q', q), input(g, 'rh', relH), input(g, 'rw', relW), [qh, qw], [qh, qw]), 'out');
    const o = await run(g, { attn: feed(attn), q: feed(q), rh: feed(relH), rw: feed(relW) });
    const ref = new Float32Array(attn.data);
    for (let bi = 0; bi < b; bi++) for (let h = 0; h < qh; h++) for (let w = 0; w < qw; w++) for (let kh = 0; kh < qh; kh++) for (let kw = 0; kw < qw; kw++) {
      let rh = 0, rw = 0;
      for (let ci = 0; ci < c; ci++) {
        const qv = q.data[(bi * qh * qw + h * qw + w) * c + ci]!;
        rh += qv * relH.data[(h - kh + qh - 1) * c + ci]!;
        rw += qv * relW.data[(w - kw + qw - 1) * c + ci]!;
      }
      ref[(bi * qh * qw + h * qw + w) * qh * qw + kh * qw + kw]! += rh + rw;
    }
    close(o.out!, R.nd([b, qh * qw, qh * qw], ref));
  });

  it('the fused form (rel-pos folded into the QK product) equals scores + decomposed rel-pos', async () => {
    const qh = 3, qw = 4, c = 5, b = 2, scale = 0.37;
    const q = rand([b, qh * qw, c]), k = rand([b, qh * qw, c]), relH = rand([2 * qh - 1, c]), relW = rand([2 * qw - 1, c]);
    const g = new Graph('relpos_fused');
    const vq = input(g, 'q', q), vk = input(g, 'k', k), rh = input(g, 'rh', relH), rw = input(g, 'rw', relW);
    g.output(relPosAttentionScores(g, vq, vk, scale, rh, rw, [qh, qw], [qh, qw]), 'fused');
    g.output(addDecomposedRelPos(g, g.matmul(g.mul(vq, g.scalar(scale)), g.transpose(vk, [0, 2, 1])), vq, rh, rw, [qh, qw], [qh, qw]), 'plain');
    const o = await run(g, { q: feed(q), k: feed(k), rh: feed(relH), rw: feed(relW) });
    close(o.fused!, R.nd([b, qh * qw, qh * qw], o.plain!.data as Float32Array));
  });

  it('rel-pos attention computed in query chunks equals softmax(scores + rel-pos) · v', async () => {
    const qh = 3, qw = 5, c = 4, b = 2, scale = 0.41;
    const q = rand([b, qh * qw, c]), k = rand([b, qh * qw, c]), v = rand([b, qh * qw, c]), relH = rand([2 * qh - 1, c]), relW = rand([2 * qw - 1, c]);
    const g = new Graph('relpos_chunked');
    const vq = input(g, 'q', q), vk = input(g, 'k', k), vv = input(g, 'v', v), rh = input(g, 'rh', relH), rw = input(g, 'rw', relW);
    for (const n of [1, 4, 15]) g.output(relPosAttention(g, vq, vk, vv, scale, rh, rw, [qh, qw], [qh, qw], n), `chunks_${n}`);
    g.output(addDecomposedRelPos(g, g.matmul(g.mul(vq, g.scalar(scale)), g.transpose(vk, [0, 2, 1])), vq, rh, rw, [qh, qw], [qh, qw]), 'scores');
    const o = await run(g, { q: feed(q), k: feed(k), v: feed(v), rh: feed(relH), rw: feed(relW) });
    // Reference: row softmax of the unfused scores, times v, on the host.
    const n = qh * qw, sc = o.scores!.data as Float32Array, ref = new Float32Array(b * n * c);
    for (let bi = 0; bi < b; bi++) for (let i = 0; i < n; i++) {
      const row = sc.subarray((bi * n + i) * n, (bi * n + i + 1) * n);
      const m = Math.max(...row), e = [...row].map((x) => Math.exp(x - m)), z = e.reduce((a, x) => a + x, 0);
      for (let j = 0; j < n; j++) for (let ci = 0; ci < c; ci++) ref[(bi * n + i) * c + ci]! += (e[j]! / z) * v.data[(bi * n + j) * c + ci]!;
    }
    for (const k of ['chunks_1', 'chunks_4', 'chunks_15']) close(o[k]!, R.nd([b, n, c], ref));
  });
});

describe('engine', () => {
  it('symbolic dims run at any size', async () => {
    const g = new Graph('symbolic');
    const x = g.input('x', 'float32', ['n', 3]);
    g.output(g.reduceSum(x, [1], false), 'sum');
    const s = await engine.load(g);
    for (const n of [1, 4]) {
      const out = await s.run({ x: f32([n, 3], Array.from({ length: 3 * n }, (_, i) => i)) });
      assert.deepEqual([...out.sum!.data], Array.from({ length: n }, (_, i) => 9 * i + 3));
    }
    await s.release();
  });

  it('caches compiled graphs by graph and weight identity', () => {
    const make = (w: number[]): Graph => {
      const g = new Graph('cached');
      const x = g.input('x', 'float32', [2]);
      g.output(g.mul(x, g.constant('float32', [2], w)), 'y');
      return g;
    };
    const first = engine.compile(make([1, 2]));
    const again = engine.compile(make([1, 2]));
    const other = engine.compile(make([1, 3]));
    assert.equal(again.dir, first.dir);
    assert.equal(again.cached, true);
    assert.notEqual(other.dir, first.dir);
    assert.ok(first.dir.startsWith(join(cache.path, 'graphs')));
  });
});
