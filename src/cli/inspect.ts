import { DTYPE_BYTES, numel, type DType } from '../io/dtype.js';
import { openCheckpoint } from '../io/checkpoint.js';
import { relative } from 'node:path';

export interface InspectReport {
  path: string;
  files: string[];
  tensors: { name: string; dtype: DType; shape: number[]; file: string }[];
  summary: { count: number; parameters: number; bytes: number; bytesByDtype: Partial<Record<DType, number>>; countByDtype: Partial<Record<DType, number>> };
}

/** Everything `lisa inspect` shows, as data (the library's view; the CLI only formats it). */
export function inspectCheckpoint(path: string): InspectReport {
  const ckpt = openCheckpoint(path);
  try {
    const tensors = [...ckpt.tensors.values()].map((t) => ({ name: t.name, dtype: t.dtype, shape: [...t.shape], file: t.file }));
    const bytesByDtype: Partial<Record<DType, number>> = {};
    const countByDtype: Partial<Record<DType, number>> = {};
    let parameters = 0, bytes = 0;
    for (const t of tensors) {
      const n = numel(t.shape);
      parameters += n;
      bytes += n * DTYPE_BYTES[t.dtype];
      bytesByDtype[t.dtype] = (bytesByDtype[t.dtype] ?? 0) + n * DTYPE_BYTES[t.dtype];
      countByDtype[t.dtype] = (countByDtype[t.dtype] ?? 0) + 1;
    }
    return { path, files: [...ckpt.files], tensors, summary: { count: tensors.length, parameters, bytes, bytesByDtype, countByDtype } };
  } finally {
    ckpt.close();
  }
}

export function formatBytes(n: number): string {
  const units = ['B', 'KB', 'MB', 'GB', 'TB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return i === 0 ? `${n} B` : `${n.toFixed(2)} ${units[i]}`;
}

export function formatInspect(r: InspectReport): string {
  const rows = r.tensors.map((t) => [t.name, t.dtype, `[${t.shape.join(', ')}]`, relative(process.cwd(), t.file) || t.file]);
  const w = [0, 1, 2].map((c) => Math.max(...rows.map((row) => row[c]!.length), 4));
  const lines = rows.map((row) => `${row[0]!.padEnd(w[0]!)}  ${row[1]!.padEnd(w[1]!)}  ${row[2]!.padEnd(w[2]!)}  ${row[3]}`);
  lines.push('');
  lines.push(`${r.summary.count} tensors, ${r.summary.parameters.toLocaleString('en-US')} parameters, ${formatBytes(r.summary.bytes)} in ${r.files.length} file(s)`);
  for (const [dt, b] of Object.entries(r.summary.bytesByDtype)) lines.push(`  ${dt.padEnd(9)} ${String(r.summary.countByDtype[dt as DType]).padStart(6)} tensors  ${formatBytes(b)}`);
  return lines.join('\n');
}
