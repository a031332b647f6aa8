import type { DType } from '../io/dtype.js';
import type { FileSpan } from '../io/tensor-ref.js';

/**
 * The graph IR: values with a dtype and a shape (numbers, or strings for symbolic dims such as "seq"),
 * and nodes that are plain data (op name, domain, inputs, outputs, attributes). A Graph is serialised to
 * an ONNX ModelProto (onnx.ts) and run by onnxruntime (session.ts). Because nodes are data, a later pass
 * can walk them backwards and emit gradient nodes with each op's rule (ops.ts).
 */

export type Dim = number | string;
export type Shape = readonly Dim[];

export interface Value {
  readonly id: number;
  /** Unique within its graph; graph inputs and outputs keep the names callers feed and fetch. */
  name: string;
  readonly dtype: DType;
  readonly shape: Shape;
}

export type Attr =
  | { readonly type: 'int'; readonly value: number }
  | { readonly type: 'float'; readonly value: number }
  | { readonly type: 'string'; readonly value: string }
  | { readonly type: 'ints'; readonly value: readonly number[] }
  | { readonly type: 'floats'; readonly value: readonly number[] };

export type Attrs = Readonly<Record<string, Attr>>;

/** Attribute constructors: ONNX tells ints from floats, so the caller says which. */
export const attr = {
  i: (value: number): Attr => ({ type: 'int', value }),
  f: (value: number): Attr => ({ type: 'float', value }),
  s: (value: string): Attr => ({ type: 'string', value }),
  ints: (value: readonly number[]): Attr => ({ type: 'ints', value }),
  floats: (value: readonly number[]): Attr => ({ type: 'floats', value }),
};

export interface Node {
  readonly op: string;
  readonly domain: string;
  /** null marks an omitted optional input. */
  readonly inputs: readonly (Value | null)[];
  readonly outputs: readonly Value[];
  readonly attrs: Attrs;
}

/**
 * Where an initializer's bytes come from:
 * - `bytes`: already in memory (small constants, test data);
 * - `file`: stored contiguously, in this dtype, in an existing file (a safetensors tensor, a torch storage):
 *   the ONNX external data points straight at it, nothing is copied;
 * - `computed`: produced on demand (a bf16→fp32 widening, a quantisation) and written once into the cache;
 *   `key` names the content, so an unchanged key means the cached bytes are still right.
 */
export type WeightSource =
  | { readonly kind: 'bytes'; readonly bytes: Uint8Array }
  | { readonly kind: 'file'; readonly span: FileSpan }
  | { readonly kind: 'computed'; readonly key: string; readonly byteLength: number; produce(): Uint8Array };

export interface Initializer {
  readonly value: Value;
  readonly source: WeightSource;
}
