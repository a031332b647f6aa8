import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { LlamaTokenizer } from '../src/text/tokenizer.js';
import { FIXTURES, SHARED } from './helpers.js';

interface Golden {
  ids: number[];
  ids_plain: number[];
  tokens: string[];
  decode: string;
  decode_plain: string;
  image_token_ids?: number[];
}
interface Case {
  id: string;
  category: string;
  text: string;
  tiny: Golden;
  tiny2: Golden;
}
const dev = JSON.parse(readFileSync(join(FIXTURES, 'tokenizer', 'dev.json'), 'utf8')) as { cases: Case[] };

for (const [key, dir, seg] of [
  ['tiny', 'lisa-13b-layout', 32000],
  ['tiny2', 'lisa-7b-layout', 32003],
] as const) {
  describe(`tokenizer goldens, ${dir}`, () => {
    const tok = LlamaTokenizer.load(join(FIXTURES, 'tokenizer', dir));
    it(`has [SEG] = ${seg} from added_tokens.json`, () => assert.equal(tok.segTokenIdx, seg));
    it(`matches ids, pieces, decode and image-token ids on all ${dev.cases.length} strings`, () => {
      const failures: string[] = [];
      for (const c of dev.cases) {
        const g = c[key];
        const check = (what: string, got: unknown, want: unknown): void => {
          if (JSON.stringify(got) !== JSON.stringify(want))
            failures.push(
              `${c.id} ${c.category} ${JSON.stringify(c.text).slice(0, 60)} ${what}: got ${JSON.stringify(got).slice(0, 200)} ` +
                `want ${JSON.stringify(want).slice(0, 200)}`,
            );
        };
        check('ids', tok.encode(c.text), g.ids);
        check('ids_plain', tok.encode(c.text, false), g.ids_plain);
        check('tokens', tok.tokenize(c.text).pieces, g.tokens);
        check('decode', tok.decode(g.ids), g.decode);
        check('decode_plain', tok.decode(g.ids_plain), g.decode_plain);
        if (g.image_token_ids) check('image_token_ids', tok.encodeWithImage(c.text), g.image_token_ids);
      }
      assert.equal(failures.length, 0, `${failures.length} mismatches:\n${failures.slice(0, 15).join('\n')}`);
    });
  });
}

describe('llama.cpp tokenizer cases', () => {
  it('encodes all 46 strings as llama.cpp expects (no BOS, dummy prefix)', () => {
    const base = join(SHARED, 'data', 'llama_tokenizer_tests', 'ggml-vocab-llama-spm.gguf');
    const inputs = readFileSync(`${base}.inp`, 'utf8').split('\n__ggml_vocab_test__\n');
    const outputs = readFileSync(`${base}.out`, 'utf8').split('\n');
    if (inputs[inputs.length - 1] === '') inputs.pop();
    assert.equal(inputs.length, 46);
    const tok = LlamaTokenizer.load(join(FIXTURES, 'tokenizer', 'lisa-13b-layout'));
    const bad: string[] = [];
    inputs.forEach((text, i) => {
      const want = outputs[i]!.trim()
        .split(/\s+/)
        .filter((s) => s.length)
        .map(Number);
      const got = tok.sp.encode(text).ids;
      if (JSON.stringify(got) !== JSON.stringify(want)) bad.push(`${JSON.stringify(text)}: got ${got.join(' ')} want ${want.join(' ')}`);
    });
    assert.equal(bad.length, 0, bad.join('\n'));
  });
});

describe('SentencePiece BPE merge order', () => {
  it('the heap-based merge gives the pieces of the plain "best pair, leftmost on ties" scan on random text', async () => {
    const { LlamaTokenizer } = await import('../src/text/tokenizer.js');
    const { rng } = await import('./helpers.js');
    const sp = LlamaTokenizer.load(join(FIXTURES, 'lisa-tiny', 'checkpoint')).sp;
    const internals = sp as unknown as { mergeable: Map<string, number>; pieces: { score: number }[] };
    /** The reference: scan all pairs, merge the best (first on ties), repeat. */
    const naive = (syms: string[]): string[] => {
      const s = [...syms];
      for (;;) {
        let best = -1,
          bestScore = -Infinity;
        for (let i = 0; i + 1 < s.length; i++) {
          const id = internals.mergeable.get(s[i]! + s[i + 1]!);
          if (id !== undefined && internals.pieces[id]!.score > bestScore) {
            bestScore = internals.pieces[id]!.score;
            best = i;
          }
        }
        if (best < 0) return s;
        s.splice(best, 2, s[best]! + s[best + 1]!);
      }
    };
    const r = rng(77);
    const alphabet = 'aaaeeiioouu  ttnnssrrhhllddcm.,!?éß漢字😀-_0123456789';
    for (let t = 0; t < 150; t++) {
      const chars = Array.from({ length: 1 + Math.floor(r() * 60) }, () => [...alphabet][Math.floor(r() * [...alphabet].length)]!);
      const text = chars.join('');
      const syms = [...('▁' + text.replace(/ /g, '▁'))];
      const fast = (sp as unknown as { mergeBpe(s: string[]): string[] }).mergeBpe(syms);
      assert.deepEqual(fast, naive(syms), JSON.stringify(text));
    }
  });
});
