import type { DType } from '../io/dtype.js';
import type { Graph } from './graph.js';
import type { Attrs, Dim, Node, Shape, Value } from './ir.js';

/**
 * Every op the builder may emit, with its shape rule. The `grad` slot is where training's reverse-mode
 * rule for the op will live (emitting ONNX nodes for input gradients given output gradients).
 */

export interface ShapeContext {
  /** Values of a constant input (an initializer given as bytes), or null when it is computed. */
  constInts(v: Value | null): number[] | null;
  /** A fresh symbolic dim, for sizes only known at run time. */
  fresh(): string;
}

export interface OutType {
  dtype: DType;
  shape: Shape;
}

/**
 * Builds the gradient nodes for one node: given d(loss)/d(outputs) (null where an output does not reach the
 * loss), returns d(loss)/d(inputs) (null where none is wanted or defined). `wanted[i]` says whether input i
 * needs a gradient, so a rule skips work for frozen weights (a MatMul with a frozen weight emits no dW).
 */
export type GradRule = (g: Graph, node: Node, outputGrads: readonly (Value | null)[], wanted: readonly boolean[]) => (Value | null)[];

export interface OpSchema {
  readonly op: string;
  readonly domain: string;
  /** The opset version of `domain` the op is taken from. */
  readonly since: number;
  infer(inputs: readonly (Value | null)[], attrs: Attrs, ctx: ShapeContext): OutType[];
  grad?: GradRule;
}

export const ONNX_OPSET = 20;
export const MS_DOMAIN = 'com.microsoft';

const schemas = new Map<string, OpSchema>();
export function schemaKey(domain: string, op: string): string {
  return `${domain}::${op}`;
}
export function getSchema(domain: string, op: string): OpSchema {
  const s = schemas.get(schemaKey(domain, op));
  if (!s) throw new Error(`op ${domain || 'ai.onnx'}.${op} has no schema in src/graph/ops.ts`);
  return s;
}
function define(op: string, infer: OpSchema['infer'], domain = '', since = ONNX_OPSET): void {
  schemas.set(schemaKey(domain, op), { op, domain, since, infer });
}
/** Attaches an op's reverse-mode rule (graph/gradients.ts holds them, one per op, beside these schemas). */
export function defineGrad(domain: string, op: string, rule: GradRule): void {
  getSchema(domain, op).grad = rule;
}

// ---- shape helpers -------------------------------------------------------------------------------------

function req(v: Value | null, op: string, i: number): Value {
  if (!v) throw new Error(`${op}: input ${i} is required`);
  return v;
}
function intAttr(attrs: Attrs, name: string, dflt: number): number {
  const a = attrs[name];
  return a && a.type === 'int' ? a.value : dflt;
}
function intsAttr(attrs: Attrs, name: string): readonly number[] | null {
  const a = attrs[name];
  return a && a.type === 'ints' ? a.value : null;
}
function normAxis(axis: number, rank: number, op: string): number {
  const a = axis < 0 ? axis + rank : axis;
  if (a < 0 || a >= rank) throw new Error(`${op}: axis ${axis} out of range for rank ${rank}`);
  return a;
}

export function broadcastShapes(op: string, ...shapes: Shape[]): Dim[] {
  const rank = Math.max(...shapes.map((s) => s.length));
  const out: Dim[] = [];
  for (let i = 0; i < rank; i++) {
    let d: Dim = 1;
    for (const s of shapes) {
      const x = s[s.length - rank + i] ?? 1;
      if (x === 1) continue;
      if (d === 1) {
        d = x;
        continue;
      }
      if (typeof d === 'number' && typeof x === 'number' && d !== x) throw new Error(`${op}: cannot broadcast ${JSON.stringify(shapes)}`);
      if (typeof d === 'string' && typeof x === 'number') d = x; // a symbol that must equal a number
    }
    out.push(d);
  }
  return out;
}

function sumDims(a: Dim, b: Dim, ctx: ShapeContext): Dim {
  return typeof a === 'number' && typeof b === 'number' ? a + b : ctx.fresh();
}

// ---- elementwise ---------------------------------------------------------------------------------------

for (const op of ['Add', 'Sub', 'Mul', 'Div', 'Pow', 'Max', 'Min']) {
  define(op, (ins) => [
    { dtype: req(ins[0]!, op, 0).dtype, shape: broadcastShapes(op, req(ins[0]!, op, 0).shape, req(ins[1]!, op, 1).shape) },
  ]);
}
for (const op of ['BitShift', 'BitwiseAnd', 'BitwiseOr']) {
  define(op, (ins) => [
    { dtype: req(ins[0]!, op, 0).dtype, shape: broadcastShapes(op, req(ins[0]!, op, 0).shape, req(ins[1]!, op, 1).shape) },
  ]);
}
for (const op of ['Equal', 'Less', 'Greater', 'LessOrEqual', 'GreaterOrEqual']) {
  define(op, (ins) => [{ dtype: 'bool', shape: broadcastShapes(op, req(ins[0]!, op, 0).shape, req(ins[1]!, op, 1).shape) }]);
}
define('Where', (ins) => [
  {
    dtype: req(ins[1]!, 'Where', 1).dtype,
    shape: broadcastShapes('Where', req(ins[0]!, 'Where', 0).shape, ins[1]!.shape, req(ins[2]!, 'Where', 2).shape),
  },
]);
for (const op of [
  'Relu',
  'Sigmoid',
  'Tanh',
  'Erf',
  'Exp',
  'Log',
  'Sqrt',
  'Neg',
  'Abs',
  'Sign',
  'Cos',
  'Sin',
  'Reciprocal',
  'Identity',
  'Not',
  'Gelu',
  'Softmax',
  'LogSoftmax',
]) {
  define(op, (ins) => [{ dtype: req(ins[0]!, op, 0).dtype, shape: ins[0]!.shape }]);
}
define('QuickGelu', (ins) => [{ dtype: req(ins[0]!, 'QuickGelu', 0).dtype, shape: ins[0]!.shape }], MS_DOMAIN, 1);

const ONNX_DTYPE_BY_CODE: Readonly<Record<number, DType>> = {
  1: 'float32',
  2: 'uint8',
  3: 'int8',
  5: 'int16',
  6: 'int32',
  7: 'int64',
  9: 'bool',
  10: 'float16',
  11: 'float64',
  16: 'bfloat16',
};
export const ONNX_DTYPE_CODE: Readonly<Record<DType, number>> = Object.fromEntries(
  Object.entries(ONNX_DTYPE_BY_CODE).map(([k, v]) => [v, Number(k)]),
) as Record<DType, number>;
define('Cast', (ins, attrs) => {
  const to = ONNX_DTYPE_BY_CODE[intAttr(attrs, 'to', 0)];
  if (!to) throw new Error('Cast: unknown "to"');
  return [{ dtype: to, shape: req(ins[0]!, 'Cast', 0).shape }];
});

// ---- linear algebra ------------------------------------------------------------------------------------

define('MatMul', (ins) => {
  const a = req(ins[0]!, 'MatMul', 0),
    b = req(ins[1]!, 'MatMul', 1);
  if (a.shape.length < 2 || b.shape.length < 2) throw new Error('MatMul: operands must be at least 2-D here');
  const batch = broadcastShapes('MatMul', a.shape.slice(0, -2), b.shape.slice(0, -2));
  return [{ dtype: a.dtype, shape: [...batch, a.shape[a.shape.length - 2]!, b.shape[b.shape.length - 1]!] }];
});
// onnxruntime's MatMul with the operands' transposes folded in: transBatch moves an operand's first axis to just
// before its last ([d0, d1, .., dn-2, dn-1] → [d1, .., dn-2, d0, dn-1]), then trans swaps the last two; alpha scales.
// The kernel reads the strided operand in place: a seq-major KV cache [T, H, D] is attended as [H, T, D], no copy.
define(
  'FusedMatMul',
  (ins, attrs) => {
    const view = (v: Value, batchT: number, t: number): Shape => {
      let s = [...v.shape];
      if (s.length < 2) throw new Error('FusedMatMul: operands must be at least 2-D here');
      if (batchT) s = [...s.slice(1, -1), s[0]!, s[s.length - 1]!];
      if (t) s = [...s.slice(0, -2), s[s.length - 1]!, s[s.length - 2]!];
      return s;
    };
    const a = view(req(ins[0]!, 'FusedMatMul', 0), intAttr(attrs, 'transBatchA', 0), intAttr(attrs, 'transA', 0));
    const b = view(req(ins[1]!, 'FusedMatMul', 1), intAttr(attrs, 'transBatchB', 0), intAttr(attrs, 'transB', 0));
    const batch = broadcastShapes('FusedMatMul', a.slice(0, -2), b.slice(0, -2));
    return [{ dtype: ins[0]!.dtype, shape: [...batch, a[a.length - 2]!, b[b.length - 1]!] }];
  },
  MS_DOMAIN,
  1,
);
define('Gemm', (ins, attrs) => {
  const a = req(ins[0]!, 'Gemm', 0),
    b = req(ins[1]!, 'Gemm', 1);
  const m = intAttr(attrs, 'transA', 0) ? a.shape[1]! : a.shape[0]!;
  const n = intAttr(attrs, 'transB', 0) ? b.shape[0]! : b.shape[1]!;
  return [{ dtype: a.dtype, shape: [m, n] }];
});
define(
  'MatMulNBits',
  (ins, attrs) => {
    const a = req(ins[0]!, 'MatMulNBits', 0);
    return [{ dtype: a.dtype, shape: [...a.shape.slice(0, -1), intAttr(attrs, 'N', 0)] }];
  },
  MS_DOMAIN,
  1,
);

// ---- shape manipulation --------------------------------------------------------------------------------

define('Reshape', (ins, _attrs, ctx) => {
  const x = req(ins[0]!, 'Reshape', 0);
  const spec = ctx.constInts(req(ins[1]!, 'Reshape', 1));
  if (!spec) return [{ dtype: x.dtype, shape: [ctx.fresh()] }];
  const out: Dim[] = spec.map((d, i) => (d === 0 ? x.shape[i]! : d));
  const minus = out.indexOf(-1);
  if (minus >= 0) {
    const total = x.shape.reduce<number | null>((p, d) => (p !== null && typeof d === 'number' ? p * d : null), 1);
    const known = out.reduce<number | null>((p, d, i) => (i === minus ? p : p !== null && typeof d === 'number' ? p * d : null), 1);
    out[minus] = total !== null && known !== null ? total / known : ctx.fresh();
    if (typeof out[minus] === 'number' && !Number.isInteger(out[minus]))
      throw new Error(`Reshape: ${JSON.stringify(x.shape)} does not fit ${JSON.stringify(spec)}`);
  }
  return [{ dtype: x.dtype, shape: out }];
});
define('Transpose', (ins, attrs) => {
  const x = req(ins[0]!, 'Transpose', 0);
  const perm = intsAttr(attrs, 'perm') ?? x.shape.map((_, i) => x.shape.length - 1 - i);
  return [{ dtype: x.dtype, shape: perm.map((p) => x.shape[p]!) }];
});
define('Slice', (ins, _attrs, ctx) => {
  const x = req(ins[0]!, 'Slice', 0);
  const starts = ctx.constInts(ins[1] ?? null),
    ends = ctx.constInts(ins[2] ?? null);
  const axes = ins[3] ? ctx.constInts(ins[3]) : (starts?.map((_, i) => i) ?? null);
  const steps = ins[4] ? ctx.constInts(ins[4]) : (starts?.map(() => 1) ?? null);
  const shape: Dim[] = [...x.shape];
  if (!starts || !ends || !axes || !steps) return [{ dtype: x.dtype, shape: shape.map(() => ctx.fresh()) }];
  axes.forEach((ax, i) => {
    const a = normAxis(ax, x.shape.length, 'Slice');
    const d = x.shape[a]!;
    if (typeof d !== 'number') {
      shape[a] = ctx.fresh();
      return;
    }
    const step = steps[i]!;
    const clamp = (v: number, lo: number, hi: number): number => Math.min(Math.max(v, lo), hi);
    let s = starts[i]!,
      e = ends[i]!;
    if (s < 0) s += d;
    if (e < 0) e += d;
    if (step > 0) {
      s = clamp(s, 0, d);
      e = clamp(e, 0, d);
      shape[a] = Math.max(0, Math.ceil((e - s) / step));
    } else {
      s = clamp(s, 0, d - 1);
      e = clamp(e, -1, d - 1);
      shape[a] = Math.max(0, Math.ceil((e - s) / step));
    }
  });
  return [{ dtype: x.dtype, shape }];
});
define('Concat', (ins, attrs, ctx) => {
  const xs = ins.map((v, i) => req(v, 'Concat', i));
  const a = normAxis(intAttr(attrs, 'axis', 0), xs[0]!.shape.length, 'Concat');
  const shape: Dim[] = [...xs[0]!.shape];
  shape[a] = xs.slice(1).reduce<Dim>((acc, v) => sumDims(acc, v.shape[a]!, ctx), xs[0]!.shape[a]!);
  return [{ dtype: xs[0]!.dtype, shape }];
});
define('Gather', (ins, attrs) => {
  const x = req(ins[0]!, 'Gather', 0),
    idx = req(ins[1]!, 'Gather', 1);
  const a = normAxis(intAttr(attrs, 'axis', 0), x.shape.length, 'Gather');
  return [{ dtype: x.dtype, shape: [...x.shape.slice(0, a), ...idx.shape, ...x.shape.slice(a + 1)] }];
});
define('Unsqueeze', (ins, _attrs, ctx) => {
  const x = req(ins[0]!, 'Unsqueeze', 0);
  const axes = ctx.constInts(req(ins[1]!, 'Unsqueeze', 1));
  if (!axes) throw new Error('Unsqueeze: axes must be constant');
  const rank = x.shape.length + axes.length;
  const norm = axes.map((a) => normAxis(a, rank, 'Unsqueeze'));
  const out: Dim[] = [];
  let j = 0;
  for (let i = 0; i < rank; i++) out.push(norm.includes(i) ? 1 : x.shape[j++]!);
  return [{ dtype: x.dtype, shape: out }];
});
define('Squeeze', (ins, _attrs, ctx) => {
  const x = req(ins[0]!, 'Squeeze', 0);
  const axes = ctx.constInts(req(ins[1]!, 'Squeeze', 1));
  if (!axes) throw new Error('Squeeze: axes must be constant');
  const norm = axes.map((a) => normAxis(a, x.shape.length, 'Squeeze'));
  return [{ dtype: x.dtype, shape: x.shape.filter((_, i) => !norm.includes(i)) }];
});
define('Expand', (ins, _attrs, ctx) => {
  const x = req(ins[0]!, 'Expand', 0);
  const shape = ctx.constInts(req(ins[1]!, 'Expand', 1));
  return [{ dtype: x.dtype, shape: shape ? broadcastShapes('Expand', x.shape, shape) : x.shape.map(() => ctx.fresh()) }];
});
define('Pad', (ins, _attrs, ctx) => {
  const x = req(ins[0]!, 'Pad', 0);
  const pads = ctx.constInts(req(ins[1]!, 'Pad', 1));
  if (!pads) return [{ dtype: x.dtype, shape: x.shape.map(() => ctx.fresh()) }];
  const r = x.shape.length;
  return [{ dtype: x.dtype, shape: x.shape.map((d, i) => (typeof d === 'number' ? d + pads[i]! + pads[i + r]! : ctx.fresh())) }];
});
define('ScatterND', (ins) => [{ dtype: req(ins[0]!, 'ScatterND', 0).dtype, shape: ins[0]!.shape }]);
define('Split', (ins, attrs, ctx) => {
  const x = req(ins[0]!, 'Split', 0);
  const a = normAxis(intAttr(attrs, 'axis', 0), x.shape.length, 'Split');
  const sizes = ctx.constInts(ins[1] ?? null);
  // Run-time sizes: the caller passes the output count and shapes (Graph.node's knownShapes).
  if (!sizes) return [{ dtype: x.dtype, shape: x.shape.map(() => ctx.fresh()) }];
  return sizes.map((n) => ({ dtype: x.dtype, shape: x.shape.map((d, i) => (i === a ? n : d)) }));
});
define('Shape', (ins) => [{ dtype: 'int64', shape: [req(ins[0]!, 'Shape', 0).shape.length] }]);
define('Range', (ins, _attrs, ctx) => [{ dtype: req(ins[0]!, 'Range', 0).dtype, shape: [ctx.fresh()] }]);
define('Clip', (ins) => [{ dtype: req(ins[0]!, 'Clip', 0).dtype, shape: ins[0]!.shape }]);
define('Mod', (ins) => [
  { dtype: req(ins[0]!, 'Mod', 0).dtype, shape: broadcastShapes('Mod', ins[0]!.shape, req(ins[1]!, 'Mod', 1).shape) },
]);
define('TopK', (ins, attrs, ctx) => {
  const x = req(ins[0]!, 'TopK', 0);
  const a = normAxis(intAttr(attrs, 'axis', -1), x.shape.length, 'TopK');
  const k = ctx.constInts(req(ins[1]!, 'TopK', 1))?.[0] ?? ctx.fresh();
  const shape = x.shape.map((d, i) => (i === a ? k : d));
  return [
    { dtype: x.dtype, shape },
    { dtype: 'int64', shape },
  ];
});
for (const op of ['ReduceMean', 'ReduceSum', 'ReduceMax']) {
  define(op, (ins, attrs, ctx) => {
    const x = req(ins[0]!, op, 0);
    const axes = ins[1] ? ctx.constInts(ins[1]) : x.shape.map((_, i) => i);
    if (!axes) throw new Error(`${op}: axes must be constant`);
    const norm = axes.map((a) => normAxis(a, x.shape.length, op));
    const keep = intAttr(attrs, 'keepdims', 1);
    return [
      { dtype: x.dtype, shape: keep ? x.shape.map((d, i) => (norm.includes(i) ? 1 : d)) : x.shape.filter((_, i) => !norm.includes(i)) },
    ];
  });
}

// ---- normalisation -------------------------------------------------------------------------------------

define('LayerNormalization', (ins) => [{ dtype: req(ins[0]!, 'LayerNormalization', 0).dtype, shape: ins[0]!.shape }]);
// ORT registers RMSNorm in the default ONNX domain (a historical quirk), at version 1.
define(
  'SimplifiedLayerNormalization',
  (ins) => [{ dtype: req(ins[0]!, 'SimplifiedLayerNormalization', 0).dtype, shape: ins[0]!.shape }],
  '',
  1,
);

// ---- convolution and resampling ------------------------------------------------------------------------

function convOut(op: string, ins: readonly (Value | null)[], attrs: Attrs, transpose: boolean): OutType[] {
  const x = req(ins[0]!, op, 0),
    w = req(ins[1]!, op, 1);
  const nsp = x.shape.length - 2;
  const k = intsAttr(attrs, 'kernel_shape') ?? w.shape.slice(2).map(Number);
  const strides = intsAttr(attrs, 'strides') ?? k.map(() => 1);
  const dil = intsAttr(attrs, 'dilations') ?? k.map(() => 1);
  const pads = intsAttr(attrs, 'pads') ?? [...k.map(() => 0), ...k.map(() => 0)];
  const outPad = intsAttr(attrs, 'output_padding') ?? k.map(() => 0);
  const group = intAttr(attrs, 'group', 1);
  const channels = transpose ? (w.shape[1] as number) * group : w.shape[0]!;
  const spatial: Dim[] = [];
  for (let i = 0; i < nsp; i++) {
    const d = x.shape[2 + i]!;
    if (typeof d !== 'number') {
      spatial.push(`${op}_${i}`);
      continue;
    }
    spatial.push(
      transpose
        ? strides[i]! * (d - 1) + outPad[i]! + ((k[i]! - 1) * dil[i]! + 1) - pads[i]! - pads[i + nsp]!
        : Math.floor((d + pads[i]! + pads[i + nsp]! - dil[i]! * (k[i]! - 1) - 1) / strides[i]!) + 1,
    );
  }
  return [{ dtype: x.dtype, shape: [x.shape[0]!, channels, ...spatial] }];
}
define('Conv', (ins, attrs) => convOut('Conv', ins, attrs, false));
define('MaxPool', (ins, attrs) => {
  const x = req(ins[0]!, 'MaxPool', 0);
  const k = intsAttr(attrs, 'kernel_shape');
  if (!k) throw new Error('MaxPool: kernel_shape is required');
  const strides = intsAttr(attrs, 'strides') ?? k.map(() => 1);
  const pads = intsAttr(attrs, 'pads') ?? [...k.map(() => 0), ...k.map(() => 0)];
  const spatial = x.shape
    .slice(2)
    .map((d, i) => (typeof d === 'number' ? Math.floor((d + pads[i]! + pads[i + k.length]! - k[i]!) / strides[i]!) + 1 : `MaxPool_${i}`));
  return [{ dtype: x.dtype, shape: [x.shape[0]!, x.shape[1]!, ...spatial] }];
});
define('ConvTranspose', (ins, attrs) => convOut('ConvTranspose', ins, attrs, true));
define('Resize', (ins, _attrs, ctx) => {
  const x = req(ins[0]!, 'Resize', 0);
  const sizes = ctx.constInts(ins[3] ?? null);
  return [{ dtype: x.dtype, shape: sizes ?? x.shape.map(() => ctx.fresh()) }];
});

// ---- fused transformer ops (com.microsoft) -------------------------------------------------------------

define('RotaryEmbedding', (ins) => [{ dtype: req(ins[0]!, 'RotaryEmbedding', 0).dtype, shape: ins[0]!.shape }], MS_DOMAIN, 1);
