import { numel, type AnyTypedArray, type DType } from '../io/dtype.js';

/** A tensor in host memory: what sessions take and return. Row-major; bool and uint8 use Uint8Array. */
export interface HostTensor {
  readonly dtype: DType;
  readonly shape: readonly number[];
  readonly data: AnyTypedArray;
}

export function hostTensor(dtype: DType, shape: readonly number[], data: AnyTypedArray): HostTensor {
  if (data.length !== numel(shape)) throw new Error(`tensor ${dtype}${JSON.stringify(shape)} needs ${numel(shape)} elements, got ${data.length}`);
  return { dtype, shape: [...shape], data };
}

export function f32(shape: readonly number[], data: Float32Array | readonly number[]): HostTensor {
  return hostTensor('float32', shape, data instanceof Float32Array ? data : Float32Array.from(data));
}
export function i64(shape: readonly number[], data: readonly (number | bigint)[] | BigInt64Array): HostTensor {
  return hostTensor('int64', shape, data instanceof BigInt64Array ? data : BigInt64Array.from(data, (x) => BigInt(x)));
}
