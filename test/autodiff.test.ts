import assert from 'node:assert/strict';
import { after, describe, it } from 'node:test';
import { backward } from '../src/graph/autodiff.js';
import { Graph } from '../src/graph/graph.js';
import { attr, type Value } from '../src/graph/ir.js';
import { attention } from '../src/graph/nn.js';
import { MS_DOMAIN } from '../src/graph/ops.js';
import { quantizeBlockwise } from '../src/graph/quantize.js';
import { Engine, type EngineSession } from '../src/graph/session.js';
import { hostTensor, type HostTensor } from '../src/graph/tensor.js';
import type { DType } from '../src/io/dtype.js';
import { randn, rng, tempDir } from './helpers.js';

/**
 * Every gradient rule against finite differences of the forward graph, in float64 where onnxruntime has
 * float64 kernels (central differences per element, h = 1e-6) and in float32 otherwise (Erf/Gelu, Conv,
 * RotaryEmbedding: directional central differences along random directions, h = 1e-2). The loss is
 * Σ y·r for a random r, so every output element's gradient is exercised.
 */

const cache = tempDir('lisa-autodiff-');
after(() => cache[Symbol.dispose]());
const engine = new Engine({ cacheDir: cache.path, threads: 1 });

interface InputSpec {
  shape: number[];
  positive?: boolean;
  wantGrad?: boolean;
}
type Build = (g: Graph, xs: Value[]) => Value;

let seed = 1;
function makeData(dtype: DType, spec: InputSpec): Float64Array {
  const r = randn(
    spec.shape.reduce((a, b) => a * b, 1),
    seed++,
  );
  return Float64Array.from(r, (v) => (spec.positive ? 0.5 + Math.abs(v) : v));
}
function tensor(dtype: DType, shape: number[], data: Float64Array): HostTensor {
  return hostTensor(dtype, shape, dtype === 'float64' ? Float64Array.from(data) : Float32Array.from(data));
}

async function check(name: string, specs: InputSpec[], build: Build, dtype: DType = 'float64'): Promise<void> {
  const g = new Graph(`grad_${name.replace(/\W/g, '_')}`);
  const xs = specs.map((s, i) => g.input(`x${i}`, dtype, s.shape));
  const y = build(g, xs);
  const yShape = y.shape as number[];
  const rData = randn(
    yShape.reduce((a, b) => a * b, 1),
    seed++,
  );
  const r = g.constant(dtype, yShape, dtype === 'float64' ? Float64Array.from(rData) : rData);
  const loss = g.reduceSum(
    g.mul(y, r),
    yShape.map((_, i) => i),
    false,
  );
  g.output(loss, 'loss');
  const wrt = xs.filter((_, i) => specs[i]!.wantGrad !== false);
  const grads = backward(g, loss, wrt);
  grads.forEach((gv, i) => {
    assert.ok(gv, `${name}: no gradient for input ${i}`);
    g.output(gv!, `grad_${i}`);
  });
  const s: EngineSession = await engine.load(g);
  try {
    const data = specs.map((sp) => makeData(dtype, sp));
    const feeds = (ds: Float64Array[]): Record<string, HostTensor> =>
      Object.fromEntries(ds.map((d, i) => [`x${i}`, tensor(dtype, specs[i]!.shape, d)]));
    const out = await s.run(feeds(data));
    const lossAt = async (ds: Float64Array[]): Promise<number> => Number((await s.run(feeds(ds))).loss!.data[0]);
    let gi = 0;
    for (let i = 0; i < specs.length; i++) {
      if (specs[i]!.wantGrad === false) continue;
      const analytic = Array.from(out[`grad_${gi++}`]!.data as Float64Array | Float32Array, Number);
      assert.deepEqual(out[`grad_${gi - 1}`]!.shape, specs[i]!.shape, `${name}: gradient ${i} shape`);
      const scale = Math.max(1e-3, ...analytic.map(Math.abs));
      if (dtype === 'float64') {
        const h = 1e-6;
        for (let e = 0; e < data[i]!.length; e++) {
          const plus = data.map((d) => Float64Array.from(d)),
            minus = data.map((d) => Float64Array.from(d));
          plus[i]![e]! += h;
          minus[i]![e]! -= h;
          const fd = ((await lossAt(plus)) - (await lossAt(minus))) / (2 * h);
          const d = Math.abs(fd - analytic[e]!);
          if (d > 1e-6 * scale + 1e-8) assert.fail(`${name}: d/dx${i}[${e}] analytic ${analytic[e]} vs finite difference ${fd}`);
        }
      } else {
        const h = 1e-2,
          rand = rng(seed++);
        for (let t = 0; t < 4; t++) {
          const dir = Float64Array.from(data[i]!, () => rand() - 0.5);
          const plus = data.map((d) => Float64Array.from(d)),
            minus = data.map((d) => Float64Array.from(d));
          dir.forEach((v, e) => {
            plus[i]![e]! += h * v;
            minus[i]![e]! -= h * v;
          });
          const fd = ((await lossAt(plus)) - (await lossAt(minus))) / (2 * h);
          const an = analytic.reduce((acc, a, e) => acc + a * dir[e]!, 0);
          const norm = Math.sqrt(analytic.reduce((acc, a) => acc + a * a, 0) * dir.reduce((acc, v) => acc + v * v, 0));
          if (Math.abs(fd - an) > 2e-3 * Math.max(norm, 1e-3))
            assert.fail(`${name}: directional derivative of x${i}: analytic ${an} vs finite difference ${fd}`);
        }
      }
    }
  } finally {
    await s.release();
  }
}

describe('gradient rules vs finite differences (float64)', () => {
  it('elementwise with broadcasting', async () => {
    await check('add', [{ shape: [2, 3, 4] }, { shape: [3, 1] }], (g, [a, b]) => g.add(a!, b!));
    await check('sub', [{ shape: [4] }, { shape: [2, 3, 4] }], (g, [a, b]) => g.sub(a!, b!));
    await check('mul', [{ shape: [2, 1, 4] }, { shape: [3, 1] }], (g, [a, b]) => g.mul(a!, b!));
    await check('div', [{ shape: [2, 3] }, { shape: [3], positive: true }], (g, [a, b]) => g.div(a!, b!));
    await check('pow', [{ shape: [5], positive: true }], (g, [a]) => g.pow(a!, g.scalar(2.5, 'float64')));
    await check('max-min', [{ shape: [2, 4] }, { shape: [4] }], (g, [a, b]) =>
      g.add(g.node('Max', [a!, b!])[0]!, g.mul(g.node('Min', [a!, b!])[0]!, g.scalar(3, 'float64'))),
    );
    await check('where', [{ shape: [3, 4] }, { shape: [4] }], (g, [a, b]) => g.where(g.greater(a!, g.scalar(0, 'float64')), a!, b!));
  });
  it('unary functions', async () => {
    for (const [name, positive, f] of [
      ['neg', false, (g: Graph, x: Value) => g.neg(x)],
      ['relu', false, (g: Graph, x: Value) => g.relu(x)],
      ['sigmoid', false, (g: Graph, x: Value) => g.sigmoid(x)],
      ['tanh', false, (g: Graph, x: Value) => g.tanh(x)],
      ['exp', false, (g: Graph, x: Value) => g.exp(x)],
      ['log', true, (g: Graph, x: Value) => g.log(x)],
      ['sqrt', true, (g: Graph, x: Value) => g.sqrt(x)],
      ['reciprocal', true, (g: Graph, x: Value) => g.node('Reciprocal', [x])[0]!],
      ['abs', false, (g: Graph, x: Value) => g.abs(x)],
      ['cos', false, (g: Graph, x: Value) => g.cos(x)],
      ['sin', false, (g: Graph, x: Value) => g.sin(x)],
      ['identity', false, (g: Graph, x: Value) => g.identity(x)],
    ] as const)
      await check(name, [{ shape: [3, 5], positive }], (g, [x]) => f(g, x!));
  });
  it('softmax and log-softmax on several axes', async () => {
    await check('softmax-last', [{ shape: [2, 3, 5] }], (g, [x]) => g.softmax(x!, -1));
    await check('softmax-mid', [{ shape: [2, 3, 5] }], (g, [x]) => g.softmax(x!, 1));
    await check('logsoftmax', [{ shape: [4, 6] }], (g, [x]) => g.logSoftmax(x!, -1));
  });
  it('matmul: 2-D, batched, broadcast batch, weight-only gradient', async () => {
    await check('matmul-2d', [{ shape: [3, 4] }, { shape: [4, 2] }], (g, [a, b]) => g.matmul(a!, b!));
    await check('matmul-linear', [{ shape: [2, 3, 4] }, { shape: [4, 5] }], (g, [a, b]) => g.matmul(a!, b!));
    await check('matmul-bcast', [{ shape: [2, 1, 3, 4] }, { shape: [3, 4, 2] }], (g, [a, b]) => g.matmul(a!, b!));
    await check('matmul-frozen-a', [{ shape: [2, 3, 4], wantGrad: false }, { shape: [4, 5] }], (g, [a, b]) => g.matmul(a!, b!));
  });
  it('shape ops', async () => {
    await check('reshape-transpose', [{ shape: [2, 3, 4] }], (g, [x]) => g.transpose(g.reshape(x!, [6, 2, 2]), [2, 0, 1]));
    await check('unsqueeze-squeeze-expand', [{ shape: [3, 1] }], (g, [x]) => g.expand(g.unsqueeze(g.squeeze(x!, [1]), [0]), [2, 3]));
    await check('slice', [{ shape: [4, 6] }], (g, [x]) => g.slice(x!, [1, -4], [3, 5], [0, 1]));
    await check('concat', [{ shape: [2, 3] }, { shape: [2, 1] }, { shape: [2, 2] }], (g, [a, b, c]) => g.concat([a!, b!, c!], 1));
    await check('gather-rows-repeated', [{ shape: [5, 3] }], (g, [x]) => g.gather(x!, g.constant('int64', [2, 3], [4, 0, 4, 1, 1, 1]), 0));
    await check('gather-axis1', [{ shape: [2, 5, 3] }], (g, [x]) => g.gather(x!, g.constant('int64', [4], [3, 3, 0, 4]), 1));
    await check('gather-last', [{ shape: [2, 3, 5] }], (g, [x]) => g.gather(x!, g.constant('int64', [3], [1, 4, 1]), 2));
    await check('pad', [{ shape: [2, 3] }], (g, [x]) => g.mul(g.pad(x!, [0, 1, 1, 2]), g.pad(x!, [0, 1, 1, 2])));
  });
  it('reductions', async () => {
    await check('reducesum', [{ shape: [2, 3, 4] }], (g, [x]) => g.reduceSum(x!, [0, 2], false));
    await check('reducemean', [{ shape: [2, 3, 4] }], (g, [x]) => g.reduceMean(x!, [-1], true));
    await check('reducemax', [{ shape: [3, 4] }], (g, [x]) => g.reduceMax(x!, [1], false));
  });
  it('LayerNormalization and RMSNorm (input, scale and bias)', async () => {
    await check('layernorm', [{ shape: [2, 3, 6] }, { shape: [6] }, { shape: [6] }], (g, [x, s, b]) => g.layerNorm(x!, s!, b!, 1e-5));
    await check('rmsnorm', [{ shape: [2, 3, 6] }, { shape: [6] }], (g, [x, s]) => g.rmsNorm(x!, s!, 1e-6));
  });
});

describe('gradient rules vs finite differences (float32 ops)', () => {
  it('Erf, Gelu, QuickGelu', async () => {
    await check('erf', [{ shape: [3, 4] }], (g, [x]) => g.node('Erf', [x!])[0]!, 'float32');
    await check('gelu', [{ shape: [3, 4] }], (g, [x]) => g.gelu(x!), 'float32');
    await check('quickgelu', [{ shape: [3, 4] }], (g, [x]) => g.quickGelu(x!), 'float32');
  });
  it('a float32 → float64 → float32 cast passes the gradient back', async () => {
    await check('cast', [{ shape: [3, 2] }], (g, [x]) => g.cast(g.mul(g.cast(x!, 'float64'), g.cast(x!, 'float64')), 'float32'), 'float32');
  });
  it('RotaryEmbedding (adjoint = rotation by −θ)', async () => {
    const cos = Float32Array.from({ length: 8 * 2 }, (_, i) => Math.cos(0.3 * i));
    const sin = Float32Array.from({ length: 8 * 2 }, (_, i) => Math.sin(0.3 * i));
    await check(
      'rotary',
      [{ shape: [2, 3, 8] }],
      (g, [x]) =>
        g.node(
          'RotaryEmbedding',
          [x!, g.constant('int64', [2, 3], [0, 1, 2, 5, 6, 7]), g.constant('float32', [8, 2], cos), g.constant('float32', [8, 2], sin)],
          { interleaved: attr.i(0), num_heads: attr.i(2) },
          MS_DOMAIN,
        )[0]!,
      'float32',
    );
  });
  it('ConvTranspose, kernel = stride 2 (input, weight, bias)', async () => {
    await check(
      'convtranspose',
      [{ shape: [2, 3, 2, 3] }, { shape: [3, 4, 2, 2] }, { shape: [4] }],
      (g, [x, w, b]) => g.convTranspose(x!, w!, b!, { strides: [2, 2] }),
      'float32',
    );
  });
  it('MatMulNBits (frozen int4 and int8 bases): the input gradient through the dequantised weight', async () => {
    for (const spec of [
      { bits: 4, blockSize: 32, accuracyLevel: 4 },
      { bits: 8, blockSize: 16, accuracyLevel: 4 },
      { bits: 4, blockSize: 32, accuracyLevel: 4, zeroPoints: true, method: 'search' }, // 3 blocks: zero points pad a byte
      { bits: 8, blockSize: 16, accuracyLevel: 4, zeroPoints: true, method: 'minmax' },
    ] as const) {
      const n = 6,
        kk = spec.bits === 4 ? 96 : 40;
      const { codes, scales, zeros } = quantizeBlockwise(randn(n * kk, seed++), n, kk, spec);
      const blocks = Math.ceil(kk / spec.blockSize);
      await check(
        `matmulnbits-${spec.bits}${zeros ? '-zp' : ''}`,
        [{ shape: [2, 3, kk] }],
        (g, [x]) =>
          g.node(
            'MatMulNBits',
            [
              x!,
              g.constant('uint8', [n, blocks, (spec.blockSize * spec.bits) / 8], codes),
              g.constant('float32', [n * blocks], scales),
              ...(zeros ? [g.constant('uint8', [zeros.length], zeros)] : []),
            ],
            {
              K: attr.i(kk),
              N: attr.i(n),
              bits: attr.i(spec.bits),
              block_size: attr.i(spec.blockSize),
              accuracy_level: attr.i(0),
            },
            MS_DOMAIN,
          )[0]!,
        'float32',
      );
    }
  });
  it('attention with a causal mask and a padding bias', async () => {
    const pad = Float32Array.from([0, 0, 0, -3.4028234663852886e38, 0, 0, 0, 0]);
    await check(
      'attention',
      [{ shape: [2, 2, 4, 3] }, { shape: [2, 2, 4, 3] }, { shape: [2, 2, 4, 3] }],
      (g, [q, k, v]) => attention(g, q!, k!, v!, { causal: true, bias: g.constant('float32', [2, 1, 1, 4], pad) }),
      'float32',
    );
  });
});

describe('backward walker', () => {
  it('sums the gradients of a value used several times, and returns null where the loss does not depend on an input', async () => {
    const g = new Graph('walker');
    const x = g.input('x', 'float64', [3]),
      unused = g.input('u', 'float64', [3]);
    const y = g.mul(g.add(x, x), x); // 2x² → 4x
    const loss = g.reduceSum(y, [0], false);
    g.output(g.identity(unused), 'u_out');
    const [gx, gu] = backward(g, loss, [x, unused]);
    assert.equal(gu, null);
    g.output(gx!, 'gx');
    const s = await engine.load(g);
    const out = await s.run({
      x: hostTensor('float64', [3], Float64Array.from([1, -2, 0.5])),
      u: hostTensor('float64', [3], new Float64Array(3)),
    });
    assert.deepEqual(Array.from(out.gx!.data as Float64Array), [4, -8, 2]);
    await s.release();
  });
  it('names an op without a rule', () => {
    const g = new Graph('norule');
    const x = g.input('x', 'float32', [1, 1, 4, 4]);
    const y = g.conv(x, g.constant('float32', [1, 1, 2, 2], [1, 2, 3, 4]), null);
    const loss = g.reduceSum(y, [0, 1, 2, 3], false);
    assert.throws(() => backward(g, loss, [x]), /ai\.onnx\.Conv has no gradient rule/);
  });
});
