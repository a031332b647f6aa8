import { LisaError } from '../errors.js';
import { llavaV1Prompt, wrapImageTokens } from '../text/conversation.js';
import type { LlamaTokenizer } from '../text/tokenizer.js';
import { IGNORE_INDEX } from './multimodal.js';

/** One single- or multi-turn conversation about an image: user turns ("<image>\n…" first) and answers. */
export interface Conversation {
  turns: { question: string; answer: string }[];
}

/** train_ds.py's --model_max_length: 512 after image expansion, 257 ids before it. */
export const MODEL_MAX_LENGTH = 512;

export interface Collated {
  inputIds: number[];
  labels: number[];
  attentionMask: number[];
  text: string;
  truncated: boolean;
}

/**
 * LISA's collate_fn for one conversation (utils/dataset.py:29-160, LLaVA's preprocess for llava_v1): the
 * prompt with <image> wrapped in <im_start>/<im_end>, tokenised with tokenizer_image_token; labels = ids with
 * BOS and every instruction part ("…USER: q ASSISTANT: ") ignored, so the loss is on the answers and their
 * `</s>`; truncation to maxLength − (imageRows − 1) ids, as the official training collate does after padding
 * (inference and validation pass Infinity: they do not truncate).
 */
export function collateConversation(
  tok: LlamaTokenizer,
  conv: Conversation,
  imageRows = 256,
  useImStartEnd = true,
  maxLength = MODEL_MAX_LENGTH,
): Collated {
  const messages = conv.turns.flatMap((t) => [
    { role: 'USER' as const, content: t.question },
    { role: 'ASSISTANT' as const, content: t.answer },
  ]);
  const text = wrapImageTokens(llavaV1Prompt(messages), useImStartEnd);
  const ids = tok.encodeWithImage(text);
  const labels = [...ids];
  const sep = ' ASSISTANT: ';
  let cur = 1;
  labels[0] = IGNORE_INDEX;
  for (const rou of text.split('</s>')) {
    if (rou === '') break;
    const parts = rou.split(sep);
    if (parts.length !== 2)
      throw new LisaError(`conversation round does not split into instruction and answer at "${sep}": ${rou.slice(0, 80)}`);
    const roundLen = tok.encodeWithImage(rou).length;
    const instructionLen = tok.encodeWithImage(parts[0] + sep).length - 2;
    for (let i = cur; i < Math.min(cur + instructionLen, labels.length); i++) labels[i] = IGNORE_INDEX;
    cur += roundLen;
  }
  for (let i = cur; i < labels.length; i++) labels[i] = IGNORE_INDEX;
  const limit = maxLength - (imageRows - 1);
  const truncated = ids.length > limit;
  const n = Math.min(ids.length, limit);
  return { inputIds: ids.slice(0, n), labels: labels.slice(0, n), attentionMask: new Array<number>(n).fill(1), text, truncated };
}

/** pad_sequence(batch_first, padding_value=pad 0) over a micro-batch's conversations; masks 0 on padding. */
export function padBatch(items: readonly Collated[], padId = 0): { inputIds: number[][]; labels: number[][]; attentionMask: number[][] } {
  const len = Math.max(...items.map((c) => c.inputIds.length));
  const pad = (a: number[], v: number): number[] => [...a, ...new Array<number>(len - a.length).fill(v)];
  return {
    inputIds: items.map((c) => pad(c.inputIds, padId)),
    labels: items.map((c) => pad(c.labels, IGNORE_INDEX)),
    attentionMask: items.map((c) => pad(c.attentionMask, 0)),
  };
}
