import { appendFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { LisaError } from '../errors.js';
import { decodeImage, type RgbImage } from '../image/decode.js';
import { maskPng } from '../image/mask-png.js';
import { differingKeys } from '../io/settings.js';
import { writeAtomic } from '../io/file.js';
import { generatedMasks, teacherForcedMasks } from '../inference/pipeline.js';
import type { LisaModel } from '../models/lisa.js';
import { validationPrompt, type EvalItem } from './datasets.js';
import { intersectionAndUnion, IouMeter, pct, type IouSummary, type MaskStats } from './metrics.js';

export type Protocol = 'teacher-forced' | 'generate' | 'predictions';

/** One line of results.jsonl: a scored query, or an error that skipped it. */
export interface QueryRecord {
  item: string;
  id: string;
  text?: string;
  isSentence?: boolean;
  intersection?: [number, number];
  union?: [number, number];
  /** generate protocol: the answer had no [SEG] (scored as an empty prediction). */
  noSeg?: boolean;
  error?: string;
  ms?: number;
}

export interface EvalOptions {
  protocol: Protocol;
  outDir: string;
  limit?: number;
  maxNewTokens?: number;
  /** predictions protocol: folder with `<query id>.png` per query. */
  predictions?: string;
  /** Write each query's predicted mask as `<saveMasks>/<query id>.png` (0/255), so `--predictions` can score it again. */
  saveMasks?: string;
  onProgress?: (done: number, total: number, resumed: number) => void;
  /**
   * What defines the numbers (dataset, split, model, precision…), recorded in `<outDir>/run.json`: a folder holding
   * results made with other settings is refused instead of silently resumed (a teacher-forced run over generate
   * results reported gIoU 0.0).
   */
  settings?: Record<string, unknown>;
  /** Where masks come from (default: the model in this process); `lisa eval --queue` passes the workers. */
  predictor?: MaskPredictor;
}

/** A predicted 0/1 mask at the image's size; `noSeg`: the answer had no [SEG] (an empty prediction). */
export interface PredictedMask {
  mask: Uint8Array;
  noSeg: boolean;
}

/** Masks for an image's prompts, one per prompt (or its error): from the model here, or from queue workers. */
export interface MaskPredictor {
  predict(imagePath: string, image: RgbImage, prompts: string[]): Promise<(PredictedMask | { error: string })[]>;
  /** Images in flight at once. */
  readonly concurrency: number;
}

/** The official validation's masks from a model in this process: the image encoded once for all its prompts. */
export function modelPredictor(model: LisaModel, opts: Pick<EvalOptions, 'protocol' | 'maxNewTokens'>): MaskPredictor {
  return {
    concurrency: 1,
    async predict(_path, image, prompts) {
      const enc = await model.encodeImage(image);
      const out: (PredictedMask | { error: string })[] = [];
      for (const prompt of prompts) {
        try {
          const seg =
            opts.protocol === 'teacher-forced'
              ? await teacherForcedMasks(model, enc, prompt)
              : (await generatedMasks(model, enc, prompt, { maxNewTokens: opts.maxNewTokens ?? 512 })).seg;
          const noSeg = seg.predEmbeddings.length === 0;
          const hw = image.height * image.width;
          const logits = seg.predMasks.data as Float32Array;
          out.push({ mask: noSeg ? new Uint8Array(hw) : Uint8Array.from(logits.subarray(0, hw), (v) => (v > 0 ? 1 : 0)), noSeg });
        } catch (e) {
          if (!(e instanceof LisaError)) throw e;
          out.push({ error: e.message });
        }
      }
      return out;
    },
  };
}

export interface EvalReport {
  protocol: Protocol;
  queries: number;
  scored: number;
  errors: { id: string; error: string }[];
  noSeg: number;
  overall: IouSummary;
  short: IouSummary | null;
  long: IouSummary | null;
}

function readRecords(path: string): QueryRecord[] {
  if (!existsSync(path)) return [];
  const out: QueryRecord[] = [];
  for (const line of readFileSync(path, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    try {
      out.push(JSON.parse(line) as QueryRecord);
    } catch {
      /* a line cut by an interruption: that query is run again */
    }
  }
  return out;
}

/** A 0/1 mask as a single-channel 0/255 PNG, written atomically (what `--predictions` reads back). */
async function saveMask(path: string, mask: Uint8Array, w: number, h: number): Promise<void> {
  mkdirSync(dirname(path), { recursive: true });
  writeAtomic(path, [await maskPng(mask, w, h)]);
}

/** Non-zero pixels of a PNG as a 0/1 mask, checked against the image size. */
async function predictionMask(path: string, h: number, w: number): Promise<Uint8Array> {
  if (!existsSync(path)) throw new LisaError(`no prediction ${path}`);
  const m = await decodeImage(path);
  if (m.width !== w || m.height !== h) throw new LisaError(`prediction ${path} is ${m.width}x${m.height} but the image is ${w}x${h}`);
  return Uint8Array.from({ length: w * h }, (_, i) => (m.data[i * 3]! > 0 ? 1 : 0));
}

/**
 * Runs (or resumes) an evaluation: every query's intersection and union are appended to
 * `<outDir>/results.jsonl` as it finishes, so an interrupted run continues where it stopped; errors are
 * recorded per query and the run goes on. The report is computed from all records, grouped per image as
 * the official validation does.
 */
export async function runEval(model: LisaModel | null, items: EvalItem[], opts: EvalOptions): Promise<EvalReport> {
  mkdirSync(opts.outDir, { recursive: true });
  const resultsPath = join(opts.outDir, 'results.jsonl');
  const settings = {
    protocol: opts.protocol,
    ...(opts.maxNewTokens ? { maxNewTokens: opts.maxNewTokens } : {}),
    ...(opts.predictions ? { predictions: resolve(opts.predictions) } : {}),
    ...opts.settings,
  };
  const runPath = join(opts.outDir, 'run.json');
  if (existsSync(runPath)) {
    let before: Record<string, unknown> = {};
    try {
      before = JSON.parse(readFileSync(runPath, 'utf8')) as Record<string, unknown>;
    } catch {
      throw new LisaError(`${runPath}: not valid JSON; remove the folder or use another --out`);
    }
    const differ = differingKeys(before, settings);
    if (differ.length) {
      const now = settings as Record<string, unknown>;
      const changes = differ.map((k) => `${k}: ${JSON.stringify(before[k])} → ${JSON.stringify(now[k])}`).join(', ');
      throw new LisaError(
        `${opts.outDir}: holds results made with other settings (${changes}); use another --out to compare, or the same settings to resume`,
      );
    }
  } else if (existsSync(resultsPath)) {
    throw new LisaError(`${opts.outDir}: holds results.jsonl without run.json (made by an older version or by hand); use another --out`);
  }
  writeAtomic(runPath, [JSON.stringify(settings, null, 2) + '\n']);
  const previous = readRecords(resultsPath);
  // Drop a line cut by an interruption (it would swallow the next record) before appending again.
  if (existsSync(resultsPath)) writeAtomic(resultsPath, [previous.map((r) => JSON.stringify(r) + '\n').join('')]);
  const done = new Map(previous.map((r) => [r.id, r]));
  const selected = opts.limit !== undefined ? items.slice(0, opts.limit) : items;
  const total = selected.reduce((n, it) => n + Math.max(1, it.queries.length), 0);
  let count = 0;
  const resumed = selected.reduce(
    (n, it) => n + (it.queries.length ? it.queries.filter((q) => done.has(q.id)).length : done.has(it.id) ? 1 : 0),
    0,
  );
  const record = (r: QueryRecord): void => {
    appendFileSync(resultsPath, JSON.stringify(r) + '\n');
    done.set(r.id, r);
  };
  opts.onProgress?.(resumed, total, resumed);
  count = resumed;
  const predictor = opts.protocol === 'predictions' ? null : (opts.predictor ?? (model ? modelPredictor(model, opts) : null));
  const runItem = async (item: EvalItem): Promise<void> => {
    if (item.error || item.queries.length === 0) {
      if (!done.has(item.id)) {
        record({ item: item.id, id: item.id, error: item.error ?? 'no queries' });
        count++;
        opts.onProgress?.(count, total, resumed);
      }
      return;
    }
    const todo = item.queries.filter((q) => !done.has(q.id));
    if (todo.length === 0) return;
    let image: RgbImage;
    let preds: (PredictedMask | { error: string })[] = [];
    const t0 = performance.now();
    try {
      image = await decodeImage(item.image);
      if (predictor) preds = await predictor.predict(item.image, image, todo.map(validationPrompt));
    } catch (e) {
      if (!(e instanceof LisaError)) throw e;
      for (const q of todo) {
        record({ item: item.id, id: q.id, error: e.message });
        count++;
        opts.onProgress?.(count, total, resumed);
      }
      return;
    }
    const ms = Math.round((performance.now() - t0) / todo.length);
    for (const [i, q] of todo.entries()) {
      try {
        const gt = await q.gt(image.height, image.width);
        let pred: Uint8Array;
        let noSeg: boolean | undefined;
        if (!predictor) {
          pred = await predictionMask(join(opts.predictions!, `${q.id}.png`), image.height, image.width);
        } else {
          const p = preds[i]!;
          if ('error' in p) throw new LisaError(p.error);
          ({ mask: pred, noSeg } = p);
          if (opts.saveMasks) await saveMask(join(opts.saveMasks, `${q.id}.png`), pred, image.width, image.height);
        }
        const s = intersectionAndUnion(pred, gt);
        record({
          item: item.id,
          id: q.id,
          text: q.text,
          isSentence: q.isSentence,
          intersection: s.intersection,
          union: s.union,
          ...(noSeg !== undefined ? { noSeg } : {}),
          ms,
        });
      } catch (e) {
        if (!(e instanceof LisaError)) throw e;
        record({ item: item.id, id: q.id, error: e.message });
      }
      count++;
      opts.onProgress?.(count, total, resumed);
    }
  };
  // Items in flight at once: one in process; over a queue, enough to keep every worker busy. Records are appended
  // as they finish (in any order); the report is computed in item order, so the numbers do not depend on it.
  let next = 0;
  const lanes = Array.from({ length: Math.max(1, predictor?.concurrency ?? 1) }, async () => {
    while (next < selected.length) await runItem(selected[next++]!);
  });
  await Promise.all(lanes);
  const ids = new Set(selected.flatMap((it) => (it.queries.length ? it.queries.map((q) => q.id) : [it.id])));
  const records = [...done.values()].filter((r) => ids.has(r.id));
  const report = summarize(records, selected, opts.protocol);
  writeAtomic(join(opts.outDir, 'report.json'), [JSON.stringify(report, null, 2) + '\n']);
  writeAtomic(join(opts.outDir, 'report.md'), [markdownReport(report)]);
  return report;
}

/** Metrics from the records, in item order, per image as validate() groups them; also split short/long. */
export function summarize(records: QueryRecord[], items: EvalItem[], protocol: Protocol): EvalReport {
  const byId = new Map(records.map((r) => [r.id, r]));
  const meters = { overall: new IouMeter(), short: new IouMeter(), long: new IouMeter() };
  let shortN = 0,
    longN = 0,
    scored = 0,
    noSeg = 0;
  const errors: { id: string; error: string }[] = [];
  for (const item of items) {
    const groups: Record<'overall' | 'short' | 'long', MaskStats[]> = { overall: [], short: [], long: [] };
    const ids = item.queries.length ? item.queries.map((q) => q.id) : [item.id];
    for (const id of ids) {
      const r = byId.get(id);
      if (!r) continue;
      if (r.error || !r.intersection || !r.union) {
        errors.push({ id, error: r.error ?? 'no result' });
        continue;
      }
      const stats: MaskStats = { intersection: r.intersection, union: r.union, target: [0, 0] };
      groups.overall.push(stats);
      (r.isSentence ? groups.long : groups.short).push(stats);
      if (r.isSentence) longN++;
      else shortN++;
      scored++;
      if (r.noSeg) noSeg++;
    }
    for (const k of ['overall', 'short', 'long'] as const) meters[k].add(groups[k]);
  }
  return {
    protocol,
    queries: items.reduce((n, it) => n + Math.max(1, it.queries.length), 0),
    scored,
    errors,
    noSeg,
    overall: meters.overall.summary(),
    short: shortN ? meters.short.summary() : null,
    long: longN ? meters.long.summary() : null,
  };
}

export function markdownReport(r: EvalReport): string {
  const cell = (s: IouSummary | null): string => (s ? `${pct(s.giou)} | ${pct(s.ciou)}` : '– | –');
  const lines = [
    `Protocol: ${r.protocol}. Queries: ${r.queries}, scored: ${r.scored}, errors: ` +
      `${r.errors.length}${r.protocol === 'generate' ? `, answers without [SEG]: ${r.noSeg}` : ''}.`,
    '',
    '| | short gIoU | short cIoU | long gIoU | long cIoU | overall gIoU | overall cIoU |',
    '|---|---|---|---|---|---|---|',
    `| lisa-ts | ${cell(r.short)} | ${cell(r.long)} | ${cell(r.overall)} |`,
    '',
    `Raw sums (foreground): intersection ${r.overall.intersectionSum[1]}, union ${r.overall.unionSum[1]}, masks ` +
      `${r.overall.masks}, images ${r.overall.samples}.`,
  ];
  if (r.errors.length) lines.push('', 'Errors:', ...r.errors.slice(0, 50).map((e) => `- ${e.id}: ${e.error}`));
  return lines.join('\n') + '\n';
}
