import type { Command } from 'commander';
import { LisaError } from '../errors.js';
import { decodeImage } from '../image/decode.js';
import { dumpIntermediates, isDumpFolder } from '../inference/dump.js';
import { checkOutputDir } from '../io/file.js';
import { clearProgress, loadModel, modelOptions, parseIntArg, type ModelCliOptions } from './common.js';

interface DumpCliOptions extends ModelCliOptions {
  image: string;
  query: string;
  out: string;
  maxNewTokens?: number;
  forceSegAt?: string;
  answer?: string;
  gtMask?: string;
}

function parseIndexes(s: string): number[] {
  return s.split(',').map((x) => {
    const n = Number(x.trim());
    if (!Number.isInteger(n) || n < 0)
      throw new LisaError(`--force-seg-at takes 0-based new-token indexes separated by commas, got "${s}"`);
    return n;
  });
}

export function registerDump(program: Command): void {
  modelOptions(program.command('dump'))
    .description('run the official code paths and write every intermediate (.npy) plus manifest.json, named as the parity fixtures')
    .requiredOption('--image <file>', 'input image (JPEG, PNG or WebP)')
    .requiredOption('--query <text>', 'the question')
    .requiredOption('--out <dir>', 'output folder: new, empty, or an earlier dump (replaced)')
    .option('--max-new-tokens <n>', 'generated tokens at most (default 512, as chat.py)', parseIntArg('--max-new-tokens', 1))
    .option('--force-seg-at <k,...>', 'also generate with [SEG] forced at these 0-based new-token indexes (forced_* arrays)')
    .option('--answer <text>', 'teacher-forced answer containing [SEG] for the training-style forward (train_* arrays)')
    .option('--gt-mask <png,...>', 'ground-truth mask PNG(s), one per [SEG] in --answer (non-zero = object); adds the losses')
    .action(async (o: DumpCliOptions) => {
      if (!o.query.trim()) throw new LisaError('--query must not be empty');
      if (o.gtMask && o.answer === undefined) throw new LisaError('--gt-mask needs --answer');
      checkOutputDir(o.out, '--out', { mustBeEmpty: true, ownOutput: isDumpFolder });
      const image = await decodeImage(o.image);
      const gtMasks: Uint8Array[] = [];
      for (const p of o.gtMask ? o.gtMask.split(',') : []) {
        const m = await decodeImage(p.trim());
        if (m.width !== image.width || m.height !== image.height)
          throw new LisaError(`${p}: mask is ${m.width}x${m.height} but the image is ${image.width}x${image.height}`);
        gtMasks.push(Uint8Array.from({ length: m.width * m.height }, (_, i) => (m.data[i * 3]! > 0 ? 1 : 0)));
      }
      const model = loadModel(o);
      try {
        const manifest = await dumpIntermediates(model, image, o.out, {
          question: o.query,
          ...(o.maxNewTokens ? { maxNewTokens: o.maxNewTokens } : {}),
          ...(o.forceSegAt ? { forceSegAt: parseIndexes(o.forceSegAt) } : {}),
          ...(o.answer !== undefined ? { answer: o.answer, gtMasks } : {}),
        });
        clearProgress();
        process.stdout.write(
          `${manifest.text_output as string}\n${Object.keys(manifest.arrays as object).length} arrays written to ${o.out}\n`,
        );
      } finally {
        await model.release();
        model.close();
      }
    });
}
