/**
 * A decode step's attention over the KV cache alone, for the 7B's 32 layers (32 heads of 128) at 320 cached positions:
 * cachedAttention (graph/nn.ts: seq-major cache views of exactly the cached rows, one softmax over [past | new])
 * beside the layout it replaced in the same run — head-major buffers read at their capacity (448 rows: 320 grown by
 * KvCache's headroom) with a mask, and a two-part softmax (max, exp and sums of past and new kept apart). No checkpoint
 * needed: `npm run bench -- --only decode-attention`.
 */
import { Graph } from '../src/graph/graph.js';
import type { Value } from '../src/graph/ir.js';
import { cacheMask, cachedAttention, causalMask, F32_MIN, mergeHeads, splitHeads } from '../src/graph/nn.js';
import { Engine } from '../src/graph/session.js';
import { f32, type HostTensor } from '../src/graph/tensor.js';
import type { Row } from './row.js';

const LAYERS = 32,
  HEADS = 32,
  HD = 128,
  CACHED = 320,
  CAPACITY = 448;

/** The baseline: the cache attention lisa-ts ran before (head-major [1, H, C, D] buffers, a [1, C] mask). */
function headMajorAttention(g: Graph, q: Value, kNew: Value, vNew: Value, pastK: Value, pastV: Value, pastMask: Value): Value {
  const kT = (k: Value): Value => g.transpose(k, [0, 1, 3, 2]);
  const root = g.scalar(Math.sqrt(HD));
  const sPast = g.add(g.div(g.matmul(q, kT(pastK)), root), pastMask);
  const sNew = g.add(g.div(g.matmul(q, kT(kNew)), root), causalMask(g, kNew, kNew));
  const mPast = g.reduceMax(sPast, [-1]),
    mNew = g.reduceMax(sNew, [-1]);
  const m = g.where(g.greater(mPast, mNew), mPast, mNew);
  const ePast = g.exp(g.sub(sPast, m)),
    eNew = g.exp(g.sub(sNew, m));
  const z = g.add(g.reduceSum(ePast, [-1]), g.reduceSum(eNew, [-1]));
  return g.div(g.add(g.matmul(ePast, pastV), g.matmul(eNew, vNew)), z);
}

function build(layout: 'seq-major' | 'head-major'): Graph {
  const g = new Graph(`decode_attention_${layout}`);
  const q = g.input('q', 'float32', [1, 'seq', HEADS * HD]),
    k = g.input('k', 'float32', [1, 'seq', HEADS * HD]),
    v = g.input('v', 'float32', [1, 'seq', HEADS * HD]);
  const rows = layout === 'seq-major' ? ['past', HEADS, HD] : [1, HEADS, 'capacity', HD];
  const pastMask = g.input('past_mask', 'float32', [1, layout === 'seq-major' ? 'past' : 'capacity']);
  const mask = cacheMask(g, pastMask, q);
  let x = q; // each layer's output is the next one's query, so the layers run in sequence as in the model
  for (let i = 0; i < LAYERS; i++) {
    const pk = g.input(`past_key_${i}`, 'float32', rows),
      pv = g.input(`past_value_${i}`, 'float32', rows);
    x =
      layout === 'seq-major'
        ? cachedAttention(g, x, k, v, pk, pv, mask)
        : mergeHeads(
            g,
            headMajorAttention(g, splitHeads(g, x, HEADS, HD), splitHeads(g, k, HEADS, HD), splitHeads(g, v, HEADS, HD), pk, pv, pastMask),
            HEADS,
            HD,
          );
  }
  g.output(x, 'out');
  return g;
}

async function time(engine: Engine, layout: 'seq-major' | 'head-major'): Promise<number> {
  const s = await engine.load(build(layout), { memoryArena: true });
  const rows = layout === 'seq-major' ? CACHED : CAPACITY;
  const vec = (seed: number): HostTensor =>
    f32(
      [1, 1, HEADS * HD],
      Float32Array.from({ length: HEADS * HD }, (_, i) => 0.1 * Math.sin(i * 1.3 + seed)),
    );
  const mask = new Float32Array(rows).fill(F32_MIN).fill(0, 0, CACHED);
  const feeds: Record<string, HostTensor> = { q: vec(1), k: vec(2), v: vec(3), past_mask: f32([1, rows], mask) };
  for (let i = 0; i < LAYERS; i++) {
    const shape = layout === 'seq-major' ? [rows, HEADS, HD] : [1, HEADS, rows, HD];
    const buf = (seed: number): Float32Array => Float32Array.from({ length: rows * HEADS * HD }, (_, j) => Math.sin(j * 0.7 + seed));
    feeds[`past_key_${i}`] = f32(shape, buf(i));
    feeds[`past_value_${i}`] = f32(shape, buf(i + 100));
  }
  await s.run(feeds);
  const ts: number[] = [];
  for (let r = 0; r < 15; r++) {
    const t = performance.now();
    await s.run(feeds);
    ts.push((performance.now() - t) / 1000);
  }
  await s.release();
  return ts.sort((a, b) => a - b)[7]!; // median
}

export async function decodeAttentionBench(threads: number): Promise<Row[]> {
  const engine = new Engine({ threads });
  const base = await time(engine, 'head-major');
  const ours = await time(engine, 'seq-major');
  const bytes = 2 * LAYERS * CACHED * HEADS * HD * 4; // the cached keys and values a step must read
  return [
    {
      name: 'decode attention, 7B',
      seconds: ours,
      baseline: `head-major cache at capacity ${CAPACITY} (before)`,
      baseline_seconds: base,
      ratio: base / ours,
      unit: 'GB/s',
      value: bytes / ours / 1e9,
      limit: null,
      note: `${LAYERS} layers, ${CACHED} cached positions, one step`,
    },
  ];
}
