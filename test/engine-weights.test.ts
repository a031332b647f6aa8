import assert from 'node:assert/strict';
import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { Graph } from '../src/graph/graph.js';
import { Engine } from '../src/graph/session.js';
import { f32 } from '../src/graph/tensor.js';
import { tensorWeight, transposedWeight } from '../src/graph/weights.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { FIXTURES, tempDir } from './helpers.js';

const cache = tempDir('lisa-weights-');
after(() => cache[Symbol.dispose]());

describe('checkpoint weights in graphs', () => {
  it('points fp32 weights at the checkpoint in place and converts bf16 once into the cache', async () => {
    const ckpt = openCheckpoint(join(FIXTURES, 'torch-bin'));
    const tiny = openCheckpoint(join(FIXTURES, 'lisa-tiny', 'checkpoint'));
    try {
      const fcs = ckpt.get('model.text_hidden_fcs.0.0.weight'); // fp32 [8, 8] in a STORED zip member
      const proj = ckpt.get('model.mm_projector.weight'); // bf16 [8, 6]
      const normW = tiny.get('model.norm.weight'); // fp32 [64] in model.safetensors
      const g = new Graph('weights');
      const x = g.input('x', 'float32', [1, 8]);
      g.output(g.matmul(x, tensorWeight(g, fcs)), 'a');
      g.output(g.matmul(x, tensorWeight(g, proj, { dtype: 'float32' })), 'b');
      g.output(g.matmul(g.input('x6', 'float32', [1, 6]), transposedWeight(g, proj)), 'c');
      g.output(g.mul(g.input('n', 'float32', [64]), tensorWeight(g, normW)), 'd');
      const engine = new Engine({ cacheDir: cache.path, threads: 1 });
      const { dir, cached } = engine.compile(g);
      assert.equal(cached, false);
      // Hard links to the two checkpoint files used in place, and to the two converted tensors in the store.
      const files = readdirSync(dir).sort();
      assert.equal(files.filter((f) => f.startsWith('w')).length, 2, files.join(','));
      assert.equal(files.filter((f) => f.startsWith('c-')).length, 2, files.join(','));
      const store = readdirSync(join(cache.path, 'weights')).filter((f) => f.endsWith('.bin')); // each has its .crc32
      assert.deepEqual(
        store.map((f) => statSync(join(cache.path, 'weights', f)).size),
        [192, 192],
        'two converted 8x6 fp32 tensors',
      );
      assert.equal(statSync(join(dir, 'data.bin')).size, 0);
      const s = await engine.load(g);
      const xv = Array.from({ length: 8 }, (_, i) => i - 3);
      const nv = Array.from({ length: 64 }, (_, i) => i);
      const o = await s.run({ x: f32([1, 8], xv), x6: f32([1, 6], [1, 0, 0, 0, 0, 0]), n: f32([64], nv) });
      await s.release();
      const A = fcs.float32(),
        B = proj.float32(),
        N = normW.float32();
      const ref = (W: Float32Array, cols: number): number[] =>
        Array.from({ length: cols }, (_, j) => xv.reduce((s2, v, i) => s2 + v * W[i * cols + j]!, 0));
      const closeTo = (got: ArrayLike<number>, want: number[]): void =>
        want.forEach((w, i) => assert.ok(Math.abs(got[i]! - w) < 1e-5 * (1 + Math.abs(w)), `${i}: ${got[i]} vs ${w}`));
      closeTo(o.a!.data as Float32Array, ref(A, 8));
      closeTo(o.b!.data as Float32Array, ref(B, 6));
      closeTo(
        o.c!.data as Float32Array,
        Array.from({ length: 8 }, (_, j) => B[j * 6]!),
      ); // row 0 of W.T = column 0 of W
      closeTo(
        o.d!.data as Float32Array,
        nv.map((v, i) => v * N[i]!),
      );
      assert.equal(engine.compile(g).cached, true, 'second compile reuses the cache');
      // Another graph using the same converted weight reuses the stored conversion.
      const g2 = new Graph('weights_again');
      const t = tensorWeight(g2, proj, { dtype: 'float32' });
      const src = g2.initializers.find((i) => i.value === t)!.source as { produce: () => Uint8Array };
      let produced = 0;
      const orig = src.produce;
      src.produce = () => {
        produced++;
        return orig();
      };
      g2.output(g2.matmul(g2.input('x', 'float32', [1, 8]), t), 'y');
      assert.equal(engine.compile(g2).cached, false);
      assert.equal(produced, 0, 'no second conversion');
    } finally {
      ckpt.close();
      tiny.close();
    }
  });
});

describe('a failed session build is retried', () => {
  it('the lazy session caches forget a rejected build (it used to stay failed until restart)', async () => {
    const { LisaModel } = await import('../src/models/lisa.js');
    const { FIXTURES, tempDir: td } = await import('./helpers.js');
    const { join: j } = await import('node:path');
    using d = td();
    let failures = 1;
    const ckpt = j(FIXTURES, 'lisa-tiny', 'checkpoint');
    const model = LisaModel.load(ckpt, {
      visionTower: j(ckpt, 'clip-vit-tiny-patch14'),
      cacheDir: d.path,
      threads: 1,
      onWrite: () => {
        if (failures-- > 0) throw new Error('disk full (simulated)');
      },
    });
    try {
      const px = new Float32Array(3 * 224 * 224);
      await assert.rejects(model.runClip(px), /disk full \(simulated\)/);
      const out = await model.runClip(px);
      assert.ok(out.mm_projector_out!.data.length > 0);
    } finally {
      await model.release();
      model.close();
    }
  });
});

describe('converted-weight cache keys', () => {
  it("carry the converting code's version, so a changed conversion is rebuilt, not reused", async () => {
    const { codeVersion } = await import('../src/graph/weights.js');
    const a = (x: number): number => x + 1,
      b = (x: number): number => x + 2;
    assert.notEqual(codeVersion(a), codeVersion(b));
    assert.equal(codeVersion(a), codeVersion(a));
    const g = new Graph('keys');
    const ckpt = openCheckpoint(join(FIXTURES, 'lisa-tiny', 'checkpoint'));
    try {
      const w = transposedWeight(g, ckpt.get('model.mm_projector.weight'));
      const init = g.initializers.find((i) => i.value === w)!;
      assert.equal(init.source.kind, 'computed');
      assert.match((init.source as { key: string }).key, /->float32:T:[0-9a-f]{12}$/);
    } finally {
      ckpt.close();
    }
  });
});
