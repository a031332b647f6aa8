import { existsSync } from 'node:fs';
import { resolve } from 'node:path';
import { Option, type Command } from 'commander';
import cliProgress from 'cli-progress';
import { LisaError } from '../errors.js';
import { DATASETS, loadDataset } from '../eval/datasets.js';
import { runEval, type Protocol } from '../eval/runner.js';
import { buildSanitySet } from '../eval/sanity-set.js';
import { pct } from '../eval/metrics.js';
import { checkOutputDir } from '../io/file.js';
import { queuePredictor } from '../scale/eval-predictor.js';
import { defaultModelDir } from '../models/default-model.js';
import { loadModel, modelOptions, parseIntArg, type ModelCliOptions } from './common.js';

interface EvalCliOptions extends Partial<ModelCliOptions> {
  data: string;
  dataset: string;
  split: string;
  protocol: string;
  limit?: number;
  out: string;
  predictions?: string;
  saveMasks?: string;
  maxNewTokens?: number;
  queue?: string;
  inFlight: number;
}

export function registerEval(program: Command): void {
  modelOptions(program.command('eval'), {
    modelRequired: false,
    modelHelp: 'LISA checkpoint folder (default: the shipped lisa-coco80; not needed with --predictions)',
  })
    .description('evaluate on ReasonSeg / refCOCO(+/g) / gRefCOCO with the official metrics (gIoU, cIoU); resumable')
    .requiredOption('--data <dir>', 'dataset root (ReasonSeg: folder with <split>/; refer: folder with <dataset>/ and images/)')
    .addOption(new Option('--dataset <name>', 'the benchmark').choices([...DATASETS]).makeOptionMandatory())
    .option('--split <name>', 'split (ReasonSeg: val/test/train; refcoco(+): val/testA/testB; refcocog: val/test)', 'val')
    .addOption(
      new Option('--protocol <p>', 'teacher-forced (the official validate) or generate (chat template + greedy)')
        .choices(['teacher-forced', 'generate'])
        .default('teacher-forced'),
    )
    .option('--limit <n>', 'only the first N images', parseIntArg('--limit', 1))
    .option('--out <dir>', 'results.jsonl (appended per query; rerun to resume), report.json, report.md', 'eval-out')
    .option('--predictions <dir>', 'score masks another model wrote: <query id>.png per query (non-zero = object)')
    .option('--save-masks <dir>', 'also write each predicted mask as <dir>/<query id>.png, to score again with --predictions')
    .option('--max-new-tokens <n>', 'generate protocol: tokens per answer (default 512)', parseIntArg('--max-new-tokens', 1))
    .option('--queue <url>', 'run the queries on `lisa worker`s through this Redis (redis://HOST:PORT); same results.jsonl and report')
    .option(
      '--in-flight <n>',
      'with --queue: images submitted at once (keep it above the number of workers)',
      parseIntArg('--in-flight', 1, 10_000),
      8,
    )
    .action(async (o: EvalCliOptions) => {
      const protocol: Protocol = o.predictions ? 'predictions' : (o.protocol as Protocol);
      if (o.queue && o.predictions) throw new LisaError('--queue and --predictions: scoring existing masks needs no workers', 2);
      if (o.queue && o.model) throw new LisaError('--model and --queue: give one (with --queue, the workers load the model)', 2);
      if (!o.predictions && !o.queue) o.model ??= defaultModelDir();
      checkOutputDir(o.out, '--out');
      if (o.saveMasks) checkOutputDir(o.saveMasks, '--save-masks');
      if (o.predictions && !existsSync(o.predictions)) throw new LisaError(`--predictions ${o.predictions}: no such folder`);
      const { items } = loadDataset(o.dataset, o.data, o.split);
      const model = o.model && !o.predictions ? loadModel(o as ModelCliOptions) : null;
      const predictor = o.queue
        ? queuePredictor(o.queue, {
            protocol: protocol as 'teacher-forced' | 'generate',
            ...(o.maxNewTokens ? { maxNewTokens: o.maxNewTokens } : {}),
            concurrency: o.inFlight,
          })
        : null;
      const bar = process.stderr.isTTY
        ? new cliProgress.SingleBar(
            { format: 'eval [{bar}] {value}/{total} queries | {rate}/s | ETA {eta_formatted}', hideCursor: true },
            cliProgress.Presets.shades_classic,
          )
        : null;
      const started = Date.now();
      let lastLog = 0;
      try {
        const report = await runEval(model, items, {
          protocol,
          outDir: o.out,
          ...(o.limit ? { limit: o.limit } : {}),
          ...(o.maxNewTokens ? { maxNewTokens: o.maxNewTokens } : {}),
          ...(o.predictions ? { predictions: o.predictions } : {}),
          ...(o.saveMasks ? { saveMasks: o.saveMasks } : {}),
          ...(predictor ? { predictor } : {}),
          settings: {
            dataset: o.dataset,
            split: o.split,
            data: resolve(o.data),
            ...(model
              ? { model: resolve(o.model!), precision: model.precision, ...(o.visionTower ? { visionTower: resolve(o.visionTower) } : {}) }
              : {}),
            // The workers' model is theirs to name; the queue is recorded so a resume uses the same one.
            ...(o.queue ? { queue: new URL(o.queue).host } : {}),
          },
          onProgress: (done, total, resumed) => {
            const rate = (done - resumed) / Math.max((Date.now() - started) / 1000, 1e-3);
            if (bar) {
              if (done === resumed) bar.start(total, done, { rate: '0.00' });
              bar.update(done, { rate: rate.toFixed(2) });
            } else if (Date.now() - lastLog > 5000 || done === total) {
              lastLog = Date.now();
              const eta = rate > 0 ? Math.round((total - done) / rate) : 0;
              process.stderr.write(`eval ${done}/${total} queries, ${rate.toFixed(2)}/s, ETA ${eta} s\n`);
            }
          },
        });
        bar?.stop();
        const row = (name: string, s: { giou: number; ciou: number } | null): string =>
          s ? `${name.padEnd(8)} gIoU ${pct(s.giou)}  cIoU ${pct(s.ciou)}\n` : '';
        process.stdout.write(
          `${o.dataset} ${o.split} (${report.protocol}): ${report.scored}/${report.queries} queries scored, ` +
            `${report.errors.length} errors${protocol === 'generate' ? `, ${report.noSeg} answers without [SEG]` : ''}\n`,
        );
        process.stdout.write(row('short', report.short) + row('long', report.long) + row('overall', report.overall));
        process.stdout.write(`report: ${o.out}/report.md, ${o.out}/report.json; per query: ${o.out}/results.jsonl\n`);
        if (report.queries > 0 && report.scored === 0)
          throw new LisaError(`no query could be scored (${report.errors.length} errors, the first: ${report.errors[0]?.error ?? 'none'})`);
      } finally {
        bar?.stop();
        await predictor?.close();
        if (model) {
          await model.release();
          model.close();
        }
      }
    });

  program
    .command('sanity-set')
    .description(
      'build the small real-image sanity set (VOC, COCO, labelme images from shared/data; NOT ReasonSeg) in the ReasonSeg layout',
    )
    .requiredOption('--data <dir>', "the data folder to build from (lisa-ts's shared/data: VOC, COCO, labelme samples)")
    .requiredOption('--out <dir>', 'output folder (gets val/)')
    .action(async (o: { data: string; out: string }) => {
      checkOutputDir(o.out, '--out');
      const r = await buildSanitySet(o.data, o.out);
      process.stdout.write(`${r.count} samples written to ${o.out}/val (a sanity set, not ReasonSeg)\n`);
    });
}
