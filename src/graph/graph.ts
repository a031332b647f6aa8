import { DTYPE_BYTES, numel, type AnyTypedArray, type DType } from '../io/dtype.js';
import type { FileSpan } from '../io/tensor-ref.js';
import { attr, type Attr, type Attrs, type Dim, type Initializer, type Node, type Shape, type Value, type WeightSource } from './ir.js';
import { getSchema, MS_DOMAIN, ONNX_DTYPE_CODE, type ShapeContext } from './ops.js';

/**
 * A graph under construction. Op methods append nodes and return their outputs with inferred dtype and
 * shape, so model code reads like the PyTorch module it mirrors: `g.matmul(x, g.transpose(w, [1, 0]))`.
 */
export class Graph {
  readonly name: string;
  readonly inputs: Value[] = [];
  readonly outputs: Value[] = [];
  readonly nodes: Node[] = [];
  readonly initializers: Initializer[] = [];
  private nextId = 0;
  private nextSym = 0;
  private readonly names = new Set<string>();
  private readonly consts = new Map<number, Uint8Array>();

  constructor(name: string) {
    this.name = name;
  }

  private value(dtype: DType, shape: Shape, name?: string): Value {
    const id = this.nextId++;
    let n = name ?? `v${id}`;
    if (this.names.has(n)) n = `${n}_${id}`;
    this.names.add(n);
    return { id, name: n, dtype, shape: [...shape] };
  }

  input(name: string, dtype: DType, shape: Shape): Value {
    if (this.names.has(name)) throw new Error(`graph ${this.name}: name ${name} already used`);
    const v = this.value(dtype, shape, name);
    this.inputs.push(v);
    return v;
  }

  /** Marks `v` as a graph output under `name` (what callers fetch). */
  output(v: Value, name: string): Value {
    if (this.inputs.includes(v) || this.outputs.includes(v) || this.initializers.some((i) => i.value === v)) v = this.identity(v);
    if (v.name !== name) {
      if (this.names.has(name)) throw new Error(`graph ${this.name}: name ${name} already used`);
      this.names.delete(v.name);
      this.names.add(name);
      v.name = name;
    }
    this.outputs.push(v);
    return v;
  }

  /** A weight: its bytes come from `source` (see WeightSource) and become an ONNX initializer. */
  weight(name: string, dtype: DType, shape: Shape, source: WeightSource): Value {
    const v = this.value(dtype, shape, name);
    const want = numel(shape as number[]) * DTYPE_BYTES[dtype];
    const have = source.kind === 'bytes' ? source.bytes.byteLength : source.kind === 'file' ? source.span.length : source.byteLength;
    if (have !== want) throw new Error(`weight ${name}: ${dtype}${JSON.stringify(shape)} needs ${want} bytes, source has ${have}`);
    this.initializers.push({ value: v, source });
    if (source.kind === 'bytes') this.consts.set(v.id, source.bytes);
    return v;
  }

  /** A weight stored contiguously in a file in this dtype: external data points at it in place. */
  fileWeight(name: string, dtype: DType, shape: Shape, span: FileSpan): Value {
    return this.weight(name, dtype, shape, { kind: 'file', span });
  }

  /** A small constant from a typed array. */
  constant(dtype: DType, shape: readonly number[], data: AnyTypedArray | readonly number[], name?: string): Value {
    let bytes: Uint8Array;
    if (Array.isArray(data)) {
      const arr =
        dtype === 'int64'
          ? BigInt64Array.from(data, (x) => BigInt(x))
          : dtype === 'float32'
            ? Float32Array.from(data)
            : dtype === 'int32'
              ? Int32Array.from(data)
              : dtype === 'float64'
                ? Float64Array.from(data)
                : Uint8Array.from(data);
      bytes = new Uint8Array(arr.buffer);
    } else {
      const t = data as AnyTypedArray;
      bytes = new Uint8Array(t.buffer, t.byteOffset, t.byteLength);
    }
    return this.weight(name ?? `const${this.nextId}`, dtype, shape, { kind: 'bytes', bytes });
  }
  ints(values: readonly number[]): Value {
    return this.constant('int64', [values.length], values);
  }
  scalar(value: number, dtype: DType = 'float32'): Value {
    return this.constant(dtype, [], [value]);
  }

  private ctx: ShapeContext = {
    constInts: (v) => {
      if (!v) return null;
      const b = this.consts.get(v.id);
      if (!b) return null;
      if (v.dtype === 'int64') return Array.from(new BigInt64Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)), Number);
      if (v.dtype === 'int32') return Array.from(new Int32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength)));
      return null;
    },
    fresh: () => `d${this.nextSym++}`,
  };

  /** The values of a constant int tensor (an initializer given as bytes), or null when it is computed. */
  constIntsOf(v: Value): number[] | null {
    return this.ctx.constInts(v);
  }

  /** Appends any op with a schema in ops.ts; returns its outputs. */
  node(
    op: string,
    inputs: readonly (Value | null)[],
    attrs: Attrs = {},
    domain = '',
    outputNames?: readonly string[],
    knownShapes?: readonly Shape[],
  ): Value[] {
    const schema = getSchema(domain, op);
    // knownShapes: what the caller knows better than the shape rule can (sizes only known at run time).
    const inferred = schema.infer(inputs, attrs, this.ctx);
    // More known shapes than inferred outputs: an op whose output count is set at run time (Split).
    const count = Math.max(inferred.length, knownShapes?.length ?? 0);
    const types = Array.from({ length: count }, (_, i) => {
      const t = inferred[i] ?? inferred[0]!;
      return knownShapes?.[i] ? { ...t, shape: knownShapes[i]! } : t;
    });
    const outputs = types.map((t, i) => this.value(t.dtype, t.shape, outputNames?.[i]));
    this.nodes.push({ op, domain, inputs, outputs, attrs });
    return outputs;
  }
  private one(op: string, inputs: readonly (Value | null)[], attrs: Attrs = {}, domain = ''): Value {
    return this.node(op, inputs, attrs, domain)[0]!;
  }

  // ---- elementwise ----
  add(a: Value, b: Value): Value {
    return this.one('Add', [a, b]);
  }
  sub(a: Value, b: Value): Value {
    return this.one('Sub', [a, b]);
  }
  mul(a: Value, b: Value): Value {
    return this.one('Mul', [a, b]);
  }
  div(a: Value, b: Value): Value {
    return this.one('Div', [a, b]);
  }
  pow(a: Value, b: Value): Value {
    return this.one('Pow', [a, b]);
  }
  where(cond: Value, a: Value, b: Value): Value {
    return this.one('Where', [cond, a, b]);
  }
  less(a: Value, b: Value): Value {
    return this.one('Less', [a, b]);
  }
  greater(a: Value, b: Value): Value {
    return this.one('Greater', [a, b]);
  }
  equal(a: Value, b: Value): Value {
    return this.one('Equal', [a, b]);
  }
  neg(x: Value): Value {
    return this.one('Neg', [x]);
  }
  sqrt(x: Value): Value {
    return this.one('Sqrt', [x]);
  }
  exp(x: Value): Value {
    return this.one('Exp', [x]);
  }
  cos(x: Value): Value {
    return this.one('Cos', [x]);
  }
  sin(x: Value): Value {
    return this.one('Sin', [x]);
  }
  relu(x: Value): Value {
    return this.one('Relu', [x]);
  }
  sigmoid(x: Value): Value {
    return this.one('Sigmoid', [x]);
  }
  tanh(x: Value): Value {
    return this.one('Tanh', [x]);
  }
  identity(x: Value): Value {
    return this.one('Identity', [x]);
  }
  /** Exact GELU (erf form), as torch's nn.GELU() default. */
  gelu(x: Value): Value {
    return this.one('Gelu', [x], { approximate: attr.s('none') });
  }
  /** CLIP's quick_gelu: x * sigmoid(1.702 x). */
  quickGelu(x: Value): Value {
    return this.one('QuickGelu', [x], { alpha: attr.f(1.702) }, MS_DOMAIN);
  }
  /** SiLU (LLaMA's act): x * sigmoid(x). */
  silu(x: Value): Value {
    return this.mul(x, this.sigmoid(x));
  }
  softmax(x: Value, axis = -1): Value {
    return this.one('Softmax', [x], { axis: attr.i(axis) });
  }
  logSoftmax(x: Value, axis = -1): Value {
    return this.one('LogSoftmax', [x], { axis: attr.i(axis) });
  }
  abs(x: Value): Value {
    return this.one('Abs', [x]);
  }
  log(x: Value): Value {
    return this.one('Log', [x]);
  }
  cast(x: Value, to: DType): Value {
    return this.one('Cast', [x], { to: attr.i(ONNX_DTYPE_CODE[to]) });
  }

  // ---- linear algebra ----
  matmul(a: Value, b: Value): Value {
    return this.one('MatMul', [a, b]);
  }
  gemm(a: Value, b: Value, c: Value | null, opts: { transA?: boolean; transB?: boolean; alpha?: number; beta?: number } = {}): Value {
    return this.one('Gemm', [a, b, c], {
      transA: attr.i(opts.transA ? 1 : 0),
      transB: attr.i(opts.transB ? 1 : 0),
      alpha: attr.f(opts.alpha ?? 1),
      beta: attr.f(opts.beta ?? 1),
    });
  }

  // ---- shapes ----
  /** Reshape with ONNX semantics: 0 copies the input dim, -1 is inferred. */
  reshape(x: Value, shape: readonly number[]): Value {
    return this.one('Reshape', [x, this.ints(shape)]);
  }
  transpose(x: Value, perm: readonly number[]): Value {
    return this.one('Transpose', [x], { perm: attr.ints(perm) });
  }
  slice(x: Value, starts: readonly number[], ends: readonly number[], axes: readonly number[], steps?: readonly number[]): Value {
    return this.one('Slice', [x, this.ints(starts), this.ints(ends), this.ints(axes), steps ? this.ints(steps) : null]);
  }
  concat(xs: readonly Value[], axis: number): Value {
    return this.one('Concat', xs, { axis: attr.i(axis) });
  }
  gather(x: Value, indices: Value, axis = 0): Value {
    return this.one('Gather', [x, indices], { axis: attr.i(axis) });
  }
  unsqueeze(x: Value, axes: readonly number[]): Value {
    return this.one('Unsqueeze', [x, this.ints(axes)]);
  }
  squeeze(x: Value, axes: readonly number[]): Value {
    return this.one('Squeeze', [x, this.ints(axes)]);
  }
  expand(x: Value, shape: readonly number[]): Value {
    return this.one('Expand', [x, this.ints(shape)]);
  }
  pad(x: Value, pads: readonly number[], value = 0): Value {
    return this.one('Pad', [x, this.ints(pads), this.scalar(value, x.dtype)]);
  }
  shapeOf(x: Value): Value {
    return this.one('Shape', [x]);
  }
  /** The size of one axis as an int64 [1] tensor (for shapes built at run time). */
  dimOf(x: Value, axis: number): Value {
    return this.slice(this.shapeOf(x), [axis], [axis + 1], [0]);
  }
  /** Expand to a shape whose entries are numbers or int64 [1] run-time sizes (from dimOf). */
  expandTo(x: Value, dims: readonly (number | Value)[]): Value {
    const parts = dims.map((d) => (typeof d === 'number' ? this.ints([d]) : d));
    const shape = dims.map((d) => (typeof d === 'number' ? d : this.ctx.fresh()));
    return this.node('Expand', [x, this.concat(parts, 0)], {}, '', undefined, [shape])[0]!;
  }
  range(start: Value, limit: Value, delta: Value): Value {
    return this.one('Range', [start, limit, delta]);
  }
  reduceMean(x: Value, axes: readonly number[], keepdims = true): Value {
    return this.one('ReduceMean', [x, this.ints(axes)], { keepdims: attr.i(keepdims ? 1 : 0) });
  }
  reduceMax(x: Value, axes: readonly number[], keepdims = true): Value {
    return this.one('ReduceMax', [x, this.ints(axes)], { keepdims: attr.i(keepdims ? 1 : 0) });
  }
  reduceSum(x: Value, axes: readonly number[], keepdims = true): Value {
    return this.one('ReduceSum', [x, this.ints(axes)], { keepdims: attr.i(keepdims ? 1 : 0) });
  }

  // ---- normalisation ----
  layerNorm(x: Value, scale: Value, bias: Value | null, eps: number, axis = -1): Value {
    return this.one('LayerNormalization', [x, scale, bias], { axis: attr.i(axis), epsilon: attr.f(eps) });
  }
  /** RMSNorm (LLaMA): x / sqrt(mean(x²) + eps) * scale, computed in float32. */
  rmsNorm(x: Value, scale: Value, eps: number): Value {
    return this.one('SimplifiedLayerNormalization', [x, scale], { axis: attr.i(-1), epsilon: attr.f(eps), stash_type: attr.i(1) });
  }

  // ---- convolution and resampling (NCHW) ----
  conv(
    x: Value,
    w: Value,
    b: Value | null,
    opts: { strides?: number[]; pads?: number[]; dilations?: number[]; group?: number } = {},
  ): Value {
    const k = w.shape.slice(2) as number[];
    const a: Record<string, Attr> = {
      kernel_shape: attr.ints(k),
      strides: attr.ints(opts.strides ?? k.map(() => 1)),
      pads: attr.ints(opts.pads ?? [...k.map(() => 0), ...k.map(() => 0)]),
      dilations: attr.ints(opts.dilations ?? k.map(() => 1)),
      group: attr.i(opts.group ?? 1),
    };
    return this.one('Conv', [x, w, b], a);
  }
  convTranspose(
    x: Value,
    w: Value,
    b: Value | null,
    opts: { strides?: number[]; pads?: number[]; outputPadding?: number[]; group?: number } = {},
  ): Value {
    const k = w.shape.slice(2) as number[];
    const a: Record<string, Attr> = {
      kernel_shape: attr.ints(k),
      strides: attr.ints(opts.strides ?? k.map(() => 1)),
      pads: attr.ints(opts.pads ?? [...k.map(() => 0), ...k.map(() => 0)]),
      group: attr.i(opts.group ?? 1),
    };
    if (opts.outputPadding) a.output_padding = attr.ints(opts.outputPadding);
    return this.one('ConvTranspose', [x, w, b], a);
  }
  /** Bilinear resize of the last two dims to `size`, as torch's F.interpolate(mode="bilinear", align_corners=False). */
  resizeBilinear(x: Value, size: readonly [number, number]): Value {
    const sizes = [...x.shape.slice(0, -2).map(Number), size[0], size[1]];
    if (sizes.some((d) => !Number.isInteger(d))) throw new Error('resizeBilinear: leading dims must be static');
    return this.one('Resize', [x, null, null, this.ints(sizes)], {
      mode: attr.s('linear'),
      coordinate_transformation_mode: attr.s('pytorch_half_pixel'),
      antialias: attr.i(0),
    });
  }
}

export type { Dim, Shape, Value };
