import type { ImageEncoding, LisaModel } from '../models/lisa.js';
import { generate, type GenerateOptions } from './generate.js';
import { llmForward, logitsRow, type LlmStep } from './llm.js';
import { logSumExp } from './losses.js';
import { namedClass, presenceGate } from './pipeline.js';

/** A class the answer could name, with the LLM's log-probability of the answer's opening for it. */
export interface ClassScore {
  cls: number;
  logProb: number;
}

/** What the class choice saw and decided (for the recipe's probe and the tests). */
export interface ClassChoice {
  /** The class the LLM's own greedy answer names, or null when it names none. */
  named: number | null;
  /** The photo's classes the detector sees, likeliest opening first (empty when the named class is seen). */
  seen: ClassScore[];
  /** The named class's score, on the same footing as `seen`'s. */
  namedScore: number | null;
  /** The class the answer will name: `named`, or a seen class when the LLM did not prefer `named` by `margin`. */
  chosen: number | null;
}

/** The opening the default model's answers start with ("The sink is [SEG]"), as token ids without BOS. */
function opening(model: LisaModel, cls: number, withSeg: boolean): number[] {
  const name = model.config.towers!.vision.classes[cls]!;
  return model.tokenizer.encode(`The ${name} is${withSeg ? ' [SEG]' : ''}`, false);
}

/** A prefill that another generation may extend without touching this one's buffers. */
const fork = (prefill: LlmStep): LlmStep => ({ ...prefill, cache: prefill.cache.truncate(prefill.cache.length) });

/** log softmax(row)[id]. */
const logProbAt = (row: Float32Array, id: number): number => row[id]! - logSumExp(row);

/** log p(ids | prompt) under the LLM, from the prompt's prefill (one forward over the ids). */
export async function sequenceLogProb(model: LisaModel, prefill: LlmStep, promptLength: number, ids: number[]): Promise<number> {
  const v = model.config.llama.vocabSize;
  let lp = logProbAt(logitsRow(prefill, promptLength - 1, v), ids[0]!);
  if (ids.length > 1) {
    const step = await llmForward(model.llm, model.embedTokens(ids.slice(0, -1)), ids.length - 1, fork(prefill).cache);
    for (let i = 1; i < ids.length; i++) lp += logProbAt(step.logits.subarray((i - 1) * v, i * v), ids[i]!);
  }
  return lp;
}

/**
 * The default model's image-grounded class choice (ours, not LISA's). Its LLM turns the question into a class name
 * first ("The … is"), from words alone: for a question in words it never saw it often names a class the photo
 * lacks and then answers "not in this image". Here, when the class its greedy answer names is not seen by the
 * detector, the classes the detector does see are scored by the LLM's own likelihood of naming them; the best
 * of them is named instead unless the LLM preferred its class by more than `margin` nats (a question that names
 * an absent class outright keeps it, and is answered "not in this image"). p(class | question, photo) with the
 * photo's evidence as the prior, where LISA's LLM would read the photo itself.
 */
export async function chooseClass(model: LisaModel, enc: ImageEncoding, prefill: LlmStep, promptLength: number): Promise<ClassChoice> {
  const towers = model.config.towers;
  const rule = towers?.classChoice;
  const none: ClassChoice = { named: null, seen: [], namedScore: null, chosen: null };
  if (!towers || !rule || !enc.detector) return none;
  const probe = await generate(model.llm, fork(prefill), promptLength, { maxNewTokens: rule.probeTokens });
  const text = model.tokenizer.decode(probe.tokens.filter((t) => t !== model.segTokenIdx));
  // The class named before the first "is": what the answer is about.
  const head = / is\b/.exec(text);
  const named = head ? namedClass(model, text.slice(0, head.index)) : null;
  if (named === null) return none;
  const peaks = enc.detector.peaks;
  const threshold = towers.segPrompts.presenceThreshold;
  if (peaks[named]!.score >= threshold) return { named, seen: [], namedScore: null, chosen: named };
  const seenClasses = peaks
    .map((p, cls) => ({ cls, score: p.score }))
    .filter((p) => p.score >= threshold)
    .sort((a, b) => b.score - a.score)
    .slice(0, rule.candidates);
  if (seenClasses.length === 0) return { named, seen: [], namedScore: null, chosen: named };
  const score = (cls: number): Promise<number> => sequenceLogProb(model, prefill, promptLength, opening(model, cls, false));
  const seen: ClassScore[] = [];
  for (const { cls } of seenClasses) seen.push({ cls, logProb: await score(cls) });
  seen.sort((a, b) => b.logProb - a.logProb);
  const namedScore = await score(named);
  const choice = { named, seen, namedScore, chosen: null };
  return { ...choice, chosen: chosenClass(choice, rule.margin) };
}

/** The rule: the likeliest seen class, unless the LLM preferred the class it named by more than `margin` nats. */
export function chosenClass(c: ClassChoice, margin: number): number | null {
  const best = c.seen[0];
  if (!best || c.namedScore === null) return c.named;
  return best.logProb >= c.namedScore - margin ? best.cls : c.named;
}

/**
 * The default model's detector rules for one generation: the class choice, as forced opening tokens ("The car is
 * [SEG]") when it overrules the LLM, and the [SEG] gate. Empty for LISA checkpoints.
 */
export async function detectorGuidance(
  model: LisaModel,
  enc: ImageEncoding,
  prefill: LlmStep,
  promptLength: number,
): Promise<Pick<GenerateOptions, 'segGate' | 'forced'>> {
  const segGate = presenceGate(model, enc);
  if (!segGate) return {};
  const choice = await chooseClass(model, enc, prefill, promptLength);
  if (choice.chosen === null || choice.chosen === choice.named) return { segGate };
  const ids = opening(model, choice.chosen, true);
  return { segGate, forced: new Map(ids.map((id, i) => [i, id])) };
}
