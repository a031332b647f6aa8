import type { Command } from 'commander';
import cliProgress from 'cli-progress';
import { LisaModel, type Precision } from '../models/lisa.js';
import { loadOptions, parseIntArg, type ModelCliOptions } from './common.js';

export function registerConvert(program: Command): void {
  program
    .command('convert')
    .description('build every graph and convert every weight (bf16 → fp32, int4/int8 quantisation) into the cache ahead of time')
    .requiredOption('--model <dir>', 'LISA checkpoint folder')
    .option('--vision-tower <dir>', 'CLIP vision tower folder')
    .option('--precision <p>', 'LLM linear layers: auto (int4 above 1B parameters), fp32, int8 or int4', 'auto')
    .option('--threads <n>', 'onnxruntime threads', parseIntArg('--threads', 1))
    .option('--cache-dir <dir>', 'cache folder (default $LISA_CACHE or ~/.cache/lisa-ts)')
    .option('--sam-precision <p>', 'SAM image encoder Linear layers: fp32 or int8', 'fp32')
    .action((o: ModelCliOptions & { precision: Precision }) => {
      const bar = process.stderr.isTTY ? new cliProgress.SingleBar({ format: '{graph} [{bar}] {value}/{total} weights', hideCursor: true }, cliProgress.Presets.shades_classic) : null;
      let current = '';
      const model = LisaModel.load(o.model, {
        ...loadOptions(o),
        onWrite: (graph, done, total) => {
          if (bar) { if (graph !== current) { bar.stop(); bar.start(total, done, { graph }); current = graph; } bar.update(done); }
          else if (done === total) process.stderr.write(`${graph}: ${total} weights converted\n`);
        },
      });
      try {
        const t = Date.now();
        const out = model.compileAll((name, i, n) => { if (!bar) process.stderr.write(`[${i + 1}/${n}] ${name}\n`); });
        bar?.stop();
        for (const g of out) process.stdout.write(`${g.name.padEnd(18)} ${g.cached ? 'already in the cache' : 'converted'}  ${g.dir}\n`);
        process.stdout.write(`LLM precision ${model.precision}; ${((Date.now() - t) / 1000).toFixed(1)} s\n`);
      } finally {
        bar?.stop();
        model.close();
      }
    });
}
