import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Command } from 'commander';
import { LisaError } from '../errors.js';
import { openCheckpoint } from '../io/checkpoint.js';
import { latestCheckpoint, loadCheckpoint, type RunState } from '../train/checkpoint.js';
import { mergeToReleased } from '../train/merge.js';
import { AdamW } from '../train/optim.js';
import { TrainingSet, type TrainSpec } from '../train/params.js';

interface MergeCliOptions {
  model: string;
  checkpoint: string;
  out: string;
  maxShardGb?: string;
}

export function registerMerge(program: Command): void {
  program
    .command('merge')
    .description(
      "fold a training run's LoRA into the base and write a checkpoint in the released layout (safetensors shards + index, " +
        'config, tokenizer files) that every lisa command loads',
    )
    .requiredOption('--model <dir>', 'the base checkpoint the run trained')
    .requiredOption('--checkpoint <dir>', 'a `lisa train` run folder (its latest checkpoint) or one checkpoint-<step> folder')
    .requiredOption('--out <dir>', 'new folder for the merged checkpoint (must not exist or be empty)')
    .option('--max-shard-gb <x>', 'largest shard in GB (default 2)')
    .action((o: MergeCliOptions) => {
      const ckptDir = existsSync(join(o.checkpoint, 'state.json')) ? o.checkpoint : latestCheckpoint(o.checkpoint);
      if (!ckptDir) throw new LisaError(`${o.checkpoint}: neither a checkpoint folder (state.json) nor a run folder with latest.json`);
      const state = JSON.parse(readFileSync(join(ckptDir, 'state.json'), 'utf8')) as RunState;
      const spec = state.settings.spec as TrainSpec | undefined;
      if (!spec || !Array.isArray(spec.trainable)) throw new LisaError(`${ckptDir}/state.json: no training spec recorded`);
      const shardGb = o.maxShardGb === undefined ? 2 : Number(o.maxShardGb);
      if (!Number.isFinite(shardGb) || shardGb <= 0) throw new LisaError(`--max-shard-gb must be a positive number, got "${o.maxShardGb}"`);
      const base = openCheckpoint(o.model);
      try {
        const set = new TrainingSet(base, spec);
        loadCheckpoint(ckptDir, set, new AdamW());
        const r = mergeToReleased(base, o.model, set, o.out, shardGb * 1024 ** 3);
        process.stdout.write(
          `merged ${r.merged} LoRA layers and ${r.replaced} trained tensors into ${r.tensors} tensors ` +
            `(${(r.bytes / 1e6).toFixed(1)} MB, ${r.shards} shard${r.shards > 1 ? 's' : ''}) in ${r.dir}\n`,
        );
      } finally {
        base.close();
      }
    });
}
