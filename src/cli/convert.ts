import { quantTag } from '../graph/quantize.js';
import type { Command } from 'commander';
import cliProgress from 'cli-progress';
import { LisaModel, type Precision } from '../models/lisa.js';
import { defaultModelDir } from '../models/default-model.js';
import { checkCacheDir, loadOptions, modelOptions, type ModelCliOptions } from './common.js';

export function registerConvert(program: Command): void {
  modelOptions(program.command('convert'), { modelRequired: false })
    .description('build every graph and convert every weight (bf16 → fp32, int4/int8 quantisation) into the cache ahead of time')
    .action((o: ModelCliOptions & { precision: Precision }) => {
      const bar = process.stderr.isTTY
        ? new cliProgress.SingleBar(
            { format: '{graph} [{bar}] {value}/{total} weights', hideCursor: true },
            cliProgress.Presets.shades_classic,
          )
        : null;
      let current = '';
      checkCacheDir(o);
      const model = LisaModel.load(o.model ?? defaultModelDir(), {
        ...loadOptions(o),
        onWrite: (graph, done, total) => {
          if (bar) {
            if (graph !== current) {
              bar.stop();
              bar.start(total, done, { graph });
              current = graph;
            }
            bar.update(done);
          } else if (done === total) process.stderr.write(`${graph}: ${total} weights converted\n`);
        },
      });
      try {
        const t = Date.now();
        const out = model.compileAll((name, i, n) => {
          if (!bar) process.stderr.write(`[${i + 1}/${n}] ${name}\n`);
        });
        bar?.stop();
        for (const g of out) process.stdout.write(`${g.name.padEnd(18)} ${g.cached ? 'already in the cache' : 'converted'}  ${g.dir}\n`);
        const format = model.llm.quant ? ` (${quantTag(model.llm.quant)})` : '';
        process.stdout.write(`LLM precision ${model.precision}${format}; ${((Date.now() - t) / 1000).toFixed(1)} s\n`);
      } finally {
        bar?.stop();
        model.close();
      }
    });
}
