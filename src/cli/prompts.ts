import { InvalidArgumentError } from 'commander';
import type { BoxPrompt, PointPrompt } from '../models/sam/prompt-encoder.js';

/** --point x,y[,label] (label 1 = foreground, default; 0 = background); repeatable. */
export function parsePoint(v: string, prev: PointPrompt[] = []): PointPrompt[] {
  const parts = v.split(',').map((s) => Number(s.trim()));
  if ((parts.length !== 2 && parts.length !== 3) || parts.some((n) => !Number.isFinite(n)) || (parts.length === 3 && parts[2] !== 0 && parts[2] !== 1)) {
    throw new InvalidArgumentError(`--point takes x,y or x,y,label with label 0 or 1, got "${v}"`);
  }
  return [...prev, { x: parts[0]!, y: parts[1]!, label: (parts[2] ?? 1) as 0 | 1 }];
}

/** --box x1,y1,x2,y2 in image pixels. */
export function parseBox(v: string): BoxPrompt {
  const p = v.split(',').map((s) => Number(s.trim()));
  if (p.length !== 4 || p.some((n) => !Number.isFinite(n)) || !(p[0]! < p[2]! && p[1]! < p[3]!)) throw new InvalidArgumentError(`--box takes x1,y1,x2,y2 with x1 < x2 and y1 < y2, got "${v}"`);
  return { x1: p[0]!, y1: p[1]!, x2: p[2]!, y2: p[3]! };
}
