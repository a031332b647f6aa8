import type { SamplingOptions } from '../inference/generate.js';
import type { BoxPrompt, PointPrompt } from '../models/sam/prompt-encoder.js';
import { HttpError } from './http-error.js';

/**
 * The request fields of the API, declared once: the parser below checks bodies against this table (JSON, or the
 * string fields of a multipart form), and the OpenAPI document is written from it.
 */
export type FieldType = 'string' | 'integer' | 'number' | 'boolean' | 'points' | 'box' | 'mask_format';

export interface FieldSpec {
  type: FieldType;
  description: string;
  min?: number;
  max?: number;
}

export const MASK_FORMATS = ['rle', 'png', 'polygon'] as const;
export type MaskFormat = (typeof MASK_FORMATS)[number];

/** Options shared by /v1/segment and the extension fields of /v1/chat/completions. */
export const OPTION_FIELDS: Record<string, FieldSpec> = {
  image_id: { type: 'string', description: 'an image uploaded before with POST /v1/images (skips both encoders)' },
  answer: { type: 'string', description: "teacher forcing: masks for this answer's [SEG] tokens, nothing generated" },
  points: { type: 'points', description: 'SAM point prompts in image pixels: [[x, y, label], …] or [{x, y, label}] (label 1 = object)' },
  box: { type: 'box', description: 'SAM box prompt in image pixels: [x1, y1, x2, y2] or {x1, y1, x2, y2}' },
  max_new_tokens: { type: 'integer', description: 'generated tokens at most (default 512)', min: 1, max: 4096 },
  temperature: { type: 'number', description: 'absent or 0: greedy, as the official code; > 0 samples', min: 0, max: 100 },
  top_p: { type: 'number', description: 'nucleus sampling mass (with temperature > 0; default 1)', min: 0, max: 1 },
  seed: { type: 'integer', description: 'sampling seed (default 0)', min: 0, max: 2 ** 32 - 1 },
  mask_format: { type: 'mask_format', description: 'masks as COCO RLE (default, always included), plus png (base64) or polygon' },
  multimask: { type: 'boolean', description: "points/box without a question: best of SAM's 3 outputs (default for one point)" },
  stream: { type: 'boolean', description: 'server-sent events: text deltas as generated, then the result' },
};

export const SEGMENT_FIELDS: Record<string, FieldSpec> = {
  image: { type: 'string', description: 'the image (JPEG, PNG or WebP) as base64, or a data: URL' },
  question: { type: 'string', description: 'the question; may be empty with points/box (plain SAM)' },
  ...OPTION_FIELDS,
};

export interface RequestLimits {
  /** Characters of one question or answer. */
  maxQuestionChars: number;
  /** Decoded bytes of one image. */
  maxImageBytes: number;
}

/** What /v1/segment and a chat turn take, checked and in the library's terms. */
export interface SegmentParams {
  image?: Uint8Array;
  imageId?: string;
  question: string;
  answer?: string;
  points?: PointPrompt[];
  box?: BoxPrompt;
  maxNewTokens?: number;
  sampling: SamplingOptions | null;
  maskFormat: MaskFormat;
  multimask?: boolean;
  stream: boolean;
}

function typeName(v: unknown): string {
  return v === null ? 'null' : Array.isArray(v) ? 'an array' : typeof v === 'object' ? 'an object' : `${typeof v} ${JSON.stringify(v)}`;
}

const fail = (field: string, msg: string): never => {
  throw new HttpError(400, `${field}: ${msg}`, field);
};

function finite(field: string, v: unknown): number {
  if (typeof v !== 'number' || !Number.isFinite(v)) fail(field, `expected a number, got ${typeName(v)}`);
  return v as number;
}

function parsePoints(field: string, v: unknown): PointPrompt[] {
  if (!Array.isArray(v)) return fail(field, `expected an array of [x, y, label] or {x, y, label}, got ${typeName(v)}`);
  if (v.length > 64) fail(field, `at most 64 points, got ${v.length}`);
  return v.map((p, i) => {
    const f = `${field}[${i}]`;
    const [x, y, label] = Array.isArray(p)
      ? p.length === 2 || p.length === 3
        ? [p[0], p[1], p[2] ?? 1]
        : fail(f, `expected [x, y] or [x, y, label], got ${p.length} numbers`)
      : p && typeof p === 'object'
        ? [(p as PointPrompt).x, (p as PointPrompt).y, (p as PointPrompt).label ?? 1]
        : fail(f, `expected [x, y, label] or {x, y, label}, got ${typeName(p)}`);
    if (label !== 0 && label !== 1) fail(`${f}.label`, `expected 0 (background) or 1 (object), got ${typeName(label)}`);
    return { x: finite(`${f}.x`, x), y: finite(`${f}.y`, y), label: label as 0 | 1 };
  });
}

function parseBox(field: string, v: unknown): BoxPrompt {
  const a = Array.isArray(v)
    ? v
    : v && typeof v === 'object'
      ? [(v as BoxPrompt).x1, (v as BoxPrompt).y1, (v as BoxPrompt).x2, (v as BoxPrompt).y2]
      : fail(field, `expected [x1, y1, x2, y2] or {x1, y1, x2, y2}, got ${typeName(v)}`);
  if (a.length !== 4) fail(field, `expected 4 numbers [x1, y1, x2, y2], got ${a.length}`);
  const [x1, y1, x2, y2] = a.map((x, i) => finite(`${field}[${i}]`, x)) as [number, number, number, number];
  return { x1, y1, x2, y2 };
}

/** A multipart form gives strings: numbers, booleans and prompts (as JSON) are read from them. */
function fromForm(spec: FieldSpec, field: string, s: string): unknown {
  switch (spec.type) {
    case 'integer':
    case 'number':
      return s.trim() === '' || !Number.isFinite(Number(s)) ? fail(field, `expected a number, got "${s.slice(0, 40)}"`) : Number(s);
    case 'boolean':
      return s === 'true' || s === '1'
        ? true
        : s === 'false' || s === '0'
          ? false
          : fail(field, `expected true or false, got "${s.slice(0, 40)}"`);
    case 'points':
    case 'box':
      try {
        return JSON.parse(s) as unknown;
      } catch {
        return fail(field, `expected JSON, got "${s.slice(0, 40)}"`);
      }
    default:
      return s;
  }
}

/** Checks one value against its spec; returns it typed. */
export function readField(spec: FieldSpec, field: string, raw: unknown, form = false): unknown {
  const v = form && typeof raw === 'string' ? fromForm(spec, field, raw) : raw;
  switch (spec.type) {
    case 'string':
      return typeof v === 'string' ? v : fail(field, `expected a string, got ${typeName(v)}`);
    case 'boolean':
      return typeof v === 'boolean' ? v : fail(field, `expected true or false, got ${typeName(v)}`);
    case 'integer':
    case 'number': {
      const n = finite(field, v);
      if (spec.type === 'integer' && !Number.isInteger(n)) fail(field, `expected an integer, got ${n}`);
      if ((spec.min !== undefined && n < spec.min) || (spec.max !== undefined && n > spec.max))
        fail(field, `expected a value in [${spec.min}, ${spec.max}], got ${n}`);
      return n;
    }
    case 'points':
      return parsePoints(field, v);
    case 'box':
      return parseBox(field, v);
    case 'mask_format':
      return (MASK_FORMATS as readonly unknown[]).includes(v)
        ? v
        : fail(field, `expected one of ${MASK_FORMATS.join(', ')}, got ${typeName(v)}`);
  }
}

/** base64 (or a `data:image/…;base64,` URL) → bytes, refusing what is not base64 or is too big. */
export function decodeBase64Image(field: string, s: string, maxBytes: number): Uint8Array {
  const m = /^data:([\w.+-]+\/[\w.+-]+)?(;[\w-]+=[\w.-]+)*;base64,/.exec(s);
  const b64 = (m ? s.slice(m[0].length) : s).replace(/\s+/g, '');
  if (s.startsWith('data:') && !m) fail(field, 'expected a base64 data: URL (data:image/png;base64,…)');
  if (!b64) fail(field, 'is empty: expected a base64-encoded JPEG, PNG or WebP');
  if (!/^[A-Za-z0-9+/_-]*={0,2}$/.test(b64)) fail(field, 'is not valid base64');
  if ((b64.length * 3) / 4 > maxBytes + 3) throw new HttpError(413, `${field}: the image is larger than the ${maxBytes}-byte limit`, field);
  return new Uint8Array(Buffer.from(b64, 'base64'));
}

/**
 * The body of /v1/segment (or a chat turn's extension fields) as SegmentParams. `form`: string values from a
 * multipart form; `known`: other fields the caller handles itself (not refused as unknown).
 */
export function readSegmentParams(
  body: Record<string, unknown>,
  limits: RequestLimits,
  opts: { form?: boolean; specs?: Record<string, FieldSpec>; ignore?: readonly string[] } = {},
): SegmentParams {
  const specs = opts.specs ?? SEGMENT_FIELDS;
  const v: Record<string, unknown> = {};
  for (const [k, raw] of Object.entries(body)) {
    const spec = specs[k];
    if (!spec) {
      if (opts.ignore?.includes(k)) continue;
      fail(k, `unknown field (expected one of ${Object.keys(specs).join(', ')})`);
    }
    if (raw === undefined || raw === null) continue;
    v[k] = readField(spec!, k, raw, opts.form);
  }
  for (const k of ['question', 'answer'] as const) {
    const s = v[k] as string | undefined;
    if (s !== undefined && s.length > limits.maxQuestionChars)
      fail(k, `${s.length} characters is longer than the ${limits.maxQuestionChars}-character limit`);
  }
  const temperature = (v.temperature as number | undefined) ?? 0;
  const p: SegmentParams = {
    question: (v.question as string | undefined) ?? '',
    sampling:
      temperature > 0 ? { temperature, topP: (v.top_p as number | undefined) ?? 1, seed: (v.seed as number | undefined) ?? 0 } : null,
    maskFormat: (v.mask_format as MaskFormat | undefined) ?? 'rle',
    stream: (v.stream as boolean | undefined) ?? false,
  };
  if (v.top_p === 0) fail('top_p', 'expected a value in (0, 1], got 0');
  if (typeof v.image === 'string') p.image = decodeBase64Image('image', v.image, limits.maxImageBytes);
  if (v.image_id !== undefined) p.imageId = v.image_id as string;
  if (v.answer !== undefined) p.answer = v.answer as string;
  if (v.points !== undefined) p.points = v.points as PointPrompt[];
  if (v.box !== undefined) p.box = v.box as BoxPrompt;
  if (v.max_new_tokens !== undefined) p.maxNewTokens = v.max_new_tokens as number;
  if (v.multimask !== undefined) p.multimask = v.multimask as boolean;
  return p;
}
