import type { Graph } from './graph.js';
import { attr, type Attrs, type Dim, type Node, type Shape, type Value } from './ir.js';
import { defineGrad, MS_DOMAIN, type GradRule } from './ops.js';
import { zeroPointRowBytes } from './quantize.js';

/**
 * Reverse-mode rules, one per op, registered into the op schemas (ops.ts). Each emits ordinary ONNX ops
 * (onnxruntime has no gradient kernels) and follows PyTorch's autograd formulas (derivatives.yaml), so a
 * training graph is its forward plus these nodes. Fused ops get a closed-form rule where one exists
 * (LayerNormalization, RMSNorm, Softmax, Gelu, RotaryEmbedding); every rule is checked against finite
 * differences in test/autodiff.test.ts. Rules assume static shapes along the axes they sum or slice.
 */

const intAttr = (a: Attrs, name: string, dflt: number): number => {
  const x = a[name];
  return x && x.type === 'int' ? x.value : dflt;
};
const intsAttr = (a: Attrs, name: string): readonly number[] | null => {
  const x = a[name];
  return x && x.type === 'ints' ? x.value : null;
};
const strAttr = (a: Attrs, name: string, dflt: string): string => {
  const x = a[name];
  return x && x.type === 'string' ? x.value : dflt;
};
const floatAttr = (a: Attrs, name: string, dflt: number): number => {
  const x = a[name];
  return x && x.type === 'float' ? x.value : dflt;
};
const inp = (n: Node, i: number): Value => {
  const v = n.inputs[i];
  if (!v) throw new Error(`${n.op}: input ${i} is missing`);
  return v;
};
const norm = (axis: number, rank: number): number => (axis < 0 ? axis + rank : axis);
const isNum = (d: Dim | Value): d is number => typeof d === 'number';

/** A scalar constant in `like`'s dtype (rules run in float32 or float64 graphs alike). */
function k(g: Graph, value: number, like: Value): Value {
  return g.scalar(value, like.dtype);
}

/** Sums `grad` (the broadcast shape) back down to `shape`, as autograd's sum_to_size. */
export function sumToShape(g: Graph, grad: Value, shape: Shape): Value {
  const gs = grad.shape,
    lead = gs.length - shape.length;
  const axes: number[] = [];
  for (let i = 0; i < gs.length; i++) {
    if (i < lead) {
      axes.push(i);
      continue;
    }
    const want = shape[i - lead]!,
      have = gs[i]!;
    if (want === 1 && have !== 1) axes.push(i);
  }
  let r = axes.length ? g.reduceSum(grad, axes, true) : grad;
  if (lead > 0 || axes.length) r = reshapeTo(g, r, shape);
  return r;
}

/** Reshape to a shape that may hold symbolic dims (those are copied from the source at the same index). */
function reshapeTo(g: Graph, x: Value, shape: Shape): Value {
  if (shape.every(isNum)) return sameShape(x, shape) ? x : g.reshape(x, shape);
  throw new Error(`gradient: cannot reshape to a shape with symbolic dims ${JSON.stringify(shape)}`);
}
function sameShape(x: Value, shape: Shape): boolean {
  return x.shape.length === shape.length && x.shape.every((d, i) => d === shape[i]);
}
/** Reshape `gy` back to `x`'s shape, at run time when it is symbolic. */
function reshapeLike(g: Graph, gy: Value, x: Value): Value {
  if (x.shape.every(isNum)) return sameShape(gy, x.shape) ? gy : g.reshape(gy, x.shape as number[]);
  return g.node('Reshape', [gy, g.shapeOf(x)], {}, '', undefined, [x.shape])[0]!;
}
function zerosLike(g: Graph, x: Value): Value {
  return g.node('Expand', [k(g, 0, x), g.shapeOf(x)], {}, '', undefined, [x.shape])[0]!;
}
function transposeLast2(g: Graph, x: Value): Value {
  const r = x.shape.length;
  return g.transpose(x, [...Array.from({ length: r - 2 }, (_, i) => i), r - 1, r - 2]);
}

const rules: [string, string, GradRule][] = [];
const rule = (op: string, r: GradRule, domain = ''): void => {
  rules.push([domain, op, r]);
};

// ---- elementwise ---------------------------------------------------------------------------------------

rule('Add', (g, n, [gy], w) => [w[0] ? sumToShape(g, gy!, inp(n, 0).shape) : null, w[1] ? sumToShape(g, gy!, inp(n, 1).shape) : null]);
rule('Sub', (g, n, [gy], w) => [
  w[0] ? sumToShape(g, gy!, inp(n, 0).shape) : null,
  w[1] ? sumToShape(g, g.neg(gy!), inp(n, 1).shape) : null,
]);
rule('Mul', (g, n, [gy], w) => {
  const a = inp(n, 0),
    b = inp(n, 1);
  return [w[0] ? sumToShape(g, g.mul(gy!, b), a.shape) : null, w[1] ? sumToShape(g, g.mul(gy!, a), b.shape) : null];
});
rule('Div', (g, n, [gy], w) => {
  const a = inp(n, 0),
    b = inp(n, 1),
    y = n.outputs[0]!;
  return [w[0] ? sumToShape(g, g.div(gy!, b), a.shape) : null, w[1] ? sumToShape(g, g.neg(g.div(g.mul(gy!, y), b)), b.shape) : null];
});
rule('Pow', (g, n, [gy], w) => {
  const a = inp(n, 0),
    b = inp(n, 1);
  if (w[1]) throw new Error('Pow: no gradient for the exponent');
  return [sumToShape(g, g.mul(gy!, g.mul(b, g.pow(a, g.sub(b, k(g, 1, b))))), a.shape), null];
});
for (const [op, cmp] of [
  ['Max', 'GreaterOrEqual'],
  ['Min', 'LessOrEqual'],
] as const) {
  rule(op, (g, n, [gy], w) => {
    const a = inp(n, 0),
      b = inp(n, 1);
    const pickA = g.node(cmp, [a, b])[0]!; // ties go to the first input
    const zero = k(g, 0, gy!);
    return [
      w[0] ? sumToShape(g, g.where(pickA, gy!, zero), a.shape) : null,
      w[1] ? sumToShape(g, g.where(pickA, zero, gy!), b.shape) : null,
    ];
  });
}
rule('Where', (g, n, [gy], w) => {
  const c = inp(n, 0),
    a = inp(n, 1),
    b = inp(n, 2),
    zero = k(g, 0, gy!);
  return [null, w[1] ? sumToShape(g, g.where(c, gy!, zero), a.shape) : null, w[2] ? sumToShape(g, g.where(c, zero, gy!), b.shape) : null];
});
rule('Neg', (g, _n, [gy]) => [g.neg(gy!)]);
rule('Identity', (_g, _n, [gy]) => [gy!]);
rule('Relu', (g, n, [gy]) => [g.where(g.greater(inp(n, 0), k(g, 0, gy!)), gy!, k(g, 0, gy!))]);
rule('Sigmoid', (g, n, [gy]) => {
  const y = n.outputs[0]!;
  return [g.mul(gy!, g.mul(y, g.sub(k(g, 1, y), y)))];
});
rule('Tanh', (g, n, [gy]) => {
  const y = n.outputs[0]!;
  return [g.mul(gy!, g.sub(k(g, 1, y), g.mul(y, y)))];
});
rule('Exp', (g, n, [gy]) => [g.mul(gy!, n.outputs[0]!)]);
rule('Log', (g, n, [gy]) => [g.div(gy!, inp(n, 0))]);
rule('Sqrt', (g, n, [gy]) => [g.div(g.mul(gy!, k(g, 0.5, gy!)), n.outputs[0]!)]);
rule('Reciprocal', (g, n, [gy]) => {
  const y = n.outputs[0]!;
  return [g.neg(g.mul(gy!, g.mul(y, y)))];
});
rule('Abs', (g, n, [gy]) => [g.mul(gy!, g.node('Sign', [inp(n, 0)])[0]!)]);
rule('Cos', (g, n, [gy]) => [g.neg(g.mul(gy!, g.sin(inp(n, 0))))]);
rule('Sin', (g, n, [gy]) => [g.mul(gy!, g.cos(inp(n, 0)))]);
rule('Erf', (g, n, [gy]) => {
  const x = inp(n, 0);
  return [g.mul(gy!, g.mul(k(g, 2 / Math.sqrt(Math.PI), x), g.exp(g.neg(g.mul(x, x)))))];
});
// d/dx x·Φ(x) = Φ(x) + x·φ(x) (exact, erf form: torch's gelu_backward with approximate='none').
rule('Gelu', (g, n, [gy]) => {
  const x = inp(n, 0);
  if (strAttr(n.attrs, 'approximate', 'none') !== 'none') throw new Error('Gelu: only the exact (erf) form has a gradient rule');
  const cdf = g.mul(k(g, 0.5, x), g.add(k(g, 1, x), g.node('Erf', [g.mul(x, k(g, Math.SQRT1_2, x))])[0]!));
  const pdf = g.mul(k(g, 1 / Math.sqrt(2 * Math.PI), x), g.exp(g.mul(g.mul(x, x), k(g, -0.5, x))));
  return [g.mul(gy!, g.add(cdf, g.mul(x, pdf)))];
});
// y = x·σ(αx): dy/dx = σ(αx)·(1 + αx·(1 − σ(αx))).
rule(
  'QuickGelu',
  (g, n, [gy]) => {
    const x = inp(n, 0),
      alpha = floatAttr(n.attrs, 'alpha', 1.702);
    const ax = g.mul(x, k(g, alpha, x)),
      s = g.sigmoid(ax);
    return [g.mul(gy!, g.mul(s, g.add(k(g, 1, x), g.mul(ax, g.sub(k(g, 1, x), s)))))];
  },
  MS_DOMAIN,
);
rule('Cast', (g, n, [gy]) => {
  const x = inp(n, 0);
  return [
    x.dtype === 'float32' || x.dtype === 'float64' || x.dtype === 'float16' ? (gy!.dtype === x.dtype ? gy! : g.cast(gy!, x.dtype)) : null,
  ];
});

// ---- softmax -------------------------------------------------------------------------------------------

rule('Softmax', (g, n, [gy]) => {
  const y = n.outputs[0]!,
    axis = intAttr(n.attrs, 'axis', -1);
  return [g.mul(y, g.sub(gy!, g.reduceSum(g.mul(gy!, y), [axis], true)))];
});
rule('LogSoftmax', (g, n, [gy]) => {
  const y = n.outputs[0]!,
    axis = intAttr(n.attrs, 'axis', -1);
  return [g.sub(gy!, g.mul(g.exp(y), g.reduceSum(gy!, [axis], true)))];
});

// ---- linear algebra ------------------------------------------------------------------------------------

rule('MatMul', (g, n, [gy], w) => {
  const a = inp(n, 0),
    b = inp(n, 1);
  let ga: Value | null = null,
    gb: Value | null = null;
  if (w[0]) ga = sumToShape(g, g.matmul(gy!, transposeLast2(g, b)), a.shape);
  if (w[1]) {
    if (b.shape.length === 2 && a.shape.length > 2) {
      // x [.., M, K] @ W [K, N]: dW = x_flat^T @ gy_flat, one GEMM instead of a batched product then a sum.
      const kk = a.shape[a.shape.length - 1] as number,
        nn = b.shape[1] as number;
      gb = g.matmul(g.transpose(g.reshape(a, [-1, kk]), [1, 0]), g.reshape(gy!, [-1, nn]));
    } else gb = sumToShape(g, g.matmul(transposeLast2(g, a), gy!), b.shape);
  }
  return [ga, gb];
});

/**
 * MatMulNBits (Y = A·Wᵀ, W block-quantised [N, K]) as a frozen base: only dA = dY·W, with W dequantised
 * in the graph from the packed codes, scales and zero points: (codes − zero) · scale, zero 2^(bits−1) by default.
 * The fp32 copy exists one layer at a time while the backward runs, never as a second resident copy of the model.
 */
rule(
  'MatMulNBits',
  (g, n, [gy], w) => {
    if (w[1] || w[2]) throw new Error('MatMulNBits: the quantised weight is frozen (no gradient for codes or scales)');
    const codes = inp(n, 1),
      scales = inp(n, 2);
    const kk = intAttr(n.attrs, 'K', 0),
      nn = intAttr(n.attrs, 'N', 0),
      bits = intAttr(n.attrs, 'bits', 4),
      bs = intAttr(n.attrs, 'block_size', 32);
    const blocks = Math.ceil(kk / bs);
    // The codes and scales are constants, so onnxruntime would fold this whole dequantisation at session creation:
    // every layer's fp32 weight at once (27 GB at 7B). OR-ing in a zero computed from gy's values (x > x is false
    // for every x, NaN included; a shape would be folded too) keeps it lazy: one layer's weight at a time.
    const first = g.slice(g.reshape(gy!, [-1]), [0], [1], [0]);
    const live = g.cast(g.greater(first, first), 'uint8');
    const packed = g.node('BitwiseOr', [codes, live])[0]!;
    // Two 4-bit codes per byte, low nibble first (codes along K, zero points along the blocks).
    const unpack = (p: Value): Value => {
      if (bits === 8) return p;
      if (bits !== 4) throw new Error(`MatMulNBits: gradient for ${bits}-bit codes is not written`);
      const r = p.shape.length;
      const lo = g.node('BitwiseAnd', [p, g.constant('uint8', [], [15])])[0]!;
      const hi = g.node('BitShift', [p, g.constant('uint8', [], [4])], { direction: attr.s('RIGHT') })[0]!;
      return g.concat([g.unsqueeze(lo, [r]), g.unsqueeze(hi, [r])], r);
    };
    const q = unpack(packed);
    let zero: Value = k(g, 2 ** (bits - 1), gy!);
    if (n.inputs[3]) {
      const z = g.reshape(unpack(g.reshape(inp(n, 3), [nn, zeroPointRowBytes(blocks, bits)])), [nn, -1]);
      zero = g.reshape(g.cast(g.slice(z, [0], [blocks], [1]), gy!.dtype), [nn, blocks, 1]);
    }
    const centred = g.sub(g.cast(g.reshape(q, [nn, blocks, bs]), gy!.dtype), zero);
    let wt = g.reshape(g.mul(centred, g.reshape(scales, [nn, blocks, 1])), [nn, blocks * bs]);
    if (blocks * bs !== kk) wt = g.slice(wt, [0], [kk], [1]);
    return [g.matmul(gy!, wt), null, null];
  },
  MS_DOMAIN,
);

// ---- shape manipulation --------------------------------------------------------------------------------

for (const op of ['Reshape', 'Unsqueeze', 'Squeeze']) rule(op, (g, n, [gy]) => [reshapeLike(g, gy!, inp(n, 0))]);
rule('Transpose', (g, n, [gy]) => {
  const rank = inp(n, 0).shape.length;
  const perm = intsAttr(n.attrs, 'perm') ?? Array.from({ length: rank }, (_, i) => rank - 1 - i);
  const inv = new Array<number>(rank);
  perm.forEach((p, i) => {
    inv[p] = i;
  });
  return [g.transpose(gy!, inv)];
});
rule('Expand', (g, n, [gy]) => [sumToShape(g, gy!, inp(n, 0).shape)]);
rule('Slice', (g, n, [gy]) => {
  const x = inp(n, 0),
    rank = x.shape.length;
  const ints = (i: number): number[] => {
    const v = n.inputs[i];
    const c = v ? g.constIntsOf(v) : null;
    if (!c) throw new Error('Slice: gradient needs constant starts/ends/axes');
    return c;
  };
  const starts = ints(1),
    ends = ints(2);
  const axes = n.inputs[3] ? ints(3) : starts.map((_, i) => i);
  const steps = n.inputs[4] ? ints(4) : starts.map(() => 1);
  // Pad the gradient back with zeros: `start` before and `dim − end` after each sliced axis. A symbolic dim
  // gets its "after" amount at run time (Pad takes its pads as a tensor).
  const before = new Array<number>(rank).fill(0);
  const after: (number | Value)[] = new Array<number | Value>(rank).fill(0);
  axes.forEach((ax, i) => {
    const a = norm(ax, rank),
      d = x.shape[a]!;
    if (steps[i] !== 1) throw new Error('Slice: gradient only for step 1');
    let st = starts[i]!,
      e = ends[i]!;
    if (isNum(d)) {
      if (st < 0) st += d;
      if (e < 0) e += d;
      st = Math.min(Math.max(st, 0), d);
      e = Math.min(Math.max(e, st), d);
      before[a] = st;
      after[a] = d - e;
      return;
    }
    if (st < 0 || e < 0) throw new Error('Slice: gradient needs non-negative starts/ends along a symbolic axis');
    const dim = g.dimOf(x, a);
    before[a] = st;
    after[a] = g.sub(dim, g.node('Min', [g.ints([e]), dim])[0]!);
  });
  if (after.every(isNum)) {
    const pads = [...before, ...(after as number[])];
    return [pads.some((p) => p !== 0) ? g.pad(gy!, pads) : gy!, null, null, null, null];
  }
  const padsT = g.concat([g.ints(before), ...after.map((v) => (isNum(v) ? g.ints([v]) : v))], 0);
  return [g.node('Pad', [gy!, padsT, k(g, 0, gy!)], {}, '', undefined, [x.shape])[0]!, null, null, null, null];
});
rule('Pad', (g, n, [gy]) => {
  const x = inp(n, 0),
    rank = x.shape.length;
  const pads = g.constIntsOf(inp(n, 1));
  if (!pads || !x.shape.every(isNum) || strAttr(n.attrs, 'mode', 'constant') !== 'constant')
    throw new Error('Pad: gradient needs constant pads, static shapes and constant mode');
  const axes = Array.from({ length: rank }, (_, i) => i);
  return [
    g.slice(
      gy!,
      pads.slice(0, rank),
      axes.map((a) => pads[a]! + (x.shape[a] as number)),
      axes,
    ),
    null,
    null,
  ];
});
rule('Concat', (g, n, [gy], w) => {
  const rank = inp(n, 0).shape.length,
    axis = norm(intAttr(n.attrs, 'axis', 0), rank);
  const sizes = n.inputs.map((v) => v!.shape[axis]!);
  let parts: Value[];
  if (n.inputs.length === 1) parts = [gy!];
  else if (sizes.every(isNum)) parts = g.node('Split', [gy!, g.ints(sizes)], { axis: attr.i(axis) });
  else {
    // Sizes known only at run time: Split takes them as a tensor.
    const splitSizes = g.concat(
      n.inputs.map((v) => g.dimOf(v!, axis)),
      0,
    );
    parts = g.node(
      'Split',
      [gy!, splitSizes],
      { axis: attr.i(axis) },
      '',
      n.inputs.map((_, i) => `${gy!.name}_split${i}`),
      n.inputs.map((v) => v!.shape),
    );
  }
  return parts.map((p, i) => (w[i] ? p : null));
});
/**
 * Gather's gradient scatters the output gradient back onto the gathered rows, adding where an index repeats
 * (an embedding table, the bilinear resize's neighbours): ScatterND with reduction "add" into zeros, along
 * axis 0 after moving `axis` to the front.
 */
rule('Gather', (g, n, [gy], w) => {
  if (!w[0]) return [null, null];
  const x = inp(n, 0),
    idx = inp(n, 1),
    rank = x.shape.length,
    axis = norm(intAttr(n.attrs, 'axis', 0), rank);
  const trailing = x.shape.slice(axis + 1);
  if (!trailing.every(isNum)) throw new Error('Gather: gradient needs static trailing dims');
  // gy: x[:axis] + idx.shape + x[axis+1:] → x[:axis] + [K] + x[axis+1:]
  const flatG = g.reshape(gy!, [...x.shape.slice(0, axis).map(() => 0), -1, ...(trailing as number[])]);
  const toFront = [axis, ...Array.from({ length: rank }, (_, i) => i).filter((i) => i !== axis)];
  const back = new Array<number>(rank);
  toFront.forEach((p, i) => {
    back[p] = i;
  });
  const updates = axis === 0 ? flatG : g.transpose(flatG, toFront);
  const xf = axis === 0 ? x : g.transpose(x, toFront);
  const indices = g.unsqueeze(g.reshape(idx, [-1]), [1]);
  const scattered = g.node('ScatterND', [zerosLike(g, xf), indices, updates], { reduction: attr.s('add') })[0]!;
  return [axis === 0 ? scattered : g.transpose(scattered, back), null];
});

// ---- reductions ----------------------------------------------------------------------------------------

function reduceAxes(g: Graph, n: Node): number[] {
  const x = inp(n, 0);
  const axes = n.inputs[1] ? g.constIntsOf(n.inputs[1]) : x.shape.map((_, i) => i);
  if (!axes) throw new Error(`${n.op}: gradient needs constant axes`);
  return axes.map((a) => norm(a, x.shape.length));
}
function expandBack(g: Graph, n: Node, gy: Value): Value {
  const x = inp(n, 0),
    axes = reduceAxes(g, n);
  const kept = intAttr(n.attrs, 'keepdims', 1) ? gy : g.unsqueeze(gy, axes);
  return g.node('Expand', [kept, g.shapeOf(x)], {}, '', undefined, [x.shape])[0]!;
}
rule('ReduceSum', (g, n, [gy]) => [expandBack(g, n, gy!), null]);
rule('ReduceMean', (g, n, [gy]) => {
  const x = inp(n, 0),
    axes = reduceAxes(g, n);
  const count = axes.reduce((p, a) => {
    const d = x.shape[a]!;
    if (!isNum(d)) throw new Error('ReduceMean: gradient needs static reduced dims');
    return p * d;
  }, 1);
  return [g.div(expandBack(g, n, gy!), k(g, count, gy!)), null];
});
rule('ReduceMax', (g, n, [gy]) => {
  const x = inp(n, 0),
    y = n.outputs[0]!;
  const yk = intAttr(n.attrs, 'keepdims', 1) ? y : g.unsqueeze(y, reduceAxes(g, n));
  return [g.where(g.equal(x, yk), expandBack(g, n, gy!), k(g, 0, gy!)), null];
});

// ---- normalisation -------------------------------------------------------------------------------------

function lastAxisOnly(n: Node): void {
  const x = inp(n, 0);
  if (norm(intAttr(n.attrs, 'axis', -1), x.shape.length) !== x.shape.length - 1)
    throw new Error(`${n.op}: gradient only over the last axis`);
}
/** LayerNorm: gx = rstd·(ĝ − mean(ĝ) − x̂·mean(ĝ·x̂)) with ĝ = gy·γ (statistics recomputed from x). */
rule('LayerNormalization', (g, n, [gy], w) => {
  lastAxisOnly(n);
  const x = inp(n, 0),
    scale = inp(n, 1),
    bias = n.inputs[2] ?? null,
    eps = floatAttr(n.attrs, 'epsilon', 1e-5);
  const xc = g.sub(x, g.reduceMean(x, [-1]));
  const rstd = g.div(k(g, 1, x), g.sqrt(g.add(g.reduceMean(g.mul(xc, xc), [-1]), k(g, eps, x))));
  const xhat = g.mul(xc, rstd);
  const gh = g.mul(gy!, scale);
  const gx = w[0] ? g.mul(rstd, g.sub(g.sub(gh, g.reduceMean(gh, [-1])), g.mul(xhat, g.reduceMean(g.mul(gh, xhat), [-1])))) : null;
  return [gx, w[1] ? sumToShape(g, g.mul(gy!, xhat), scale.shape) : null, bias && w[2] ? sumToShape(g, gy!, bias.shape) : null];
});
/** RMSNorm: gx = r·(ĝ − x̂·mean(ĝ·x̂)) with r = 1/√(mean(x²)+ε), x̂ = x·r, ĝ = gy·γ. */
rule('SimplifiedLayerNormalization', (g, n, [gy], w) => {
  lastAxisOnly(n);
  const x = inp(n, 0),
    scale = inp(n, 1),
    eps = floatAttr(n.attrs, 'epsilon', 1e-5);
  const r = g.div(k(g, 1, x), g.sqrt(g.add(g.reduceMean(g.mul(x, x), [-1]), k(g, eps, x))));
  const xhat = g.mul(x, r);
  const gh = g.mul(gy!, scale);
  const gx = w[0] ? g.mul(r, g.sub(gh, g.mul(xhat, g.reduceMean(g.mul(gh, xhat), [-1])))) : null;
  return [gx, w[1] ? sumToShape(g, g.mul(gy!, xhat), scale.shape) : null];
});

// ---- rotary --------------------------------------------------------------------------------------------

/** A rotation's adjoint is the rotation by −θ: the same op with the sine table negated. */
rule(
  'RotaryEmbedding',
  (g, n, [gy], w) => {
    if (w[2] || w[3]) throw new Error('RotaryEmbedding: no gradient for the cos/sin tables');
    const gx = g.node('RotaryEmbedding', [gy!, inp(n, 1), inp(n, 2), g.neg(inp(n, 3))], n.attrs, MS_DOMAIN)[0]!;
    return [gx, null, null, null];
  },
  MS_DOMAIN,
);

// ---- convolution ---------------------------------------------------------------------------------------

/**
 * ConvTranspose is the adjoint of Conv with the same weight, strides and pads, so dx = Conv(gy, W). dW is
 * written for SAM's output_upscaling case (kernel = stride, no padding, one group: non-overlapping patches),
 * where it is one GEMM: dW[ci, co, a, b] = Σ x[n, ci, i, j]·gy[n, co, s·i + a, s·j + b].
 */
rule('ConvTranspose', (g, n, [gy], w) => {
  const x = inp(n, 0),
    wt = inp(n, 1),
    b = n.inputs[2] ?? null;
  const ks = intsAttr(n.attrs, 'kernel_shape') ?? (wt.shape.slice(2) as number[]);
  const strides = intsAttr(n.attrs, 'strides') ?? ks.map(() => 1);
  const pads = intsAttr(n.attrs, 'pads') ?? [...ks.map(() => 0), ...ks.map(() => 0)];
  const group = intAttr(n.attrs, 'group', 1);
  const dil = intsAttr(n.attrs, 'dilations') ?? ks.map(() => 1);
  let gx: Value | null = null,
    gw: Value | null = null,
    gb: Value | null = null;
  if (w[0]) gx = g.conv(gy!, wt, null, { strides: [...strides], pads: [...pads], dilations: [...dil], group });
  if (w[1]) {
    const simple =
      ks.length === 2 && ks.every((kk, i) => kk === strides[i]) && pads.every((p) => p === 0) && group === 1 && dil.every((d) => d === 1);
    if (!simple) throw new Error('ConvTranspose: weight gradient only for kernel = stride, no padding, one group');
    const [, ci, h, wd] = x.shape as number[];
    const [, co] = wt.shape as number[];
    const [sh, sw] = ks as [number, number];
    // gy [N, Co, H·sh, W·sw] → [N, Co, H, sh, W, sw] → [N, H, W, Co, sh, sw] → [N·H·W, Co·sh·sw]
    const g6 = g.reshape(gy!, [-1, co!, h!, sh, wd!, sw]);
    const gflat = g.reshape(g.transpose(g6, [0, 2, 4, 1, 3, 5]), [-1, co! * sh * sw]);
    const xflat = g.reshape(g.transpose(x, [1, 0, 2, 3]), [ci!, -1]); // [Ci, N·H·W]
    gw = g.reshape(g.matmul(xflat, gflat), [ci!, co!, sh, sw]);
  }
  if (b && w[2]) gb = g.reduceSum(gy!, [0, 2, 3], false);
  return [gx, gw, gb];
});

for (const [domain, op, r] of rules) defineGrad(domain, op, r);
