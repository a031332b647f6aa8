// lisa-ts public API.
export { LisaError } from './errors.js';
export type { DType } from './io/dtype.js';
export { bf16ToF32, f16ToF32, f32ToBf16, f32ToF16, toFloat32 } from './io/dtype.js';
export type { TensorRef, FileSpan } from './io/tensor-ref.js';
export { openCheckpoint, openWeightFile, type Checkpoint } from './io/checkpoint.js';
export { readSafetensors, writeSafetensors, type TensorToWrite } from './io/safetensors.js';
export { readTorchBin } from './io/torch-bin.js';
export { readNpy, writeNpy, parseNpy, encodeNpy, type NpyArray } from './io/npy.js';
export { Graph } from './graph/graph.js';
export type { Value, Dim, Shape, Node, Attr, WeightSource } from './graph/ir.js';
export { Engine, EngineSession, type EngineOptions } from './graph/session.js';
export { hostTensor, f32, i64, type HostTensor } from './graph/tensor.js';
export { tensorWeight, transposedWeight } from './graph/weights.js';
export * as nn from './graph/nn.js';
export { inspectCheckpoint, type InspectReport } from './cli/inspect.js';
