import { readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import cliProgress from 'cli-progress';
import type { Command } from 'commander';
import { LisaError } from '../errors.js';
import { decodeImage, type RgbImage } from '../image/decode.js';
import { checkPrompts, type SegmentOptions, type SegmentResult } from '../inference/chat.js';
import { Lisa } from '../inference/lisa.js';
import { checkOutputDir } from '../io/file.js';
import type { BoxPrompt, PointPrompt } from '../models/sam/prompt-encoder.js';
import { checkCacheDir, clearProgress, endProgress, loadOptions, modelOptions, parseIntArg, type ModelCliOptions } from './common.js';
import { describeMask, resultJson, resultName, writeResult } from './output.js';
import { defaultModelDir } from '../models/default-model.js';
import { parseBox, parsePoint } from './prompts.js';

interface SegmentCliOptions extends ModelCliOptions {
  image: string[];
  query?: string;
  out?: string;
  json?: boolean;
  answer?: string;
  maxNewTokens?: number;
  point?: PointPrompt[];
  box?: BoxPrompt;
}

export function registerSegment(program: Command): void {
  modelOptions(program.command('segment'), { modelRequired: false })
    .description('answer a question about an image and write one mask per [SEG] (PNG), an overlay and a JSON summary')
    .requiredOption(
      '--image <file...>',
      'input image (JPEG, PNG or WebP); several files or a folder run as a batch in one process (--out gets one result set per image)',
    )
    .option('--query <text>', 'the question (may be omitted with --point/--box: plain SAM)')
    .option('--out <dir>', 'write <name>_mask_<i>.png, <name>_overlay.png and <name>.json here')
    .option('--json', 'print the JSON summary to stdout instead of prose')
    .option('--answer <text>', 'teacher forcing: use this answer (with [SEG]) instead of generating')
    .option('--max-new-tokens <n>', 'generated tokens at most (default 512)', parseIntArg('--max-new-tokens', 1))
    .option('--point <x,y[,label]>', 'SAM point prompt in image pixels (label 1 foreground, 0 background); repeatable', parsePoint)
    .option('--box <x1,y1,x2,y2>', 'SAM box prompt in image pixels', parseBox)
    .action(async (o: SegmentCliOptions) => {
      o.model ??= defaultModelDir();
      const question = o.query ?? '';
      if (!question.trim() && !o.point && !o.box) throw new LisaError('--query must not be empty (or give --point/--box for SAM prompts)');
      if (o.answer !== undefined && !question.trim()) throw new LisaError('--answer needs --query');
      if (o.out) checkOutputDir(o.out, '--out');
      checkCacheDir(o);
      const paths = expandImages(o.image);
      if (paths.length > 1) {
        await segmentBatch(o, paths, question);
        return;
      }
      const imagePath = paths[0]!;
      const image = await decodeImage(imagePath);
      // SAM prompts must lie on the image: checked before anything is encoded.
      checkCliPrompts(o, image.width, image.height);
      // One image per run: the vision sessions are closed once it is encoded, before the LLM opens.
      const lisa = Lisa.load(o.model, { ...loadOptions(o), keepVisionSessions: false });
      try {
        const streaming = !o.json && process.stdout.isTTY && o.answer === undefined && question.trim() !== '';
        const r = await lisa.segment(image, question, {
          ...segmentOptions(o),
          ...(streaming
            ? {
                onText: (d: string) => {
                  endProgress();
                  process.stdout.write(d);
                },
              }
            : {}),
        });
        clearProgress();
        const name = resultName(imagePath);
        const json = jsonFor(o, r, imagePath, image, question, name);
        const written = o.out ? await writeResult(o.out, name, image, r, json) : [];
        if (o.json) {
          process.stdout.write(JSON.stringify(json, null, 2) + '\n');
          return;
        }
        if (!streaming) process.stdout.write(r.text);
        process.stdout.write('\n');
        if (r.noTarget && question.trim()) process.stdout.write('(no [SEG] in the answer: nothing segmented)\n');
        r.masks.forEach((m, i) => process.stdout.write(`${describeMask(m, i)}\n`));
        for (const p of written) process.stdout.write(`wrote ${p}\n`);
        process.stdout.write(
          `${(r.timings.totalMs / 1000).toFixed(2)} s (image ${(r.timings.encodeImageMs / 1000).toFixed(2)} s, ` +
            `${r.timings.newTokens} tokens)\n`,
        );
      } finally {
        await lisa.close();
      }
    });
}

/** The library options a segment run's flags give (one image or a batch alike). */
function segmentOptions(o: SegmentCliOptions): SegmentOptions {
  return {
    ...(o.maxNewTokens ? { maxNewTokens: o.maxNewTokens } : {}),
    ...(o.answer !== undefined ? { answer: o.answer } : {}),
    ...(o.point ? { points: o.point } : {}),
    ...(o.box ? { box: o.box } : {}),
  };
}

function jsonFor(
  o: SegmentCliOptions,
  r: SegmentResult,
  image: string,
  rgb: RgbImage,
  question: string,
  name: string,
): Record<string, unknown> {
  return resultJson(r, { image, width: rgb.width, height: rgb.height, question, model: o.model!, name, written: Boolean(o.out) });
}

/** The --image arguments: files as given, a folder as its JPEG/PNG/WebP files in name order. */
function expandImages(args: readonly string[]): string[] {
  const out: string[] = [];
  for (const a of args) {
    let st;
    try {
      st = statSync(a);
    } catch {
      throw new LisaError(`${a}: no such image file or folder`);
    }
    if (!st.isDirectory()) {
      out.push(a);
      continue;
    }
    const files = readdirSync(a)
      .filter((f) => /\.(jpe?g|png|webp)$/i.test(f))
      .sort()
      .map((f) => join(a, f));
    if (files.length === 0) throw new LisaError(`${a}: the folder holds no JPEG, PNG or WebP image`);
    out.push(...files);
  }
  return out;
}

function checkCliPrompts(o: SegmentCliOptions, w: number, h: number): void {
  checkPrompts(o.point ?? [], o.box, w, h, { point: '--point', box: '--box' });
}

/**
 * Several images in one process: the model loads once and the vision sessions stay open; each image gets its own
 * result files (names made unique when two images share a stem), a failing image is reported and the rest go on.
 */
async function segmentBatch(o: SegmentCliOptions, paths: readonly string[], question: string): Promise<void> {
  const lisa = Lisa.load(o.model ?? defaultModelDir(), loadOptions(o));
  const bar =
    process.stderr.isTTY && !o.json
      ? new cliProgress.SingleBar(
          { format: 'segment [{bar}] {value}/{total} images | ETA {eta_formatted}', hideCursor: true },
          cliProgress.Presets.shades_classic,
        )
      : null;
  const used = new Set<string>();
  const failed: string[] = [];
  const results: Record<string, unknown>[] = [];
  let masks = 0;
  try {
    clearProgress();
    bar?.start(paths.length, 0);
    for (const path of paths) {
      try {
        const image = await decodeImage(path);
        checkCliPrompts(o, image.width, image.height);
        const r = await lisa.segment(image, question, {
          ...segmentOptions(o),
        });
        let name = resultName(path);
        for (let k = 2; used.has(name); k++) name = `${resultName(path)}_${k}`;
        used.add(name);
        const json = jsonFor(o, r, path, image, question, name);
        if (o.out) await writeResult(o.out, name, image, r, json);
        results.push(json);
        masks += r.masks.length;
        if (!o.json && !bar)
          process.stdout.write(
            `${path}: ${r.text.replace(/\s+/g, ' ').trim()} (${r.masks.length} mask${r.masks.length === 1 ? '' : 's'})\n`,
          );
      } catch (e) {
        if (!(e instanceof LisaError)) throw e;
        failed.push(`${path}: ${e.message}`);
      }
      bar?.increment();
    }
    bar?.stop();
    if (o.json) process.stdout.write(JSON.stringify(results, null, 2) + '\n');
    for (const f of failed) process.stderr.write(`lisa: ${f}\n`);
    process.stdout.write(
      `${paths.length - failed.length} of ${paths.length} images segmented, ${masks} masks${o.out ? `, results in ${o.out}` : ''}\n`,
    );
    if (failed.length) throw new LisaError(`${failed.length} of ${paths.length} images failed (listed above)`);
  } finally {
    bar?.stop();
    await lisa.close();
  }
}
