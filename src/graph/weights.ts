import { createHash } from 'node:crypto';
import { statSync } from 'node:fs';
import { DTYPE_BYTES, numel, toFloat32, type DType } from '../io/dtype.js';
import type { TensorRef } from '../io/tensor-ref.js';
import type { Graph } from './graph.js';
import type { Value } from './ir.js';

/**
 * The identity of the code that converts: a hash of its source text goes into every converted weight's cache key,
 * so changing a conversion (a rounding rule, a layout) rebuilds its cached bytes instead of silently reusing them.
 */
export function codeVersion(...fns: readonly ((...args: never[]) => unknown)[]): string {
  return createHash('sha256')
    .update(fns.map((f) => f.toString()).join('\n'))
    .digest('hex')
    .slice(0, 12);
}

/** The source tensor's identity for a cache key: its file (size, mtime), name and dtype. */
export function sourceKey(t: TensorRef): string {
  const st = statSync(t.file);
  return `${t.file}:${st.size}:${st.mtimeMs}:${t.name}:${t.dtype}`;
}

/**
 * Turns a checkpoint tensor into a graph weight. When it is stored contiguously in the dtype the graph
 * wants, ONNX external data points at the checkpoint file in place (no copy); otherwise (bf16 → fp32, a
 * strided view) the conversion is a `computed` weight written once into the compile cache.
 */
export function tensorWeight(g: Graph, t: TensorRef, opts: { dtype?: DType; name?: string } = {}): Value {
  const dtype = opts.dtype ?? t.dtype;
  const name = opts.name ?? t.name;
  if (dtype === t.dtype && t.span) return g.fileWeight(name, dtype, t.shape, t.span);
  if (dtype !== t.dtype && dtype !== 'float32') throw new Error(`tensor ${t.name}: conversion ${t.dtype} → ${dtype} is not supported`);
  const key = `${sourceKey(t)}->${dtype}:${codeVersion(toFloat32)}`;
  return g.weight(name, dtype, t.shape, {
    kind: 'computed',
    key,
    byteLength: numel(t.shape) * DTYPE_BYTES[dtype],
    produce: () => {
      if (dtype === t.dtype) return t.bytes();
      const f = t.float32();
      return new Uint8Array(f.buffer, f.byteOffset, f.byteLength);
    },
  });
}

/** A weight transposed once at load time (nn.Linear stores [out, in]; MatMul wants [in, out]). */
export function transposedWeight(g: Graph, t: TensorRef, name = `${t.name}.T`): Value {
  if (t.shape.length !== 2) throw new Error(`tensor ${t.name}: transposedWeight needs a 2-D tensor, got ${JSON.stringify(t.shape)}`);
  const [rows, cols] = t.shape as [number, number];
  return g.weight(name, 'float32', [cols, rows], {
    kind: 'computed',
    key: `${sourceKey(t)}->float32:T:${codeVersion(toFloat32, transposedWeight)}`,
    byteLength: rows * cols * 4,
    produce: () => {
      const src = toFloat32(t.dtype, t.bytes());
      const out = new Float32Array(rows * cols);
      for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = src[r * cols + c]!;
      return new Uint8Array(out.buffer);
    },
  });
}
