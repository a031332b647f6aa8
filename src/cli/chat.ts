import { createInterface } from 'node:readline';
import type { Command } from 'commander';
import { LisaError } from '../errors.js';
import { decodeImage, type RgbImage } from '../image/decode.js';
import type { SegmentResult } from '../inference/chat.js';
import { Lisa } from '../inference/lisa.js';
import { checkCacheDir, endProgress, loadOptions, modelOptions, parseIntArg, type ModelCliOptions } from './common.js';
import { checkOutputDir } from '../io/file.js';
import { defaultModelDir } from '../models/default-model.js';
import { describeMask, resultJson, resultName, writeResult } from './output.js';

interface ChatCliOptions extends ModelCliOptions {
  image?: string;
  maxNewTokens?: number;
}

const HELP = "commands: /image FILE (switch image, clears history), /reset, /save DIR (last answer's masks), /quit";

export function registerChat(program: Command): void {
  modelOptions(program.command('chat'), { modelRequired: false })
    .description(`interactive conversation about an image; keeps the history and streams answers. ${HELP}`)
    .option('--image <file>', 'the image to talk about (or /image FILE later)')
    .option('--max-new-tokens <n>', 'per answer (default 512)', parseIntArg('--max-new-tokens', 1))
    .action(async (o: ChatCliOptions) => {
      o.model ??= defaultModelDir();
      checkCacheDir(o);
      const lisa = Lisa.load(o.model, loadOptions(o));
      const chat = lisa.chat();
      let image: { path: string; rgb: RgbImage } | null = null;
      let last: { question: string; result: SegmentResult } | null = null;
      const out = (s: string): void => {
        process.stdout.write(s);
      };
      const setImage = async (path: string): Promise<void> => {
        const rgb = await decodeImage(path);
        await chat.setImage(rgb);
        image = { path, rgb };
        last = null;
        out(`image ${path} (${rgb.width}x${rgb.height}); history cleared\n`);
      };
      try {
        if (o.image) await setImage(o.image);
        out(`${HELP}\n`);
        const tty = process.stdin.isTTY && process.stdout.isTTY;
        // With an output stream readline shows the prompt and echoes what is typed.
        const rl = createInterface({ input: process.stdin, output: process.stdout, terminal: tty });
        endProgress();
        // Ctrl-C: stops the answer being generated; at the prompt, a second one quits. (Without a listener
        // readline pauses its input on SIGINT, and the chat would hang.)
        let answering: AbortController | null = null,
          interrupts = 0;
        rl.on('SIGINT', () => {
          if (answering) {
            answering.abort();
            return;
          }
          if (++interrupts >= 2) {
            rl.close();
            return;
          }
          out('\n(Ctrl-C again or /quit to leave)\n');
          rl.prompt();
        });
        if (tty) {
          rl.setPrompt('> ');
          rl.prompt();
        }
        for await (const raw of rl) {
          const line = raw.trim();
          try {
            if (line === '/quit' || line === '/exit') break;
            if (line === '') {
              /* nothing */
            } else if (line === '/reset') {
              chat.reset();
              last = null;
              out('history cleared\n');
            } else if (line.startsWith('/image')) {
              const path = line.slice('/image'.length).trim();
              if (!path) throw new LisaError('usage: /image FILE');
              await setImage(path);
            } else if (line.startsWith('/save')) {
              const dir = line.slice('/save'.length).trim();
              if (!dir) throw new LisaError('usage: /save DIR');
              if (!last || !image) throw new LisaError('nothing to save yet: ask a question first');
              checkOutputDir(dir, '/save');
              const img = image as { path: string; rgb: RgbImage };
              const l = last as { question: string; result: SegmentResult };
              const name = resultName(img.path);
              const files = await writeResult(
                dir,
                name,
                img.rgb,
                l.result,
                resultJson(l.result, {
                  image: img.path,
                  width: img.rgb.width,
                  height: img.rgb.height,
                  question: l.question,
                  model: o.model,
                  name,
                }),
              );
              out(files.map((f) => `wrote ${f}`).join('\n') + '\n');
            } else if (line.startsWith('/')) {
              throw new LisaError(`unknown command ${line.split(/\s/)[0]}; ${HELP}`);
            } else {
              if (!chat.hasImage) throw new LisaError('no image yet: /image FILE first');
              out('ASSISTANT: ');
              answering = new AbortController();
              let r: SegmentResult;
              try {
                r = await chat.ask(line, {
                  ...(o.maxNewTokens ? { maxNewTokens: o.maxNewTokens } : {}),
                  onText: out,
                  signal: answering.signal,
                });
              } finally {
                answering = null;
              }
              out(r.stopped === 'cancelled' ? ' (stopped)\n' : '\n');
              r.masks.forEach((m, i) => out(`[${describeMask(m, i)}]\n`));
              last = { question: line, result: r };
            }
          } catch (e) {
            if (!(e instanceof LisaError)) throw e;
            process.stderr.write(`lisa: ${e.message}\n`);
          }
          interrupts = 0;
          if (tty) rl.prompt();
        }
        rl.close();
      } finally {
        await lisa.close();
      }
    });
}
