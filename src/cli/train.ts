import { existsSync, readFileSync, statSync } from 'node:fs';
import cliProgress from 'cli-progress';
import type { Command } from 'commander';
import { LisaError } from '../errors.js';
import { loadDataset } from '../eval/datasets.js';
import { checkExample } from '../train/data/examples.js';
import { CocoPartSource, LabelMapSource, ReferSegSource, VqaSource } from '../train/data/datasets.js';
import { CocoSegSource } from '../train/data/coco-seg.js';
import { JsonlSource, ReasonSegSource, type TrainExample, type TrainSource } from '../train/data/sources.js';
import { LISA_TRAIN_SPEC, type TrainSpec } from '../train/params.js';
import { train, visionTowerDir, type TrainOptions } from '../train/trainer.js';
import { clearProgress, loadModel, modelOptions, parseIntArg, type ModelCliOptions } from './common.js';

interface TrainCliOptions extends ModelCliOptions {
  config?: string;
  data?: string[];
  dataWeights?: string;
  split?: string;
  out?: string;
  steps?: number;
  batchSize?: number;
  gradAccum?: number;
  lr?: string;
  explanatory?: string;
  warmup?: number;
  seed?: number;
  saveEvery?: number;
  stepsPerEpoch?: number;
  val?: string;
  valSplit?: string;
  valLimit?: number;
  loraR?: number;
  loraAlpha?: string;
  loraDropout?: string;
  loraTargets?: string;
  trainable?: string;
  reinit?: string;
  noLora?: boolean;
  checkData?: boolean;
  ceLossWeight?: string;
  bceLossWeight?: string;
  diceLossWeight?: string;
  classLossWeight?: string;
  bucket?: number;
}

/** The keys a --config JSON file may set (the flags' long names in camelCase); flags win over the file. */
const CONFIG_KEYS = [
  'data',
  'dataWeights',
  'split',
  'explanatory',
  'steps',
  'batchSize',
  'gradAccum',
  'lr',
  'warmup',
  'seed',
  'saveEvery',
  'stepsPerEpoch',
  'val',
  'valSplit',
  'valLimit',
  'loraR',
  'loraAlpha',
  'loraDropout',
  'loraTargets',
  'trainable',
  'reinit',
  'noLora',
  'ceLossWeight',
  'bceLossWeight',
  'diceLossWeight',
  'classLossWeight',
  'bucket',
];

function readConfig(path: string): Partial<TrainCliOptions> {
  if (!existsSync(path)) throw new LisaError(`${path}: no such config file`);
  let c: unknown;
  try {
    c = JSON.parse(readFileSync(path, 'utf8'));
  } catch (e) {
    throw new LisaError(`${path}: not valid JSON (${(e as Error).message})`);
  }
  if (typeof c !== 'object' || c === null || Array.isArray(c)) throw new LisaError(`${path}: expected a JSON object`);
  for (const k of Object.keys(c))
    if (!CONFIG_KEYS.includes(k)) throw new LisaError(`${path}: unknown key "${k}" (known: ${CONFIG_KEYS.join(', ')})`);
  const o = c as Record<string, unknown>;
  if (typeof o.data === 'string') o.data = [o.data];
  return o as Partial<TrainCliOptions>;
}

function num(name: string, v: string | number | undefined, dflt: number, min = 0): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!Number.isFinite(n) || n < min) throw new LisaError(`${name} must be a number >= ${min}, got "${v}"`);
  return n;
}

const KINDS = [
  'jsonl',
  'reasonseg',
  'ade20k',
  'cocostuff',
  'mapillary',
  'paco_lvis',
  'pascal_part',
  'refcoco',
  'refcoco+',
  'refcocog',
  'refclef',
  'vqa',
  'coco_seg',
] as const;

/** `PATH` (a .jsonl file or a ReasonSeg-layout folder) or `KIND:DATASET_DIR` for LISA's other datasets. */
function sourceFor(spec: string, split: string, explanatory: number): TrainSource {
  const m = /^([a-z_+]+):(.+)$/.exec(spec);
  const kind = m && (KINDS as readonly string[]).includes(m[1]!) ? m[1]! : null;
  const path = kind ? m![2]! : spec;
  if (!existsSync(path)) throw new LisaError(`${path}: no such data file or folder`);
  switch (kind ?? (statSync(path).isDirectory() ? 'reasonseg' : 'jsonl')) {
    case 'jsonl':
      return new JsonlSource(path);
    case 'reasonseg':
      return new ReasonSegSource(path, split, explanatory);
    case 'ade20k':
    case 'cocostuff':
    case 'mapillary':
      return new LabelMapSource(path, kind as 'ade20k');
    case 'paco_lvis':
    case 'pascal_part':
      return new CocoPartSource(path, kind as 'paco_lvis');
    case 'vqa':
      return new VqaSource(path);
    case 'coco_seg':
      return new CocoSegSource(path);
    default:
      return new ReferSegSource(path, kind!);
  }
}

export function registerTrain(program: Command): void {
  modelOptions(program.command('train'))
    .description(
      'fine-tune LISA as train_ds.py does (LoRA on q_proj/v_proj; lm_head, embed_tokens, mask_decoder, text_hidden_fcs in full): ' +
        'resumable, checkpointed, validated',
    )
    .option(
      '--out <dir>',
      'run folder: checkpoints, log.jsonl; an existing run with the same settings resumes (required unless --check-data)',
    )
    .option('--config <file>', 'JSON with any of the options below (camelCase keys); flags override it')
    .option(
      '--data <path...>',
      `training data: a JSON Lines file (README "Training data"), a ReasonSeg-layout folder, or KIND:DATASET_DIR ` +
        `(${KINDS.slice(2).join(', ')}) in train_ds.py's --dataset_dir layout; several mix`,
    )
    .option('--explanatory <p>', 'ReasonSeg: probability of an explanation-only answer for images with one (default 0.1; -1 off)')
    .option('--data-weights <w,...>', 'sampling weights of the --data sources (train_ds.py --sample_rates; default equal)')
    .option('--split <name>', 'split of ReasonSeg-layout folders (default train)')
    .option('--steps <n>', 'optimiser steps (default 500)', parseIntArg('--steps', 1))
    .option('--batch-size <n>', 'images per micro-batch (default 2, as train_ds.py)', parseIntArg('--batch-size', 1))
    .option('--grad-accum <n>', 'micro-batches per step (default 1; train_ds.py uses 10)', parseIntArg('--grad-accum', 1))
    .option('--lr <x>', 'peak learning rate (default 3e-4)')
    .option('--warmup <n>', 'linear warm-up steps of WarmupDecayLR (default 100)', parseIntArg('--warmup', 0))
    .option('--seed <n>', 'seed of the data order, templates, LoRA init and dropout (default 42)', parseIntArg('--seed', 0))
    .option('--save-every <n>', 'checkpoint every n steps (default 50)', parseIntArg('--save-every', 1))
    .option('--steps-per-epoch <n>', 'validation after every n steps (default 500)', parseIntArg('--steps-per-epoch', 1))
    .option('--val <dir>', 'ReasonSeg-layout validation folder (gIoU/cIoU after each epoch, best checkpoint kept)')
    .option('--val-split <name>', 'validation split (default val)')
    .option('--val-limit <n>', 'validate on the first n images only', parseIntArg('--val-limit', 1))
    .option('--lora-r <n>', 'LoRA rank (default 8)', parseIntArg('--lora-r', 1))
    .option('--lora-alpha <x>', 'LoRA alpha (default 16)')
    .option('--lora-dropout <x>', 'LoRA dropout (default 0.05)')
    .option('--lora-targets <names>', 'comma-separated Linear name parts that get LoRA (default q_proj,v_proj)')
    .option(
      '--trainable <names>',
      'comma-separated tensor name parts trained in full (default lm_head,embed_tokens,mask_decoder,text_hidden_fcs)',
    )
    .option(
      '--reinit <names>',
      'comma-separated name parts of trained tensors to start from random init (training from scratch, e.g. text_hidden_fcs,mask_decoder)',
    )
    .option('--no-lora', 'no LoRA: only the --trainable tensors (full fine-tuning of a small model: --trainable model.,lm_head)')
    .option('--ce-loss-weight <x>', 'weight of the text loss (default 1.0, as train_ds.py)')
    .option('--bce-loss-weight <x>', 'weight of the mask BCE loss (default 2.0); 0 with --dice-loss-weight 0 leaves SAM out of the step')
    .option('--dice-loss-weight <x>', 'weight of the mask Dice loss (default 0.5)')
    .option('--class-loss-weight <x>', 'weight of the [SEG] class loss of a detector-tower model (default 1.0; LISA has none)')
    .option(
      '--bucket <n>',
      'pad each batch to multiples of n positions so few step graphs are compiled (default 1: exact)',
      parseIntArg('--bucket', 1),
    )
    .option('--check-data', 'list every bad sample (missing image, empty mask, polygon outside the image, [SEG]/mask count) and exit')
    .action(async (flags: TrainCliOptions & { lora?: boolean }) => {
      const o: TrainCliOptions = {
        ...(flags.config ? readConfig(flags.config) : {}),
        ...Object.fromEntries(Object.entries(flags).filter(([, v]) => v !== undefined)),
      } as TrainCliOptions;
      if (flags.lora === false) o.noLora = true;
      const data = o.data ?? [];
      if (data.length === 0)
        throw new LisaError('no training data: give --data FILE.jsonl or --data REASONSEG_DIR (or "data" in --config)');
      const sources = data.map((p) => sourceFor(p, o.split ?? 'train', num('--explanatory', o.explanatory, 0.1, -1)));
      const weights = o.dataWeights
        ? String(o.dataWeights)
            .split(',')
            .map((w) => num('--data-weights', w, 1, 0))
        : sources.map(() => 1);
      if (weights.length !== sources.length || weights.every((w) => w === 0))
        throw new LisaError(`--data-weights needs ${sources.length} non-negative weights, not all zero; got "${o.dataWeights}"`);
      if (o.checkData) {
        let bad = 0,
          total = 0;
        const all = async function* (s: TrainSource): AsyncGenerator<TrainExample> {
          if (s instanceof JsonlSource || s instanceof ReasonSegSource) {
            yield* s.allExamples();
            return;
          }
          for (let i = 0; i < s.length; i++) yield await s.example(i, () => 0);
        };
        for (const s of sources)
          for await (const ex of all(s)) {
            total++;
            const problems = await checkExample(ex);
            for (const p of problems) process.stdout.write(`${p}\n`);
            if (problems.length) bad++;
          }
        process.stdout.write(`${total} samples checked, ${bad} with problems\n`);
        if (bad) throw new LisaError(`${bad} of ${total} samples have problems (listed above)`);
        return;
      }
      if (!o.out) throw new LisaError('--out DIR is required (the run folder)');
      const spec: TrainSpec = {
        lora: o.noLora
          ? null
          : {
              r: num('--lora-r', o.loraR, 8, 1),
              alpha: num('--lora-alpha', o.loraAlpha, 16),
              dropout: num('--lora-dropout', o.loraDropout, 0.05),
              targets: (o.loraTargets ?? 'q_proj,v_proj')
                .split(',')
                .map((t) => t.trim())
                .filter(Boolean),
            },
        trainable: o.trainable
          ? String(o.trainable)
              .split(',')
              .map((t) => t.trim())
              .filter(Boolean)
          : LISA_TRAIN_SPEC.trainable,
      };
      if (spec.lora && spec.lora.dropout >= 1) throw new LisaError(`--lora-dropout must be below 1, got ${spec.lora.dropout}`);
      const model = loadModel({ ...o, precision: o.precision ?? 'auto' });
      let stop = false;
      const onSigint = (): void => {
        stop = true;
        process.stderr.write('\nCtrl-C: finishing this step and saving a checkpoint…\n');
      };
      process.on('SIGINT', onSigint);
      const steps = o.steps ?? 500;
      const bar = process.stderr.isTTY
        ? new cliProgress.SingleBar(
            {
              format:
                'train [{bar}] {value}/{total} | loss {loss} (ce {ce}, bce {bce}, dice {dice}) | lr {lr} | {sps} samples/s | ETA ' +
                '{eta_formatted}',
              hideCursor: true,
            },
            cliProgress.Presets.shades_classic,
          )
        : null;
      let started = false;
      try {
        clearProgress();
        const opts: TrainOptions = {
          out: o.out!,
          sources: sources.map((source, i) => ({ source, weight: weights[i]! })),
          steps,
          batchSize: o.batchSize ?? 2,
          gradAccum: o.gradAccum ?? 1,
          lr: num('--lr', o.lr, 3e-4),
          warmupSteps: o.warmup ?? 100,
          seed: o.seed ?? 42,
          saveEvery: o.saveEvery ?? 50,
          stepsPerEpoch: o.stepsPerEpoch ?? 500,
          spec,
          lossWeights: {
            ce: num('--ce-loss-weight', o.ceLossWeight, 1.0),
            bce: num('--bce-loss-weight', o.bceLossWeight, 2.0),
            dice: num('--dice-loss-weight', o.diceLossWeight, 0.5),
            cls: num('--class-loss-weight', o.classLossWeight, 1.0),
          },
          bucket: o.bucket ?? 1,
          ...(o.reinit
            ? {
                reinit: String(o.reinit)
                  .split(',')
                  .map((t) => t.trim())
                  .filter(Boolean),
              }
            : {}),
          ...(o.val
            ? {
                val: {
                  items: loadDataset('reasonseg', o.val, o.valSplit ?? 'val').items.slice(0, o.valLimit ?? Infinity),
                  visionTower: o.visionTower ?? visionTowerDir(model),
                },
              }
            : {}),
          onMessage: (line) => process.stderr.write(`${line}\n`),
          shouldStop: () => stop,
          onStep: (l) => {
            const fmt = (x: number): string => x.toFixed(4);
            if (bar) {
              if (!started) {
                bar.start(steps, l.step - 1);
                started = true;
              }
              bar.update(l.step, {
                loss: fmt(l.loss),
                ce: fmt(l.ce_loss),
                bce: fmt(l.mask_bce_loss),
                dice: fmt(l.mask_dice_loss),
                lr: l.lr.toExponential(2),
                sps: l.samples_per_s.toFixed(2),
              });
            }
            if (l.val_giou !== undefined)
              process.stderr.write(
                `${bar ? '\n' : ''}step ${l.step}: validation gIoU ${l.val_giou.toFixed(4)} cIoU ${l.val_ciou!.toFixed(4)}\n`,
              );
          },
        };
        const state = await train(model, opts);
        bar?.stop();
        process.stdout.write(
          `trained to step ${state.step} of ${steps}; checkpoint in ` +
            `${o.out}${state.best ? `; best validation gIoU ${state.best.giou.toFixed(4)} at step ${state.best.step}` : ''}\n`,
        );
      } finally {
        bar?.stop();
        process.off('SIGINT', onSigint);
        await model.release();
        model.close();
      }
    });
}
