import type { Command } from 'commander';
import { LisaError } from '../errors.js';
import { decodeImage } from '../image/decode.js';
import { Lisa } from '../inference/lisa.js';
import { checkOutputDir } from '../io/file.js';
import type { BoxPrompt, PointPrompt } from '../models/sam/prompt-encoder.js';
import { checkCacheDir, clearProgress, endProgress, loadOptions, modelOptions, parseIntArg, type ModelCliOptions } from './common.js';
import { resultJson, resultName, writeResult } from './output.js';
import { parseBox, parsePoint } from './prompts.js';

interface SegmentCliOptions extends ModelCliOptions { image: string; query?: string; out?: string; json?: boolean; answer?: string; maxNewTokens?: number; point?: PointPrompt[]; box?: BoxPrompt }

export function registerSegment(program: Command): void {
  modelOptions(program.command('segment'))
    .description('answer a question about an image and write one mask per [SEG] (PNG), an overlay and a JSON summary')
    .requiredOption('--image <file>', 'input image (JPEG, PNG or WebP)')
    .option('--query <text>', 'the question (may be omitted with --point/--box: plain SAM)')
    .option('--out <dir>', 'write <name>_mask_<i>.png, <name>_overlay.png and <name>.json here')
    .option('--json', 'print the JSON summary to stdout instead of prose')
    .option('--answer <text>', 'teacher forcing: use this answer (with [SEG]) instead of generating')
    .option('--max-new-tokens <n>', 'generated tokens at most (default 512)', parseIntArg('--max-new-tokens', 1))
    .option('--point <x,y[,label]>', 'SAM point prompt in image pixels (label 1 foreground, 0 background); repeatable', parsePoint)
    .option('--box <x1,y1,x2,y2>', 'SAM box prompt in image pixels', parseBox)
    .action(async (o: SegmentCliOptions) => {
      const question = o.query ?? '';
      if (!question.trim() && !o.point && !o.box) throw new LisaError('--query must not be empty (or give --point/--box for SAM prompts)');
      if (o.answer !== undefined && !question.trim()) throw new LisaError('--answer needs --query');
      if (o.out) checkOutputDir(o.out, '--out');
      checkCacheDir(o);
      const image = await decodeImage(o.image);
      // SAM prompts must lie on the image: checked before anything is encoded.
      for (const p of o.point ?? []) if (!(p.x >= 0 && p.x < image.width && p.y >= 0 && p.y < image.height)) throw new LisaError(`--point ${p.x},${p.y} is outside the ${image.width}x${image.height} image`);
      if (o.box && !(o.box.x1 >= 0 && o.box.y1 >= 0 && o.box.x2 <= image.width && o.box.y2 <= image.height)) throw new LisaError(`--box ${o.box.x1},${o.box.y1},${o.box.x2},${o.box.y2} is outside the ${image.width}x${image.height} image`);
      // One image per run: the vision sessions are closed once it is encoded, before the LLM opens.
      const lisa = Lisa.load(o.model, { ...loadOptions(o), keepVisionSessions: false });
      try {
        const streaming = !o.json && process.stdout.isTTY && o.answer === undefined && question.trim() !== '';
        const r = await lisa.segment(image, question, {
          ...(o.maxNewTokens ? { maxNewTokens: o.maxNewTokens } : {}),
          ...(o.answer !== undefined ? { answer: o.answer } : {}),
          ...(o.point ? { points: o.point } : {}),
          ...(o.box ? { box: o.box } : {}),
          ...(streaming ? { onText: (d: string) => { endProgress(); process.stdout.write(d); } } : {}),
        });
        clearProgress();
        const name = resultName(o.image);
        const json = resultJson(r, { image: o.image, width: image.width, height: image.height, question, model: o.model, name, written: Boolean(o.out) });
        const written = o.out ? await writeResult(o.out, name, image, r, json) : [];
        if (o.json) { process.stdout.write(JSON.stringify(json, null, 2) + '\n'); return; }
        if (!streaming) process.stdout.write(r.text);
        process.stdout.write('\n');
        if (r.noTarget && question.trim()) process.stdout.write('(no [SEG] in the answer: nothing segmented)\n');
        r.masks.forEach((m, i) => process.stdout.write(`mask ${i}: area ${m.area} px, bbox [${m.bbox.join(', ')}], score ${m.score.toFixed(3)}\n`));
        for (const p of written) process.stdout.write(`wrote ${p}\n`);
        process.stdout.write(`${(r.timings.totalMs / 1000).toFixed(2)} s (image ${(r.timings.encodeImageMs / 1000).toFixed(2)} s, ${r.timings.newTokens} tokens)\n`);
      } finally {
        await lisa.close();
      }
    });
}
