import { createReadStream, existsSync } from 'node:fs';
import { createInterface } from 'node:readline';
import type { Command } from 'commander';
import { LisaError } from '../errors.js';
import { IMAGE_TOKEN, LlamaTokenizer } from '../text/tokenizer.js';

interface TokenizeCliOptions {
  model: string;
  noSpecial?: boolean;
  special: boolean;
  json?: boolean;
  input?: string;
}

export function registerTokenize(program: Command): void {
  program
    .command('tokenize')
    .description('tokenise text as LISA does (transformers 4.31 slow LlamaTokenizer rules); prints ids and pieces')
    .requiredOption('--model <dir>', 'folder with tokenizer.model and added_tokens.json (a LISA checkpoint)')
    .option('--no-special', 'no BOS (add_special_tokens=False)')
    .option('--json', 'print {"ids": [...], "pieces": [...]}')
    .option('--input <file>', 'read JSON Lines (one JSON string per line; - for stdin) and write one JSON object per line')
    .argument('[text]', 'the text (with --input: omitted)')
    .action(async (text: string | undefined, o: TokenizeCliOptions) => {
      const tok = LlamaTokenizer.load(o.model);
      const run = (t: string): { ids: number[]; pieces: string[] } => {
        if (t.includes(IMAGE_TOKEN)) {
          // LLaVA's tokenizer_image_token, as the model sees a prompt: each <image> is the id -200.
          const all = tok.encodeWithImage(t),
            ids = o.special ? all : all.slice(all[0] === tok.bosId ? 1 : 0);
          return { ids, pieces: ids.map((id) => tok.idToToken(id)) };
        }
        const { ids, pieces } = tok.tokenize(t);
        return o.special && tok.addBos ? { ids: [tok.bosId, ...ids], pieces: [tok.idToToken(tok.bosId), ...pieces] } : { ids, pieces };
      };
      if (o.input) {
        if (text !== undefined) throw new LisaError('give either TEXT or --input FILE, not both');
        if (o.input !== '-' && !existsSync(o.input)) throw new LisaError(`--input ${o.input}: no such file`);
        const rl = createInterface({ input: o.input === '-' ? process.stdin : createReadStream(o.input), crlfDelay: Infinity });
        let n = 0;
        for await (const line of rl) {
          n++;
          if (!line.trim()) continue;
          let s: unknown;
          try {
            s = JSON.parse(line);
          } catch {
            throw new LisaError(`${o.input}:${n}: not valid JSON (expected one JSON string per line)`);
          }
          if (typeof s !== 'string') throw new LisaError(`${o.input}:${n}: expected a JSON string, found ${typeof s}`);
          process.stdout.write(JSON.stringify(run(s)) + '\n');
        }
        return;
      }
      if (text === undefined) throw new LisaError('give the TEXT to tokenise, or --input FILE');
      const r = run(text);
      if (o.json) process.stdout.write(JSON.stringify(r) + '\n');
      else process.stdout.write(r.ids.map((id, i) => `${String(id).padStart(6)}  ${JSON.stringify(r.pieces[i])}`).join('\n') + '\n');
    });
}
