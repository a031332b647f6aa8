import type { Attr, Dim, Node, Value } from './ir.js';
import type { Graph } from './graph.js';
import { getSchema, ONNX_DTYPE_CODE, ONNX_OPSET } from './ops.js';
import { ProtoWriter } from './protobuf.js';

/** Where an initializer's bytes go in the serialised model. */
export type Placement =
  | { kind: 'inline'; bytes: Uint8Array }
  | { kind: 'external'; location: string; offset: number; length: number };

/** opset 20 needs IR version 9. */
const IR_VERSION = 9;
const ATTR_TYPE = { float: 1, int: 2, string: 3, floats: 6, ints: 7 } as const;

/**
 * Serialises a Graph to an ONNX ModelProto (field numbers from onnx.proto). Initializers are inline or
 * external per `placement`; ONNX needs external data past 2 GB and we use it for every large weight.
 */
export function serializeModel(graph: Graph, placement: (v: Value) => Placement): Uint8Array {
  const domains = new Map<string, number>([['', ONNX_OPSET]]);
  for (const n of graph.nodes) {
    const s = getSchema(n.domain, n.op);
    if (n.domain !== '') domains.set(n.domain, Math.max(domains.get(n.domain) ?? 1, s.since));
  }
  const w = new ProtoWriter();
  w.varint(1, IR_VERSION);
  w.string(2, 'lisa-ts');
  w.message(7, (g) => writeGraph(g, graph, placement));
  for (const [domain, version] of domains) w.message(8, (o) => { if (domain) o.string(1, domain); o.varint(2, version); });
  return w.finish();
}

function writeGraph(w: ProtoWriter, graph: Graph, placement: (v: Value) => Placement): void {
  graph.nodes.forEach((n, i) => w.message(1, (m) => writeNode(m, n, i)));
  w.string(2, graph.name);
  for (const init of graph.initializers) w.message(5, (t) => writeTensor(t, init.value, placement(init.value)));
  for (const v of graph.inputs) w.message(11, (m) => writeValueInfo(m, v));
  for (const v of graph.outputs) w.message(12, (m) => writeValueInfo(m, v));
}

function writeNode(w: ProtoWriter, n: Node, index: number): void {
  for (const v of n.inputs) w.string(1, v ? v.name : '');
  for (const v of n.outputs) w.string(2, v.name);
  w.string(3, `${n.op}_${index}`);
  w.string(4, n.op);
  for (const [name, a] of Object.entries(n.attrs)) w.message(5, (m) => writeAttr(m, name, a));
  if (n.domain) w.string(7, n.domain);
}

function writeAttr(w: ProtoWriter, name: string, a: Attr): void {
  w.string(1, name);
  w.varint(20, ATTR_TYPE[a.type]);
  switch (a.type) {
    case 'float': w.float(2, a.value); break;
    case 'int': w.varint(3, a.value); break;
    case 'string': w.string(4, a.value); break;
    case 'floats': for (const x of a.value) w.float(7, x); break;
    case 'ints': for (const x of a.value) w.varint(8, x); break;
  }
}

function writeTensor(w: ProtoWriter, v: Value, p: Placement): void {
  for (const d of v.shape) w.varint(1, d as number);
  w.varint(2, ONNX_DTYPE_CODE[v.dtype]);
  w.string(8, v.name);
  if (p.kind === 'inline') {
    w.bytes(9, p.bytes);
  } else {
    const kv = (k: string, val: string): void => { w.message(13, (e) => { e.string(1, k); e.string(2, val); }); };
    kv('location', p.location);
    kv('offset', String(p.offset));
    kv('length', String(p.length));
    w.varint(14, 1); // data_location = EXTERNAL
  }
}

function writeValueInfo(w: ProtoWriter, v: Value): void {
  w.string(1, v.name);
  w.message(2, (t) => t.message(1, (tt) => {
    tt.varint(1, ONNX_DTYPE_CODE[v.dtype]);
    tt.message(2, (s) => { for (const d of v.shape) s.message(1, (dm) => writeDim(dm, d)); });
  }));
}

function writeDim(w: ProtoWriter, d: Dim): void {
  if (typeof d === 'number') w.varint(1, d);
  else w.string(2, d);
}

