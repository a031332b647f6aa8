import { DTYPE_BYTES, numel, toFloat32, type DType } from './dtype.js';

/** Where a tensor's contiguous little-endian bytes lie in a file: ONNX external data can point here. */
export interface FileSpan {
  path: string;
  offset: number;
  length: number;
}

/**
 * A tensor in a checkpoint, not yet read. `bytes()` reads it (row-major, its own dtype) on demand, so a
 * consumer pays only for what it uses.
 */
export interface TensorRef {
  readonly name: string;
  readonly dtype: DType;
  readonly shape: readonly number[];
  /** The file it lives in (a shard, for sharded checkpoints). */
  readonly file: string;
  readonly byteLength: number;
  /** Set when the bytes are stored contiguously, in row-major order, in `file`. */
  readonly span: FileSpan | null;
  bytes(): Uint8Array;
  float32(): Float32Array;
}

/** Shared part of the readers' tensor refs: sizes and the float32 widening. */
export abstract class BaseTensorRef implements TensorRef {
  constructor(
    readonly name: string,
    readonly dtype: DType,
    readonly shape: readonly number[],
    readonly file: string,
  ) {}
  get byteLength(): number { return numel(this.shape) * DTYPE_BYTES[this.dtype]; }
  abstract get span(): FileSpan | null;
  abstract bytes(): Uint8Array;
  float32(): Float32Array { return toFloat32(this.dtype, this.bytes()); }
}
