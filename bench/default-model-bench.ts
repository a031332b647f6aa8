/**
 * `npm run bench -- --only default-model`: the shipped model's numbers (MODEL.md) on the COCO-80 validation set
 * (src/eval/coco80-val-set.ts: real photos of shared/data outside its training data), beside the no-learning
 * baseline on the same images in the same run:
 * - class-name queries (LISA's short template): gIoU / cIoU, model vs "class name → CenterNet boxes (score > 0.2)
 *   → MobileSAM box prompts → union";
 * - implicit queries about the same objects (never used in training): gIoU / cIoU;
 * - absent classes: share answered without [SEG], and the share of present-object questions refused;
 * - the class-name queries as the second question of a chat (after one about an absent class): gIoU;
 * - on this machine: first answer on a new photo, a follow-up question, and the package size.
 * The full report goes to bench/results-default-model-<date>.json (or --report FILE).
 */
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { buildCoco80ValSet } from '../src/eval/coco80-val-set.js';
import { loadDataset, type EvalItem } from '../src/eval/datasets.js';
import { intersectionAndUnion } from '../src/eval/metrics.js';
import { decodeImage } from '../src/image/decode.js';
import { Lisa } from '../src/inference/lisa.js';
import { masksForClasses } from '../src/inference/pipeline.js';
import type { Row } from './row.js';

const ROOT = resolve(import.meta.dirname, '..', '..');
const SHARED_DATA = resolve(ROOT, '..', 'shared', 'data');

/** The no-learning baseline's rule (the measurement): every detection of the class scoring over 0.2. */
export const BASELINE_RULE = { minScore: 0.2, relativeScore: 0, maxBoxes: 100, presenceThreshold: 0 };

interface Meter {
  iouSum: number;
  inter: number;
  union: number;
  n: number;
  refused: number;
}
const meter = (): Meter => ({ iouSum: 0, inter: 0, union: 0, n: 0, refused: 0 });
function add(m: Meter, pred: Uint8Array, gt: Uint8Array): number {
  const s = intersectionAndUnion(pred, gt);
  const iou = s.union[1] > 0 ? s.intersection[1] / s.union[1] : 1;
  m.iouSum += iou;
  m.inter += s.intersection[1];
  m.union += s.union[1];
  m.n++;
  return iou;
}
const summary = (m: Meter): { giou: number; ciou: number; queries: number; refused: number } => ({
  giou: m.iouSum / m.n,
  ciou: m.inter / m.union,
  queries: m.n,
  refused: m.refused,
});

const shortQuestion = (cls: string): string => `What is ${cls} in this image? Please output segmentation mask.`;
const longQuestion = (sent: string): string => `${sent} Please output segmentation mask.`;

/** The class an item of the set is about (its JSON's "class"). */
function classOf(dir: string, item: EvalItem): string {
  const j = JSON.parse(readFileSync(join(dir, `${item.id}.json`), 'utf8')) as { class?: string };
  if (!j.class) throw new Error(`${item.id}: no class`);
  return j.class;
}

export async function defaultModelBench(opts: { modelDir?: string; report?: string; threads?: number } = {}): Promise<Row[]> {
  const work = mkdtempSync(join(tmpdir(), 'lisa-coco80-val-'));
  try {
    const set = await buildCoco80ValSet(SHARED_DATA, work);
    const lisa = Lisa.load(opts.modelDir, { ...(opts.threads ? { threads: opts.threads } : {}) });
    const model = lisa.model;
    const classes = model.config.towers!.vision.classes;
    const perQuery: Record<string, unknown>[] = [];
    const m = { model: meter(), baseline: meter(), implicit: meter() };
    for (const kind of ['class', 'implicit'] as const) {
      for (const item of loadDataset('reasonseg', join(work, kind), 'val').items) {
        const image = await decodeImage(item.image);
        const cls = classOf(join(work, kind, 'val'), item);
        const q = item.queries[0]!;
        const gt = await q.gt(image.height, image.width);
        const r = await lisa.segment(image, kind === 'class' ? shortQuestion(q.text) : longQuestion(q.text));
        const hw = image.height * image.width;
        const pred = r.masks[0] ? r.masks[0].mask : new Uint8Array(hw);
        const mm = kind === 'class' ? m.model : m.implicit;
        if (!r.masks[0]) mm.refused++;
        const iou = add(mm, pred, gt);
        const row: Record<string, unknown> = { kind, item: item.id, class: cls, text: r.text, iou };
        if (kind === 'class') {
          const enc = (await lisa.images.get(image)).image.encoding;
          const probs = new Float32Array(classes.length);
          probs[classes.indexOf(cls)] = 1;
          const base = await masksForClasses(model, enc, [probs], { ...BASELINE_RULE }, false, false);
          row.baseline_iou = add(
            m.baseline,
            Uint8Array.from(base.predMasks.data as Float32Array, (v) => (v > 0 ? 1 : 0)),
            gt,
          );
        }
        perQuery.push(row);
      }
    }
    let absentNoSeg = 0,
      absentN = 0;
    for (const item of loadDataset('reasonseg', join(work, 'absent'), 'val').items) {
      const image = await decodeImage(item.image);
      const r = await lisa.segment(image, shortQuestion(item.queries[0]!.text));
      absentN++;
      if (r.masks.length === 0) absentNoSeg++;
      perQuery.push({ kind: 'absent', item: item.id, class: item.queries[0]!.text, text: r.text, no_seg: r.masks.length === 0 });
    }
    // Multi-turn: each class-name query again, now as the second question of a chat whose first asked about a class
    // the same photo lacks (the absent set's, by photo): a follow-up must be answered as a first question is.
    const absentOf = new Map<string, string>();
    for (const item of loadDataset('reasonseg', join(work, 'absent'), 'val').items) {
      const k = item.id.lastIndexOf('_no_');
      if (!absentOf.has(item.id.slice(0, k))) absentOf.set(item.id.slice(0, k), item.queries[0]!.text);
    }
    const followUp = meter();
    for (const item of loadDataset('reasonseg', join(work, 'class'), 'val').items) {
      const cls = classOf(join(work, 'class', 'val'), item);
      const first = absentOf.get(item.id.slice(0, item.id.length - cls.length - 1));
      if (!first) continue;
      const image = await decodeImage(item.image);
      const gt = await item.queries[0]!.gt(image.height, image.width);
      const chat = lisa.chat();
      await chat.setImage(image);
      const a = await chat.ask(shortQuestion(first));
      const b = await chat.ask(shortQuestion(cls));
      if (!b.masks[0]) followUp.refused++;
      const iou = add(followUp, b.masks[0]?.mask ?? new Uint8Array(image.height * image.width), gt);
      perQuery.push({ kind: 'follow-up', item: item.id, class: cls, first: first, first_text: a.text, text: b.text, iou });
    }
    // Latency on 2 cores: a new 640-px photo (LISA's wash_hands demo, resized), then a follow-up in the same chat.
    const photo = await decodeImage(join(SHARED_DATA, 'lisa_demo', 'imgs', 'wash_hands.jpg'));
    const sharp = (await import('sharp')).default;
    const w = 640,
      h = Math.round((photo.height * 640) / photo.width);
    const px = await sharp(photo.data, { raw: { width: photo.width, height: photo.height, channels: 3 } })
      .resize(w, h)
      .raw()
      .toBuffer();
    const fresh = { width: w, height: h, data: new Uint8Array(px) };
    const chat = lisa.chat();
    const t0 = performance.now();
    await chat.setImage(fresh);
    const first = await chat.ask('Where can I wash my hands? Please output segmentation mask.');
    const firstMs = performance.now() - t0;
    const t1 = performance.now();
    const follow = await chat.ask('What is sink in this image? Please output segmentation mask.');
    const followMs = performance.now() - t1;
    await lisa.close();
    const pack = JSON.parse(execFileSync('npm', ['pack', '--dry-run', '--json', '--ignore-scripts'], { cwd: ROOT, encoding: 'utf8' })) as {
      size: number;
      unpackedSize: number;
    }[];
    const modelBytes = Number(execFileSync('du', ['-sb', model.dir], { encoding: 'utf8' }).split('\t')[0]);
    const result = {
      machine: 'this machine (see bench header)',
      set: { objects: set.objects, absent: set.absent },
      class_queries: { model: summary(m.model), baseline: summary(m.baseline) },
      implicit_queries: summary(m.implicit),
      follow_up_class_queries: summary(followUp),
      absent: { questions: absentN, answered_without_seg: absentNoSeg, n_acc: absentNoSeg / absentN },
      present_refused: (m.model.refused + m.implicit.refused) / (m.model.n + m.implicit.n),
      latency: { first_answer_ms: firstMs, first_text: first.text, follow_up_ms: followMs, follow_up_text: follow.text },
      package: { tarball_bytes: pack[0]!.size, unpacked_bytes: pack[0]!.unpackedSize, model_folder_bytes: modelBytes },
      queries: perQuery,
    };
    const report = opts.report ?? join(ROOT, 'bench', `results-default-model-${new Date().toISOString().slice(0, 10)}.json`);
    writeFileSync(report, `${JSON.stringify(result, null, 2)}\n`);
    const row = (name: string, value: number, unit: string, baseline: string, base: number | null, note?: string): Row => ({
      name,
      seconds: 0,
      baseline,
      baseline_seconds: null,
      ratio: base !== null && base > 0 ? value / base : null,
      unit,
      value,
      limit: null,
      ...(note ? { note } : {}),
    });
    const cq = result.class_queries;
    return [
      row('default-model class gIoU', cq.model.giou, 'gIoU', `no-learning baseline gIoU ${cq.baseline.giou.toFixed(3)}`, cq.baseline.giou),
      row('default-model class cIoU', cq.model.ciou, 'cIoU', `no-learning baseline cIoU ${cq.baseline.ciou.toFixed(3)}`, cq.baseline.ciou),
      row('default-model implicit gIoU', result.implicit_queries.giou, 'gIoU', 'goal 0.50', 0.5),
      row(
        'default-model follow-up gIoU',
        result.follow_up_class_queries.giou,
        'gIoU',
        `class names asked second in a chat; first-question gIoU ${cq.model.giou.toFixed(3)}`,
        cq.model.giou,
      ),
      row('default-model absent N-acc', result.absent.n_acc, 'share', 'goal 0.80', 0.8),
      row('default-model present refused', result.present_refused, 'share', 'goal at most 0.10', 0.1),
      { ...row('default-model first answer', firstMs / 1000, 's', 'goal 2 s on 2 cores', 2), seconds: firstMs / 1000 },
      { ...row('default-model follow-up', followMs / 1000, 's', 'goal 0.5 s on 2 cores', 0.5), seconds: followMs / 1000 },
      row(
        'default-model model folder',
        modelBytes / 1e6,
        'MB',
        `goal 60 MB; package tarball ${(pack[0]!.size / 1e6).toFixed(1)} MB with onnxruntime-node bundled`,
        60,
      ),
    ];
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}
