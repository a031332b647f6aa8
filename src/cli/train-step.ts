import type { Command } from 'commander';
import { runFixtureStep } from '../train/fixture-step.js';
import { clearProgress, loadModel, modelOptions, type ModelCliOptions } from './common.js';

interface TrainStepCliOptions extends ModelCliOptions { fixture: string; variant: string; out: string }

export function registerTrainStep(program: Command): void {
  modelOptions(program.command('train-step'))
    .description('one official training step (forward, backward, clipping, AdamW, LoRA merge) on a folder laid out like fixtures/train-step; writes loss/, grad/, after/, optim_state/, merged/')
    .requiredOption('--fixture <dir>', 'folder with manifest.json, batch/, inputs/ and <variant>/before/')
    .requiredOption('--variant <name>', 'the manifest variant whose LoRA init and settings to use (nodrop, peftinit_nodrop)')
    .requiredOption('--out <dir>', 'output folder')
    .action(async (o: TrainStepCliOptions) => {
      const model = loadModel({ ...o, precision: o.precision === 'auto' ? 'fp32' : o.precision });
      try {
        const r = await runFixtureStep(model, o.fixture, o.variant, o.out);
        clearProgress();
        const l = r.losses;
        process.stdout.write(`loss ${l.loss.toPrecision(8)} (ce ${l.ce_loss.toPrecision(8)}, bce ${l.mask_bce_loss.toPrecision(8)}, dice ${l.mask_dice_loss.toPrecision(8)}); grad norm ${r.gradNorm.toPrecision(8)}, clip ${r.clipCoef.toPrecision(8)}; ${r.written} arrays written to ${o.out}\n`);
      } finally {
        await model.release();
        model.close();
      }
    });
}
