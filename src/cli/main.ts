import { readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, CommanderError } from 'commander';
import { LisaError } from '../errors.js';
import { registerCache } from './cache.js';
import { registerChat } from './chat.js';
import { registerConvert } from './convert.js';
import { registerDump } from './dump.js';
import { registerEval } from './eval.js';
import { formatInspect, inspectCheckpoint } from './inspect.js';
import { registerSegment } from './segment.js';
import { registerTokenize } from './tokenize.js';
import { registerTrainStep } from './train-step.js';
import { registerTrain } from './train.js';
import { registerMerge } from './merge.js';
import { registerServe } from './serve.js';
import { registerWorker } from './worker.js';

export function packageVersion(): string {
  const pkg = JSON.parse(readFileSync(join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'package.json'), 'utf8')) as {
    version: string;
  };
  return pkg.version;
}

/** Exit codes: 0 success, 1 runtime error (bad file, bad model), 2 usage error. */
export async function main(argv: readonly string[]): Promise<number> {
  // `lisa … --json | head`: the reader went away; that is the end of the output, not an error.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code === 'EPIPE') process.exit(0);
    throw e;
  });
  const program = new Command()
    .name('lisa')
    .description('LISA reasoning segmentation in TypeScript: inspect checkpoints, run and evaluate the model')
    .version(packageVersion(), '--version', 'print the lisa-ts version')
    .exitOverride()
    .configureOutput({ writeErr: (s) => process.stderr.write(s) });

  program
    .command('inspect')
    .description('list every tensor in a checkpoint (a folder, an index .json, a .bin or a .safetensors) with a summary')
    .argument('<path>', 'checkpoint folder or file')
    .option('--json', 'print machine-readable JSON')
    .action((path: string, opts: { json?: boolean }) => {
      const report = inspectCheckpoint(path);
      process.stdout.write((opts.json ? JSON.stringify(report, null, 2) : formatInspect(report)) + '\n');
    });

  registerSegment(program);
  registerChat(program);
  registerEval(program);
  registerConvert(program);
  registerTokenize(program);
  registerDump(program);
  registerTrainStep(program);
  registerTrain(program);
  registerMerge(program);
  registerCache(program);
  registerServe(program);
  registerWorker(program);

  try {
    await program.parseAsync(argv as string[]);
    return 0;
  } catch (e) {
    if (e instanceof CommanderError) {
      // --help and --version also end here, with exit code 0.
      return e.exitCode === 0 ? 0 : 2;
    }
    if (e instanceof LisaError) {
      process.stderr.write(`lisa: ${e.message}\n`);
      return e.exitCode;
    }
    throw e;
  }
}
