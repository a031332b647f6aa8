import { existsSync, readFileSync, statSync } from 'node:fs';
import { dirname, resolve } from 'node:path';
import { LisaError } from '../errors.js';
import { Graph } from '../graph/graph.js';
import { attr, type Attr, type Value } from '../graph/ir.js';
import { f16ToF32 } from '../io/dtype.js';

/**
 * A TensorFlow.js graph model (`model.json` + weight shards) as a graph of our IR, so it runs in onnxruntime like
 * everything else. TF works in NHWC; ONNX convolutions in NCHW. Feature maps are carried in NCHW (a flag per
 * tensor), filters are transposed at import, and a tensor goes back to NHWC only where an op needs TF's layout
 * (Reshape, StridedSlice, a graph output), so the numbers are TF's. The ops are those of TF.js converter output
 * for convolutional nets (MobileNet-style backbones with their detection heads); anything else is one clear error.
 */

const MAX_JSON_BYTES = 64 * 1024 * 1024;
const MAX_WEIGHT_BYTES = 2 * 1024 ** 3;

interface TfNode {
  name: string;
  op: string;
  input?: string[];
  attr?: Record<string, TfAttr>;
}
interface TfAttr {
  i?: string;
  f?: number;
  b?: boolean;
  s?: string;
  type?: string;
  list?: { i?: string[]; s?: string[] };
  shape?: { dim?: { size: string }[] };
}
interface WeightSpec {
  name: string;
  shape: number[];
  dtype: string;
  quantization?: { dtype: string; scale?: number; min?: number };
}
interface ModelJson {
  format?: string;
  modelTopology?: { node?: TfNode[] };
  weightsManifest?: { paths: string[]; weights: WeightSpec[] }[];
  signature?: { inputs?: Record<string, unknown>; outputs?: Record<string, unknown> };
}

/** A constant: TF's values and shape (NHWC where it is 4-D). */
interface Const {
  kind: 'const';
  dtype: 'float32' | 'int32';
  shape: number[];
  data: Float32Array | Int32Array;
}
/** A tensor of the graph; `nchw`: a 4-D TF tensor held transposed to NCHW. */
interface Tensor {
  kind: 'value';
  v: Value;
  nchw: boolean;
}
type Item = Const | Tensor;

export interface TfjsImport {
  graph: Graph;
  /** The input's name and NHWC shape, as TF names it. */
  input: { name: string; shape: number[] };
  outputs: string[];
}

const NHWC_TO_NCHW = [0, 3, 1, 2];
const NCHW_TO_NHWC = [0, 2, 3, 1];
/** A TF (NHWC) axis of a 4-D tensor held in NCHW. */
const nchwAxis = (a: number): number => [0, 2, 3, 1][a < 0 ? a + 4 : a]!;

function text(a: TfAttr | undefined): string | undefined {
  return a?.s === undefined ? undefined : Buffer.from(a.s, 'base64').toString('utf8');
}
function ints(a: TfAttr | undefined): number[] {
  return (a?.list?.i ?? []).map(Number);
}

function readJson(path: string): ModelJson {
  if (!existsSync(path)) throw new LisaError(`${path}: no such TF.js model file`);
  const size = statSync(path).size;
  if (size > MAX_JSON_BYTES) throw new LisaError(`${path}: ${size} bytes is larger than the ${MAX_JSON_BYTES}-byte limit for a model.json`);
  let m: ModelJson;
  try {
    m = JSON.parse(readFileSync(path, 'utf8')) as ModelJson;
  } catch (e) {
    throw new LisaError(`${path}: not valid JSON (${(e as Error).message})`);
  }
  if (m.format !== 'graph-model' || !Array.isArray(m.modelTopology?.node) || !Array.isArray(m.weightsManifest))
    throw new LisaError(`${path}: not a TF.js graph model (expected format "graph-model" with modelTopology.node and weightsManifest)`);
  return m;
}

/** Every weight of the manifest, dequantised (float16 or affine uint8/uint16) to float32, or int32 as stored. */
function readWeights(path: string, m: ModelJson): Map<string, Const> {
  const out = new Map<string, Const>();
  for (const group of m.weightsManifest!) {
    const bytes = Buffer.concat(
      group.paths.map((p) => {
        const f = resolve(dirname(path), p);
        if (!f.startsWith(resolve(dirname(path)) + '/')) throw new LisaError(`${path}: weight path "${p}" leaves the model folder`);
        if (!existsSync(f)) throw new LisaError(`${path}: weight file ${p} is missing`);
        if (statSync(f).size > MAX_WEIGHT_BYTES) throw new LisaError(`${f}: larger than the ${MAX_WEIGHT_BYTES}-byte limit`);
        return readFileSync(f);
      }),
    );
    let at = 0;
    for (const w of group.weights) {
      if (!Array.isArray(w.shape) || !w.shape.every((d) => Number.isInteger(d) && d >= 0 && d < 2 ** 31))
        throw new LisaError(`${path}: weight ${w.name} has a bad shape ${JSON.stringify(w.shape)}`);
      const n = w.shape.reduce((a, b) => a * b, 1);
      const q = w.quantization?.dtype;
      const width = q === 'float16' || q === 'uint16' ? 2 : q === 'uint8' ? 1 : 4;
      if (at + n * width > bytes.length) throw new LisaError(`${path}: weight ${w.name} runs past the end of its shards (truncated?)`);
      const chunk = bytes.subarray(at, at + n * width);
      at += n * width;
      if (w.dtype === 'int32' && !q) {
        out.set(w.name, {
          kind: 'const',
          dtype: 'int32',
          shape: w.shape,
          data: new Int32Array(chunk.buffer.slice(chunk.byteOffset, chunk.byteOffset + chunk.byteLength)),
        });
        continue;
      }
      if (w.dtype !== 'float32') throw new LisaError(`${path}: weight ${w.name} has dtype ${w.dtype}; expected float32 or int32`);
      const data = new Float32Array(n);
      if (q === 'float16') for (let i = 0; i < n; i++) data[i] = f16ToF32(chunk.readUInt16LE(i * 2));
      else if (q === 'uint8' || q === 'uint16') {
        const { scale = 1, min = 0 } = w.quantization!;
        for (let i = 0; i < n; i++) data[i] = (q === 'uint8' ? chunk[i]! : chunk.readUInt16LE(i * 2)) * scale + min;
      } else if (q) throw new LisaError(`${path}: weight ${w.name} has quantization ${q}; expected float16, uint8 or uint16`);
      else data.set(new Float32Array(chunk.buffer.slice(chunk.byteOffset, chunk.byteOffset + chunk.byteLength)));
      out.set(w.name, { kind: 'const', dtype: 'float32', shape: w.shape, data });
    }
    if (at !== bytes.length) throw new LisaError(`${path}: the weight shards hold ${bytes.length} bytes, the manifest describes ${at}`);
  }
  return out;
}

/** Imports `model.json` (and its weight shards beside it); `outputs` default to the signature's. */
export function importTfjsGraphModel(path: string, opts: { name?: string; outputs?: string[] } = {}): TfjsImport {
  const m = readJson(path);
  const weights = readWeights(path, m);
  const nodes = new Map(m.modelTopology!.node!.map((n) => [n.name, n]));
  const g = new Graph(opts.name ?? 'tfjs');
  const items = new Map<string, Item>();
  const fail = (n: TfNode, msg: string): never => {
    throw new LisaError(`${path}: node ${n.name} (${n.op}): ${msg}`);
  };
  let input: TfjsImport['input'] | undefined;

  const asValue = (it: Item): Value => (it.kind === 'value' ? it.v : g.constant(it.dtype, it.shape, it.data));
  /** In TF's layout (NHWC for 4-D). */
  const tf = (it: Item): Value => (it.kind === 'value' && it.nchw ? g.transpose(it.v, NCHW_TO_NHWC) : asValue(it));
  /** A constant broadcast against an NCHW tensor: right-aligned to rank 4 in NHWC, then transposed. */
  const constFor = (c: Const, nchw: boolean): Value => {
    if (!nchw || c.shape.length === 0) return g.constant(c.dtype, c.shape, c.data);
    const shape4 = [...Array(4 - c.shape.length).fill(1), ...c.shape] as number[];
    const v = g.constant(c.dtype, shape4, c.data);
    return g.transpose(v, NHWC_TO_NCHW);
  };
  const binary = (n: TfNode, op: string, a: Item, b: Item): Item => {
    const nchw = (a.kind === 'value' && a.nchw) || (b.kind === 'value' && b.nchw);
    const side = (x: Item): Value =>
      x.kind === 'const' ? constFor(x, nchw) : nchw && !x.nchw && x.v.shape.length === 4 ? g.transpose(x.v, NHWC_TO_NCHW) : x.v;
    if (a.kind === 'const' && b.kind === 'const') fail(n, 'constant arithmetic is not folded (not produced by the TF.js converter)');
    return { kind: 'value', v: g.node(op, [side(a), side(b)])[0]!, nchw };
  };
  const constInts = (n: TfNode, it: Item | undefined, what: string): number[] =>
    it?.kind === 'const' ? Array.from(it.data, Number) : fail(n, `${what} must be a constant`);
  const samePads = (n: TfNode, x: Value, k: number[], strides: number[], dil: number[], padding: string | undefined): number[] => {
    if (padding === 'VALID') return [0, 0, 0, 0];
    if (padding !== 'SAME') return fail(n, `padding ${padding} is not supported (SAME or VALID)`);
    const pads = [0, 0, 0, 0];
    for (let i = 0; i < 2; i++) {
      const size = x.shape[2 + i];
      if (typeof size !== 'number') return fail(n, 'SAME padding needs static spatial sizes');
      const out = Math.ceil(size / strides[i]!);
      const total = Math.max(0, (out - 1) * strides[i]! + (k[i]! - 1) * dil[i]! + 1 - size);
      pads[i] = Math.floor(total / 2); // TF puts the odd pixel at the end
      pads[i + 2] = total - pads[i]!;
    }
    return pads;
  };

  const convolution = (n: TfNode, ins: Item[], depthwise: boolean): Item => {
    const x = ins[0]!;
    const f = ins[1]!;
    if (x.kind !== 'value' || !x.nchw) return fail(n, 'the input must be a 4-D feature map');
    if (f.kind !== 'const' || f.shape.length !== 4) return fail(n, 'the filter must be a constant [h, w, in, out]');
    const a = n.attr ?? {};
    if ((text(a.data_format) ?? 'NHWC') !== 'NHWC') fail(n, `data_format ${text(a.data_format)} is not supported (NHWC)`);
    const [kh, kw, cin, cout] = f.shape as [number, number, number, number];
    // TF HWIO (depthwise: H, W, in, multiplier) → ONNX OIHW (depthwise: in × multiplier, 1, H, W; group = in).
    const o = depthwise ? cin * cout : cout;
    const w = new Float32Array(o * (depthwise ? 1 : cin) * kh * kw);
    for (let y = 0; y < kh; y++)
      for (let xk = 0; xk < kw; xk++)
        for (let i = 0; i < cin; i++)
          for (let j = 0; j < cout; j++) {
            const src = f.data[((y * kw + xk) * cin + i) * cout + j]!;
            if (depthwise) w[((i * cout + j) * kh + y) * kw + xk] = src;
            else w[((j * cin + i) * kh + y) * kw + xk] = src;
          }
    const strides = ints(a.strides).slice(1, 3);
    const dil = ints(a.dilations).length ? ints(a.dilations).slice(1, 3) : [1, 1];
    const pads = samePads(n, x.v, [kh, kw], strides.length ? strides : [1, 1], dil, text(a.padding));
    const fused = (a.fused_ops?.list?.s ?? []).map((s) => Buffer.from(s, 'base64').toString('utf8'));
    let bias: Value | null = null;
    if (fused.length) {
      if (fused[0] !== 'BiasAdd') fail(n, `fused ops ${fused.join(', ')} are not supported (BiasAdd, then Relu or Relu6)`);
      const b = ins[2];
      if (b?.kind !== 'const' || b.shape.length !== 1) return fail(n, 'the bias must be a constant vector');
      bias = g.constant('float32', [b.shape[0]!], b.data);
    }
    let y = g.conv(x.v, g.constant('float32', [o, depthwise ? 1 : cin, kh, kw], w), bias, {
      strides: strides.length ? strides : [1, 1],
      dilations: dil,
      pads,
      group: depthwise ? cin : 1,
    });
    for (const act of fused.slice(1)) {
      if (act === 'Relu') y = g.node('Relu', [y])[0]!;
      else if (act === 'Relu6') y = g.node('Clip', [y, g.scalar(0), g.scalar(6)])[0]!;
      else fail(n, `fused activation ${act} is not supported`);
    }
    return { kind: 'value', v: y, nchw: true };
  };

  const translate = (n: TfNode, ins: Item[]): Item[] => {
    const a = n.attr ?? {};
    const one = (v: Value, nchw = false): Item[] => [{ kind: 'value', v, nchw }];
    const x = ins[0]!;
    switch (n.op) {
      case 'Placeholder': {
        const shape = (a.shape?.shape?.dim ?? []).map((d) => Number(d.size));
        if (shape.length !== 4 || shape.some((d) => !(d > 0)))
          return fail(n, `input shape ${JSON.stringify(shape)}: expected a static [1, H, W, C]`);
        input = { name: n.name, shape };
        const v = g.input(n.name, 'float32', shape);
        return one(g.transpose(v, NHWC_TO_NCHW), true);
      }
      case 'Identity':
        return [x];
      case '_FusedConv2D':
      case 'Conv2D':
        return [convolution(n, ins, false)];
      case 'FusedDepthwiseConv2dNative':
      case 'DepthwiseConv2dNative':
        return [convolution(n, ins, true)];
      case 'Relu':
      case 'Sigmoid':
      case 'Tanh':
        return x.kind === 'value' ? one(g.node(n.op, [x.v])[0]!, x.nchw) : fail(n, 'constant input');
      case 'Relu6':
        return x.kind === 'value' ? one(g.node('Clip', [x.v, g.scalar(0), g.scalar(6)])[0]!, x.nchw) : fail(n, 'constant input');
      case 'Add':
      case 'AddV2':
      case 'BiasAdd':
        return [binary(n, 'Add', x, ins[1]!)];
      case 'Sub':
        return [binary(n, 'Sub', x, ins[1]!)];
      case 'Mul':
        return [binary(n, 'Mul', x, ins[1]!)];
      case 'RealDiv':
        return [binary(n, 'Div', x, ins[1]!)];
      case 'Maximum':
        return [binary(n, 'Max', x, ins[1]!)];
      case 'Minimum':
        return [binary(n, 'Min', x, ins[1]!)];
      case 'Equal':
        return [binary(n, 'Equal', x, ins[1]!)];
      case 'FloorMod':
        return [binary(n, 'Mod', x, ins[1]!)];
      case 'FloorDiv': {
        // floor(a / b) exactly, for any signs: (a - a mod b) / b, with mod taking the divisor's sign (fmod = 0).
        const b = ins[1]!;
        const mod = binary(n, 'Mod', x, b) as Tensor;
        const num = g.sub(asValue(x), mod.v);
        return [binary(n, 'Div', { kind: 'value', v: num, nchw: mod.nchw }, b)];
      }
      case 'Cast': {
        const to = a.DstT?.type;
        const dtype =
          to === 'DT_FLOAT'
            ? 'float32'
            : to === 'DT_INT32'
              ? 'int32'
              : to === 'DT_BOOL'
                ? 'bool'
                : fail(n, `cast to ${to} is not supported`);
        return x.kind === 'value' ? one(g.cast(x.v, dtype), x.nchw) : fail(n, 'constant input');
      }
      case 'Mean': {
        if (x.kind !== 'value') return fail(n, 'constant input');
        const axes = constInts(n, ins[1], 'reduction_indices');
        const keep = a.keep_dims?.b === true;
        if (x.nchw && !keep) {
          const r = g.node('ReduceMean', [x.v, g.ints(axes.map(nchwAxis))], { keepdims: attr.i(0) })[0]!;
          return one(r);
        }
        return one(
          g.node('ReduceMean', [x.v, g.ints(x.nchw ? axes.map(nchwAxis) : axes)], { keepdims: attr.i(keep ? 1 : 0) })[0]!,
          x.nchw && keep,
        );
      }
      case 'ResizeBilinear':
      case 'ResizeNearestNeighbor': {
        if (x.kind !== 'value' || !x.nchw) return fail(n, 'the input must be a 4-D feature map');
        const [h, w] = constInts(n, ins[1], 'size');
        const align = a.align_corners?.b === true;
        const half = a.half_pixel_centers?.b === true;
        const mode = n.op === 'ResizeBilinear' ? 'linear' : 'nearest';
        const ctm = align ? 'align_corners' : half ? (mode === 'linear' ? 'half_pixel' : 'tf_half_pixel_for_nn') : 'asymmetric';
        const sizes = g.ints([x.v.shape[0] as number, x.v.shape[1] as number, h!, w!]);
        const attrs: Record<string, Attr> = { mode: attr.s(mode), coordinate_transformation_mode: attr.s(ctm) };
        if (mode === 'nearest') attrs.nearest_mode = attr.s(half ? 'round_prefer_ceil' : 'floor');
        return one(g.node('Resize', [x.v, null, null, sizes], attrs)[0]!, true);
      }
      case 'ConcatV2': {
        const parts = ins.slice(0, -1);
        const axis = constInts(n, ins[ins.length - 1], 'axis')[0]!;
        const nchw = parts.some((p) => p.kind === 'value' && p.nchw);
        const vs = parts.map((p) => (p.kind === 'const' ? constFor(p, nchw) : nchw && !p.nchw ? g.transpose(p.v, NHWC_TO_NCHW) : p.v));
        return one(g.concat(vs, nchw ? nchwAxis(axis) : axis), nchw);
      }
      case 'MaxPool': {
        if (x.kind !== 'value' || !x.nchw) return fail(n, 'the input must be a 4-D feature map');
        const k = ints(a.ksize).slice(1, 3);
        const strides = ints(a.strides).slice(1, 3);
        const pads = samePads(n, x.v, k, strides, [1, 1], text(a.padding));
        return one(g.node('MaxPool', [x.v], { kernel_shape: attr.ints(k), strides: attr.ints(strides), pads: attr.ints(pads) })[0]!, true);
      }
      case 'Reshape':
        return one(g.node('Reshape', [tf(x), g.ints(constInts(n, ins[1], 'shape'))])[0]!);
      case 'ExpandDims': {
        const axis = constInts(n, ins[1], 'dim')[0]!;
        const v = tf(x);
        return one(g.unsqueeze(v, [axis < 0 ? axis + v.shape.length + 1 : axis]));
      }
      case 'TopKV2': {
        const v = tf(x);
        const k = constInts(n, ins[1], 'k')[0]!;
        const [values, indices] = g.node('TopK', [v, g.ints([k])], { axis: attr.i(-1), largest: attr.i(1), sorted: attr.i(1) });
        // TF's indices are int32.
        return [
          { kind: 'value', v: values!, nchw: false },
          { kind: 'value', v: g.cast(indices!, 'int32'), nchw: false },
        ];
      }
      case 'GatherV2': {
        const axis = constInts(n, ins[2], 'axis')[0]!;
        if ((Number(a.batch_dims?.i ?? 0) || 0) !== 0) fail(n, 'batch_dims other than 0 is not supported');
        return one(g.node('Gather', [tf(x), asValue(ins[1]!)], { axis: attr.i(axis) })[0]!);
      }
      case 'StridedSlice': {
        const v = tf(x);
        const begin = constInts(n, ins[1], 'begin'),
          end = constInts(n, ins[2], 'end'),
          steps = constInts(n, ins[3], 'strides');
        const bm = Number(a.begin_mask?.i ?? 0),
          em = Number(a.end_mask?.i ?? 0),
          sm = Number(a.shrink_axis_mask?.i ?? 0);
        if (Number(a.ellipsis_mask?.i ?? 0) || Number(a.new_axis_mask?.i ?? 0)) fail(n, 'ellipsis and new-axis masks are not supported');
        const starts: number[] = [],
          ends: number[] = [],
          axes: number[] = [],
          st: number[] = [],
          shrink: number[] = [];
        begin.forEach((b, i) => {
          const s = steps[i] ?? 1;
          const big = 2 ** 31 - 1;
          starts.push(bm & (1 << i) ? (s > 0 ? 0 : big) : b);
          ends.push(sm & (1 << i) ? (b === -1 ? big : b + 1) : em & (1 << i) ? (s > 0 ? big : -big) : end[i]!);
          axes.push(i);
          st.push(s);
          if (sm & (1 << i)) shrink.push(i);
        });
        const s = g.slice(v, starts, ends, axes, st);
        return one(shrink.length ? g.squeeze(s, shrink) : s);
      }
      default:
        return fail(n, 'this op is not supported by the TF.js importer');
    }
  };

  /** Depth-first from the outputs, so only what they need is imported (and a cycle is refused). */
  const visiting = new Set<string>();
  const get = (ref: string): Item => {
    const [name, port] = ref.replace(/^\^/, '').split(':') as [string, string | undefined];
    const key = `${name}:${port ?? 0}`;
    const have = items.get(key);
    if (have) return have;
    const n = nodes.get(name);
    if (!n) throw new LisaError(`${path}: node ${name} is referenced but not defined`);
    if (visiting.has(name)) throw new LisaError(`${path}: node ${name} is part of a cycle`);
    visiting.add(name);
    let outs: Item[];
    if (n.op === 'Const') {
      const w = weights.get(n.name);
      if (!w) throw new LisaError(`${path}: constant ${n.name} has no weights in the manifest`);
      outs = [w];
    } else outs = translate(n, (n.input ?? []).filter((i) => !i.startsWith('^')).map(get));
    visiting.delete(name);
    outs.forEach((o, i) => items.set(`${name}:${i}`, o));
    const it = items.get(key);
    if (!it) throw new LisaError(`${path}: node ${name} has no output ${port}`);
    return it;
  };

  const outputs = opts.outputs ?? Object.keys(m.signature?.outputs ?? {});
  if (outputs.length === 0) throw new LisaError(`${path}: no outputs (the signature names none; give them)`);
  for (const o of outputs) g.output(tf(get(o)), o);
  if (!input) throw new LisaError(`${path}: the outputs do not depend on an input (Placeholder)`);
  return { graph: g, input, outputs };
}
