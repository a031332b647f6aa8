import { InvalidArgumentError, type Command } from 'commander';
import { LisaModel } from '../models/lisa.js';

export interface ModelCliOptions { model: string; visionTower?: string; threads?: number; cacheDir?: string; precision?: 'auto' | 'fp32' | 'int8' | 'int4' }

export function parseIntArg(name: string, min = 0): (v: string) => number {
  return (v: string) => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < min) throw new InvalidArgumentError(`${name} must be an integer >= ${min}, got "${v}"`);
    return n;
  };
}

/** --model, --vision-tower, --threads, --cache-dir: shared by every command that runs the model. */
export function modelOptions(cmd: Command): Command {
  return cmd
    .requiredOption('--model <dir>', 'LISA checkpoint folder (released layout: config.json, weights, tokenizer)')
    .option('--vision-tower <dir>', 'CLIP vision tower folder (openai/clip-vit-large-patch14 layout); default: found from config.json beside the model')
    .option('--threads <n>', 'onnxruntime threads (default: all cores)', parseIntArg('--threads', 1))
    .option('--cache-dir <dir>', 'compiled-graph cache (default: $LISA_CACHE or ~/.cache/lisa-ts)')
    .option('--precision <p>', 'LLM linear layers: auto (int4 above 1B parameters), fp32, int8 or int4', 'auto');
}

export function loadModel(o: ModelCliOptions): LisaModel {
  return LisaModel.load(o.model, {
    ...(o.visionTower ? { visionTower: o.visionTower } : {}),
    ...(o.threads ? { threads: o.threads } : {}),
    ...(o.cacheDir ? { cacheDir: o.cacheDir } : {}),
    ...(o.precision ? { precision: o.precision } : {}),
    onProgress: process.stderr.isTTY ? (s) => process.stderr.write(`\r\x1b[K${s}…`) : undefined,
  });
}

export function clearProgress(): void {
  if (process.stderr.isTTY) process.stderr.write('\r\x1b[K');
}
