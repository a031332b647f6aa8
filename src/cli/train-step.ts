import type { Command } from 'commander';
import { runFixtureStep } from '../train/fixture-step.js';
import { clearProgress, loadModel, modelOptions, type ModelCliOptions } from './common.js';

interface TrainStepCliOptions extends ModelCliOptions {
  fixture: string;
  variant: string;
  out: string;
}

export function registerTrainStep(program: Command): void {
  modelOptions(program.command('train-step'))
    .description(
      'one official training step (forward, backward, clipping, AdamW, LoRA merge) on a folder laid out like ' +
        'fixtures/train-step; writes loss/, grad/, after/, optim_state/, merged/',
    )
    .requiredOption('--fixture <dir>', 'folder with manifest.json, batch/, inputs/ and <variant>/before/')
    .requiredOption('--variant <name>', 'the manifest variant whose LoRA init and settings to use (nodrop, peftinit_nodrop)')
    .requiredOption('--out <dir>', 'output folder')
    .action(async (o: TrainStepCliOptions) => {
      const model = loadModel({ ...o, precision: o.precision === 'auto' ? 'fp32' : o.precision });
      try {
        const r = await runFixtureStep(model, o.fixture, o.variant, o.out);
        clearProgress();
        const l = r.losses;
        const v = (x: number): string => x.toPrecision(8);
        const losses = `loss ${v(l.loss)} (ce ${v(l.ce_loss)}, bce ${v(l.mask_bce_loss)}, dice ${v(l.mask_dice_loss)})`;
        process.stdout.write(`${losses}; grad norm ${v(r.gradNorm)}, clip ${v(r.clipCoef)}; ${r.written} arrays written to ${o.out}\n`);
      } finally {
        await model.release();
        model.close();
      }
    });
}
