import { closeSync, existsSync, openSync, readFileSync, readSync } from 'node:fs';
import { join } from 'node:path';

/** Debian's wordnet-base puts WordNet 3.0's database here. */
export const WORDNET_DIR = '/usr/share/wordnet';

/** A noun sense: its words, gloss (definition) and the words of its first hypernym ("a kind of …"). */
export interface NounSense {
  words: string[];
  gloss: string;
  hypernym: string[];
}

/** WordNet's lexicographer files for nouns (lexnames): what kind of thing a sense is. */
export type NounKind = 'artifact' | 'animal' | 'food' | 'person' | 'plant';
const LEX: Record<NounKind, number> = { artifact: 6, animal: 5, food: 13, person: 18, plant: 20 };

/**
 * Reads noun senses from WordNet's database files (index.noun, data.noun): the first sense of a lemma of the
 * wanted kind, as WordNet orders senses by frequency. Optional: `open` returns null when WordNet is not installed.
 */
export class WordNet {
  private readonly index = new Map<string, number[]>();
  private readonly fd: number;

  private constructor(dir: string) {
    for (const line of readFileSync(join(dir, 'index.noun'), 'latin1').split('\n')) {
      if (!line || line.startsWith(' ')) continue;
      const f = line.split(' ');
      const pCnt = Number(f[3]);
      const synsetCnt = Number(f[2]);
      const offsets = f.slice(4 + pCnt + 2, 4 + pCnt + 2 + synsetCnt).map(Number);
      this.index.set(f[0]!, offsets);
    }
    this.fd = openSync(join(dir, 'data.noun'), 'r');
  }

  static open(dir = WORDNET_DIR): WordNet | null {
    return existsSync(join(dir, 'index.noun')) && existsSync(join(dir, 'data.noun')) ? new WordNet(dir) : null;
  }

  close(): void {
    closeSync(this.fd);
  }

  private line(offset: number): string {
    const buf = Buffer.alloc(4096);
    const n = readSync(this.fd, buf, 0, buf.length, offset);
    const s = buf.subarray(0, n).toString('latin1');
    return s.slice(0, s.indexOf('\n') >= 0 ? s.indexOf('\n') : s.length);
  }

  private parse(offset: number): { lex: number; words: string[]; hypernym: number | null; gloss: string } {
    const line = this.line(offset);
    const bar = line.indexOf(' | ');
    const f = line.slice(0, bar < 0 ? line.length : bar).split(' ');
    const lex = Number(f[1]);
    const wCnt = parseInt(f[3]!, 16);
    const words = Array.from({ length: wCnt }, (_, i) =>
      f[4 + 2 * i]!.replace(/\(.*\)$/, '')
        .replaceAll('_', ' ')
        .toLowerCase(),
    );
    const at = 4 + 2 * wCnt;
    const pCnt = Number(f[at]);
    let hypernym: number | null = null;
    for (let i = 0; i < pCnt; i++) {
      const sym = f[at + 1 + 4 * i]!;
      if (sym === '@' && hypernym === null) hypernym = Number(f[at + 2 + 4 * i]);
    }
    const gloss =
      bar < 0
        ? ''
        : line
            .slice(bar + 3)
            .split(';')[0]!
            .trim();
    return { lex, words, hypernym, gloss };
  }

  /** The most frequent sense of `lemma` (spaces or underscores) of the given kind, or null. */
  noun(lemma: string, kind: NounKind): NounSense | null {
    const offsets = this.index.get(lemma.toLowerCase().replaceAll(' ', '_')) ?? [];
    for (const o of offsets) {
      const s = this.parse(o);
      if (s.lex !== LEX[kind]) continue;
      return { words: s.words, gloss: s.gloss, hypernym: s.hypernym === null ? [] : this.parse(s.hypernym).words };
    }
    return null;
  }
}
