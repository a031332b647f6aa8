import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { LisaError } from '../errors.js';
import { SentencePieceModel } from './sentencepiece.js';

/** LLaVA's placeholder id for the image, replaced by 256 CLIP rows in the forward pass. */
export const IMAGE_TOKEN_INDEX = -200;
export const IMAGE_TOKEN = '<image>';

/** Python's str.strip() whitespace (differs from JS trim(): \x1c-\x1f and \x85 in, \ufeff out). */
const PY_WS = '\t\n\x0b\x0c\r\x1c\x1d\x1e\x1f \x85\xa0\u1680\u2000\u2001\u2002\u2003\u2004\u2005\u2006\u2007\u2008\u2009\u200a\u2028\u2029\u202f\u205f\u3000';
function lstripPy(s: string): string { let i = 0; while (i < s.length && PY_WS.includes(s[i]!)) i++; return s.slice(i); }
function rstripPy(s: string): string { let i = s.length; while (i > 0 && PY_WS.includes(s[i - 1]!)) i--; return s.slice(0, i); }

interface SplitToken { content: string; id: number; lstrip: boolean; rstrip: boolean; special: boolean }

function readJson(path: string, what: string): unknown {
  if (statSync(path).size > 16 * 1024 * 1024) throw new LisaError(`${path}: too large for ${what}`);
  try { return JSON.parse(readFileSync(path, 'utf8')); } catch (e) { throw new LisaError(`${path}: not valid JSON (${(e as Error).message})`); }
}

/**
 * The tokenizer LISA trains and runs with: transformers 4.31's slow LlamaTokenizer in legacy mode.
 * - Added tokens (`added_tokens.json`) and the special tokens split the text; whitespace on both sides of an
 *   added token given as a plain string is stripped (AddedToken objects, like <s> in special_tokens_map.json,
 *   keep theirs per their lstrip/rstrip flags); each remaining fragment is SentencePiece-encoded on its own,
 *   with the dummy prefix.
 * - decode() follows the same version's rules (see `decode`).
 */
export class LlamaTokenizer {
  readonly sp: SentencePieceModel;
  readonly bosId: number;
  readonly eosId: number;
  readonly unkId: number;
  readonly addBos: boolean;
  readonly addEos: boolean;
  /** Added tokens by content (e.g. "[SEG]" → 32000) and by id. */
  readonly added: ReadonlyMap<string, number>;
  private readonly addedById = new Map<number, string>();
  private readonly splitTokens: SplitToken[];
  private readonly specialStrings: Set<string>;

  constructor(sp: SentencePieceModel, added: Map<string, number>, specials: { bos: SplitToken; eos: SplitToken; unk: SplitToken }, addBos = true, addEos = false) {
    this.sp = sp;
    this.added = added;
    for (const [k, v] of added) {
      if (v < sp.vocabSize) throw new LisaError(`added token ${k} has id ${v}, inside the SentencePiece vocabulary (${sp.vocabSize})`);
      this.addedById.set(v, k);
    }
    this.bosId = specials.bos.id; this.eosId = specials.eos.id; this.unkId = specials.unk.id;
    this.addBos = addBos; this.addEos = addEos;
    this.specialStrings = new Set([specials.bos.content, specials.eos.content, specials.unk.content]);
    const split = new Map<string, SplitToken>();
    for (const s of [specials.bos, specials.eos, specials.unk]) split.set(s.content, s);
    for (const [content, id] of added) if (!split.has(content)) split.set(content, { content, id, lstrip: true, rstrip: true, special: false });
    // Longest first, so a token that contains another wins at the same position.
    this.splitTokens = [...split.values()].sort((a, b) => b.content.length - a.content.length);
  }

  /** Loads `tokenizer.model`, `added_tokens.json`, `special_tokens_map.json`, `tokenizer_config.json` from a folder. */
  static load(dir: string): LlamaTokenizer {
    const modelPath = join(dir, 'tokenizer.model');
    if (!existsSync(modelPath)) throw new LisaError(`${dir}: no tokenizer.model (expected the LLaMA SentencePiece model in the checkpoint folder)`);
    const sp = SentencePieceModel.load(modelPath);
    const added = new Map<string, number>();
    const addedPath = join(dir, 'added_tokens.json');
    if (existsSync(addedPath)) {
      const j = readJson(addedPath, 'added tokens');
      if (typeof j !== 'object' || j === null || Array.isArray(j)) throw new LisaError(`${addedPath}: expected an object mapping token strings to ids`);
      for (const [k, v] of Object.entries(j)) {
        if (!Number.isSafeInteger(v) || (v as number) < 0) throw new LisaError(`${addedPath}: id of ${JSON.stringify(k)} must be a non-negative integer, found ${JSON.stringify(v)}`);
        added.set(k, v as number);
      }
      const ids = [...added.values()].sort((a, b) => a - b);
      ids.forEach((id, i) => { if (id !== sp.vocabSize + i) throw new LisaError(`${addedPath}: added token ids must continue the vocabulary from ${sp.vocabSize} without gaps, found ${ids.join(', ')}`); });
    }
    const mapPath = join(dir, 'special_tokens_map.json');
    const map = existsSync(mapPath) ? (readJson(mapPath, 'special tokens') as Record<string, unknown>) : {};
    const special = (key: string, dflt: string): SplitToken => {
      const v = map[key];
      let content = dflt, lstrip = false, rstrip = false;
      if (typeof v === 'string') { content = v; lstrip = rstrip = true; } // a plain string is stripped like any added token
      else if (typeof v === 'object' && v !== null && typeof (v as { content?: unknown }).content === 'string') {
        const o = v as { content: string; lstrip?: boolean; rstrip?: boolean };
        content = o.content; lstrip = o.lstrip === true; rstrip = o.rstrip === true;
      }
      const id = added.get(content) ?? sp.pieceToId(content);
      if (id < 0) throw new LisaError(`${mapPath}: special token ${key} = ${JSON.stringify(content)} is not in the vocabulary`);
      return { content, id, lstrip, rstrip, special: true };
    };
    const cfgPath = join(dir, 'tokenizer_config.json');
    const cfg = existsSync(cfgPath) ? (readJson(cfgPath, 'tokenizer config') as Record<string, unknown>) : {};
    return new LlamaTokenizer(sp, added, { bos: special('bos_token', '<s>'), eos: special('eos_token', '</s>'), unk: special('unk_token', '<unk>') }, cfg.add_bos_token !== false, cfg.add_eos_token === true);
  }

  get vocabSize(): number { return this.sp.vocabSize + this.added.size; }

  /** `tokenizer("[SEG]")`'s id, taken from added_tokens.json (never from encoding, see spec §10.3). */
  get segTokenIdx(): number {
    const id = this.added.get('[SEG]');
    if (id === undefined) throw new LisaError('the tokenizer has no [SEG] token in added_tokens.json; this is not a LISA checkpoint');
    return id;
  }

  /** PreTrainedTokenizer.tokenize (4.31): split on added/special tokens, strip around them, encode fragments. */
  tokenize(text: string): { ids: number[]; pieces: string[] } {
    type Frag = { text: string } | { token: SplitToken };
    const frags: Frag[] = [];
    let start = 0;
    for (let i = 0; i < text.length;) {
      const t = this.splitTokens.find((s) => text.startsWith(s.content, i));
      if (!t) { i++; continue; }
      if (i > start) frags.push({ text: text.slice(start, i) });
      frags.push({ token: t });
      i += t.content.length;
      start = i;
    }
    if (start < text.length) frags.push({ text: text.slice(start) });
    frags.forEach((f, i) => {
      if (!('token' in f)) return;
      const left = frags[i - 1], right = frags[i + 1];
      if (f.token.rstrip && right && 'text' in right) right.text = lstripPy(right.text);
      if (f.token.lstrip && left && 'text' in left) left.text = rstripPy(left.text);
    });
    const ids: number[] = [], pieces: string[] = [];
    for (const f of frags) {
      if ('token' in f) { ids.push(f.token.id); pieces.push(f.token.content); continue; }
      if (f.text.length === 0) continue;
      const e = this.sp.encode(f.text);
      ids.push(...e.ids); pieces.push(...e.pieces);
    }
    return { ids, pieces };
  }

  /** `tokenizer(text).input_ids`: BOS (and EOS if configured) around the tokens when addSpecialTokens. */
  encode(text: string, addSpecialTokens = true): number[] {
    const { ids } = this.tokenize(text);
    if (!addSpecialTokens) return ids;
    return [...(this.addBos ? [this.bosId] : []), ...ids, ...(this.addEos ? [this.eosId] : [])];
  }

  /** LLaVA's tokenizer_image_token: each "<image>" becomes the single id -200; one BOS in front. */
  encodeWithImage(prompt: string): number[] {
    const chunks = prompt.split(IMAGE_TOKEN).map((c) => this.encode(c));
    const out: number[] = [];
    let offset = 0;
    if (chunks[0]!.length > 0 && chunks[0]![0] === this.bosId) { offset = 1; out.push(this.bosId); }
    chunks.forEach((c, i) => {
      if (i > 0) out.push(IMAGE_TOKEN_INDEX);
      out.push(...c.slice(offset));
    });
    return out;
  }

  idToToken(id: number): string {
    if (id === IMAGE_TOKEN_INDEX) return IMAGE_TOKEN;
    const a = this.addedById.get(id);
    if (a !== undefined) return a;
    return this.sp.idToPiece(id);
  }

  /**
   * transformers 4.31 decode(ids, skip_special_tokens): added tokens split the ids into segments; each
   * segment is turned to text by LlamaTokenizer.convert_tokens_to_string (legacy: a space before a special
   * token that is not first, the first piece's "▁" dropped); segments and added tokens are joined with " ".
   */
  decode(ids: readonly number[], skipSpecialTokens = false): string {
    const specialIds = new Set([this.bosId, this.eosId, this.unkId]);
    const subTexts: string[] = [];
    let current: string[] = [];
    for (const id of ids) {
      if (skipSpecialTokens && specialIds.has(id)) continue;
      const tok = this.idToToken(id);
      if (this.addedById.has(id)) {
        if (current.length) { subTexts.push(this.convertTokensToString(current)); current = []; }
        subTexts.push(tok);
      } else current.push(tok);
    }
    if (current.length) subTexts.push(this.convertTokensToString(current));
    return subTexts.join(' ');
  }

  private convertTokensToString(tokens: string[]): string {
    tokens = [...tokens];
    if (tokens[0]!.startsWith('\u2581')) tokens[0] = tokens[0]!.slice(1);
    let out = '';
    let sub: string[] = [];
    let prevSpecial = false;
    tokens.forEach((t, i) => {
      if (this.specialStrings.has(t)) {
        if (!prevSpecial && i !== 0) out += ' ';
        out += this.sp.decodePieces(sub) + t;
        prevSpecial = true;
        sub = [];
      } else {
        sub.push(t);
        prevSpecial = false;
      }
    });
    return out + this.sp.decodePieces(sub);
  }
}
