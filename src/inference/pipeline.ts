import { LisaError } from '../errors.js';
import { f32, type HostTensor } from '../graph/tensor.js';
import type { ImageEncoding, LisaModel } from '../models/lisa.js';
import { selectMaskToken } from '../models/sam/mask-head.js';
import { segClassProbs, selectSegPrompts } from '../models/seg-prompts.js';
import type { SegPromptConfig } from '../models/config.js';
import { chatPrompt, imageQuestion, llavaV1Prompt, wrapImageTokens } from '../text/conversation.js';
import { detectorGuidance } from './class-choice.js';
import { collateConversation } from './collate.js';
import { argmax, generate, type GenerateOptions, type Generation } from './generate.js';
import { llmForward, type LlmStep } from './llm.js';
import { lisaLosses, shiftedCrossEntropy, type LisaLosses } from './losses.js';
import { IGNORE_INDEX, segHiddenPositions, spliceImage, spliceLabels } from './multimodal.js';

/** Number of LLM rows one image becomes (CLIP patches, CLS dropped): 256 for ViT-L/14 at 224. */
export function imageRows(model: LisaModel): number {
  return model.imageRows;
}

export interface PromptInput {
  prompt: string;
  ids: number[];
  embeds: Float32Array;
  length: number; // spliced length
  imageStart: number;
}

/**
 * The LLM takes at most max_position_embeddings positions (2048 for LISA): a longer prompt is one clear error
 * (onnxruntime's RotaryEmbedding failed on it), naming what it is made of.
 */
export function checkContext(model: LisaModel, positions: number, tokens: number, conversation = false): void {
  const max = model.config.llama.maxPositionEmbeddings;
  if (positions < max) return;
  const rows = imageRows(model);
  const what = conversation ? 'conversation' : 'prompt',
    advice = conversation ? '/reset to start the conversation over' : 'shorten the question';
  throw new LisaError(
    `the ${what} is ${positions} positions (${tokens} tokens + ${rows - 1} more for the image's ${rows} rows) ` +
      `but the model takes at most ${max}; ${advice}`,
  );
}

/** Tokenises a full prompt (with one <image>) and splices the image's projected features in. */
export function preparePrompt(model: LisaModel, enc: ImageEncoding, prompt: string): PromptInput {
  const ids = model.tokenizer.encodeWithImage(prompt);
  const rows = imageRows(model);
  checkContext(model, ids.length - 1 + rows, ids.length);
  const { embeds, length, imageStart } = spliceImage(ids, (x) => model.embedTokens(x), enc.projected, rows, model.config.llama.hiddenSize);
  return { prompt, ids, embeds, length, imageStart };
}

export interface SegOutputs {
  segHidden: Float32Array; // [n, H]
  predEmbeddings: Float32Array; // [n, 256]
  lowResMasks: HostTensor; // [n, 1, 256, 256] (mask token 0)
  iouPredictions: Float32Array; // [n] (IoU head for mask 0)
  predMasks: HostTensor; // [n, H, W] logits at the original size
  /** With a detector tower (the default model): each [SEG]'s most likely class, an index into its class list. */
  segClasses?: number[];
}

/** SAM's own prompts (points, a box) already embedded as sparse tokens, joined to every [SEG] token. */
export interface VisualTokens {
  tokens: number;
  data: Float32Array;
}
const NO_VISUAL: VisualTokens = { tokens: 0, data: new Float32Array(0) };

/**
 * The one path from prompts to masks, as LISA's evaluate/model_forward: text_hidden_fcs on the [SEG] hidden
 * states → one sparse token per [SEG] (after SAM's point/box tokens, when given, as LISA's prompt encoder
 * concatenates them) → mask decoder (dense = no_mask_embed) → mask token 0 (multimask_output=False, LISA's rule;
 * true picks SAM's best of 1..3) → post-processing to the original size. With no [SEG] but visual prompts it is
 * plain SAM (one mask). Used by segment, chat, eval, dump and the server alike.
 */
export async function segmentFromHidden(
  model: LisaModel,
  enc: ImageEncoding,
  segHidden: Float32Array,
  n: number,
  visual: VisualTokens = NO_VISUAL,
  multimask = false,
  named: readonly (number | null)[] = [],
): Promise<SegOutputs> {
  const [h, w] = enc.originalSize;
  const prompts = n > 0 ? n : visual.tokens > 0 ? 1 : 0;
  if (prompts === 0) {
    return {
      segHidden,
      predEmbeddings: new Float32Array(0),
      lowResMasks: f32([0, 1, 256, 256], new Float32Array(0)),
      iouPredictions: new Float32Array(0),
      predMasks: f32([0, h, w], new Float32Array(0)),
    };
  }
  if (model.config.towers && enc.detector && n > 0 && visual.tokens === 0)
    return segmentWithDetector(model, enc, segHidden, n, multimask, named);
  const e = model.sam.promptEncoder.embedDim;
  const predEmbeddings = n > 0 ? await model.textHiddenFcs(segHidden, n) : new Float32Array(0);
  const t = visual.tokens + (n > 0 ? 1 : 0);
  const sparse = new Float32Array(prompts * t * e);
  for (let i = 0; i < prompts; i++) {
    sparse.set(visual.data, i * t * e);
    if (n > 0) sparse.set(predEmbeddings.subarray(i * e, (i + 1) * e), (i * t + visual.tokens) * e);
  }
  const { masks, iou } = await model.decodeMasks(enc.samEmbeddings, sparse, prompts, t);
  const { lowRes, scores } = selectMaskToken(masks, iou, multimask);
  const post = await model.postprocess(lowRes, enc);
  return {
    segHidden,
    predEmbeddings,
    lowResMasks: lowRes,
    iouPredictions: scores,
    predMasks: f32([prompts, h, w], post.data as Float32Array),
  };
}

/**
 * The default model's [SEG] → masks (models/seg-prompts.ts): text_hidden_fcs → the [SEG]'s class distribution →
 * the detector's boxes it selects → SAM box prompts → one mask per [SEG], the union (max of logits) of its boxes'.
 */
async function segmentWithDetector(
  model: LisaModel,
  enc: ImageEncoding,
  segHidden: Float32Array,
  n: number,
  multimask: boolean,
  named: readonly (number | null)[],
): Promise<SegOutputs> {
  const d = model.config.outDim;
  const predEmbeddings = await model.textHiddenFcs(segHidden, n);
  const head = model.segClassHead();
  // The class the answer named before the [SEG] (namedClass), else seg_class_head's distribution.
  const probs = Array.from({ length: n }, (_, i) => {
    const c = named[i];
    if (c === null || c === undefined) return segClassProbs(head.weight, head.bias, predEmbeddings.subarray(i * d, (i + 1) * d));
    const p = new Float32Array(head.bias.length);
    p[c] = 1;
    return p;
  });
  const out = await masksForClasses(model, enc, probs, model.config.towers!.segPrompts, multimask);
  return { ...out, segHidden, predEmbeddings };
}

/**
 * SAM masks for class distributions over a detector tower's classes (one mask per distribution: the union of the
 * boxes it selects). The default model's [SEG] path, and with a one-hot class and the plain threshold the
 * no-learning baseline ("class name → detector boxes → SAM").
 */
export async function masksForClasses(
  model: LisaModel,
  enc: ImageEncoding,
  probs: readonly Float32Array[],
  cfg: SegPromptConfig,
  multimask = false,
  fallback = true,
): Promise<Omit<SegOutputs, 'segHidden' | 'predEmbeddings'>> {
  const n = probs.length;
  const [h, w] = enc.originalSize;
  const [rh, rw] = enc.resize;
  const sx = rw / w,
    sy = rh / h;
  const low = 256 * 256;
  const lowRes = new Float32Array(n * low).fill(-1e4),
    pred = new Float32Array(n * h * w).fill(-1e4),
    scores = new Float32Array(n);
  const classes: number[] = [];
  for (let i = 0; i < n; i++) {
    const p = probs[i]!;
    classes.push(argmax(p));
    const prompts = selectSegPrompts(p, enc.detector!.detections, enc.detector!.peaks, cfg, fallback);
    if (prompts.length === 0) continue; // the baseline found no box: an empty mask
    const tokens = prompts.map((p) =>
      'box' in p
        ? model.sam.promptEncoder.embedPrompts([], { x1: p.box.x1 * sx, y1: p.box.y1 * sy, x2: p.box.x2 * sx, y2: p.box.y2 * sy })
        : model.sam.promptEncoder.embedPrompts([{ x: p.point.x * sx, y: p.point.y * sy, label: 1 }], null),
    );
    const t = tokens[0]!.tokens;
    const sparse = new Float32Array(prompts.length * t * model.sam.promptEncoder.embedDim);
    tokens.forEach((tk, k) => sparse.set(tk.data, k * tk.data.length));
    const { masks, iou } = await model.decodeMasks(enc.samEmbeddings, sparse, prompts.length, t);
    const sel = selectMaskToken(masks, iou, multimask);
    const post = (await model.postprocess(sel.lowRes, enc)).data as Float32Array;
    const lr = sel.lowRes.data as Float32Array;
    for (let k = 0; k < prompts.length; k++) {
      for (let j = 0; j < low; j++) lowRes[i * low + j] = Math.max(lowRes[i * low + j]!, lr[k * low + j]!);
      for (let j = 0; j < h * w; j++) pred[i * h * w + j] = Math.max(pred[i * h * w + j]!, post[k * h * w + j]!);
    }
    scores[i] = Math.max(...sel.scores);
  }
  return {
    lowResMasks: f32([n, 1, 256, 256], lowRes),
    iouPredictions: scores,
    predMasks: f32([n, h, w], pred),
    segClasses: classes,
  };
}

/**
 * The default model's presence rule: its LLM names the class, and a [SEG] is emitted only when the detector's
 * heatmap peak for the class that [SEG] would ask for (seg_class_head on the hidden state that produces it) reaches
 * `presence_threshold`; otherwise generation takes its next best token ("… is not in this image."). Its LLM did
 * not learn to read presence from its image rows within the training budget (MODEL.md). Undefined for LISA.
 */
export function presenceGate(model: LisaModel, enc: ImageEncoding): GenerateOptions['segGate'] {
  const towers = model.config.towers;
  if (!towers || !enc.detector) return undefined;
  const peaks = enc.detector.peaks;
  return {
    token: model.segTokenIdx,
    allow: async (hidden, tokens) => {
      let cls = namedClass(model, model.tokenizer.decode([...tokens]));
      if (cls === null) {
        const head = model.segClassHead();
        cls = argmax(segClassProbs(head.weight, head.bias, await model.textHiddenFcs(hidden, 1)));
      }
      return peaks[cls]!.score >= towers.segPrompts.presenceThreshold;
    },
  };
}

/**
 * The detector class an answer names last ("The sink is" → sink), or null: what a [SEG] right after it segments.
 * The default model always names the class before its [SEG]; where the LLM itself leaned to "not in this image"
 * and the gate overruled it, its class head is off its training states, and the name is what it meant.
 */
export function namedClass(model: LisaModel, answerSoFar: string): number | null {
  const classes = model.config.towers?.vision.classes;
  if (!classes) return null;
  const text = ` ${answerSoFar.toLowerCase().replace(/[^a-z ]+/g, ' ')} `;
  // The name that ends last; of two ending together ("hot dog", "dog"), the longer.
  let best: number | null = null,
    end = -1;
  classes.forEach((c, i) => {
    const k = text.lastIndexOf(` ${c} `);
    if (k < 0) return;
    const e = k + c.length;
    if (e > end || (e === end && c.length > classes[best!]!.length)) {
      end = e;
      best = i;
    }
  });
  return best;
}

/** For each [SEG] among `tokens` (generated ids), the class its answer names before it (namedClass). */
export function namedClasses(model: LisaModel, tokens: readonly number[]): (number | null)[] {
  const out: (number | null)[] = [];
  tokens.forEach((t, i) => {
    if (t === model.segTokenIdx) out.push(namedClass(model, model.tokenizer.decode(tokens.slice(0, i))));
  });
  return out;
}

function gatherRows(rows: Float32Array, positions: readonly number[], hidden: number): Float32Array {
  const out = new Float32Array(positions.length * hidden);
  positions.forEach((p, i) => {
    if ((p + 1) * hidden > rows.length) throw new LisaError(`internal: [SEG] position ${p} is past the hidden states`);
    out.set(rows.subarray(p * hidden, (p + 1) * hidden), i * hidden);
  });
  return out;
}

export interface ChatRun {
  input: PromptInput;
  prefill: LlmStep;
  generation: Generation;
  outputIds: number[]; // prompt ids (with -200) + new tokens, as generate() returns
  text: string; // decoded like chat.py: -200 dropped, special tokens kept, "\n" removed, "  " → " "
  segPositions: number[];
  seg: SegOutputs;
}

/**
 * chat.py + LISA.evaluate for one question (official semantics): prompt, greedy generation, every [SEG] in
 * the prompt and the output gives a mask from the hidden state before it.
 */
export async function runChat(
  model: LisaModel,
  enc: ImageEncoding,
  question: string,
  opts: GenerateOptions = {},
  debug = false,
): Promise<ChatRun> {
  const input = preparePrompt(model, enc, chatPrompt(question, model.config.mmUseImStartEnd));
  const prefill = await llmForward(model.llm, input.embeds, input.length, undefined, debug, debug ? 'all' : 'last');
  const generation = await generate(model.llm, prefill, input.length, {
    ...(await detectorGuidance(model, enc, prefill, input.length)),
    ...opts,
  });
  const outputIds = [...input.ids, ...generation.tokens];
  const segPositions = segHiddenPositions(outputIds, model.segTokenIdx, imageRows(model));
  const h = model.config.llama.hiddenSize;
  const seg = await segmentFromHidden(
    model,
    enc,
    gatherRows(generation.allHidden, segPositions, h),
    segPositions.length,
    NO_VISUAL,
    false,
    namedClasses(model, generation.tokens),
  );
  const text = model.tokenizer
    .decode(outputIds.filter((id) => id !== -200))
    .replaceAll('\n', '')
    .replaceAll('  ', ' ');
  return { input, prefill, generation, outputIds, text, segPositions, seg };
}

export interface TrainForward {
  conversation: string;
  input: PromptInput;
  ids: number[];
  labels: number[];
  splicedLabels: number[];
  step: LlmStep;
  segMask: boolean[]; // over spliced positions
  seg: SegOutputs;
  labelPositions: number[]; // spliced positions whose label is scored
  losses: LisaLosses;
}

/**
 * LISA.model_forward with the answer given (teacher forcing, as training and the official validation):
 * collated ids and labels, the LLM over the whole conversation, [SEG] hidden states → masks at the
 * ground-truth size, and the CE / BCE / Dice losses with LISA's weights. Inference only (no gradients).
 */
export async function trainForward(
  model: LisaModel,
  enc: ImageEncoding,
  question: string,
  answer: string,
  gtMasks: Uint8Array | null,
  debug = false,
): Promise<TrainForward> {
  const user = imageQuestion(question, false); // "<image>\n…"; collate wraps <image> in <im_start>/<im_end>
  const conversation = llavaV1Prompt([
    { role: 'USER', content: user },
    { role: 'ASSISTANT', content: answer },
  ]);
  const rows = imageRows(model);
  const collated = collateConversation(
    model.tokenizer,
    { turns: [{ question: user, answer }] },
    rows,
    model.config.mmUseImStartEnd,
    Infinity,
  );
  const input = preparePrompt(model, enc, collated.text);
  const labels = collated.labels;
  const splicedLabels = spliceLabels(labels, input.ids, rows);
  const step = await llmForward(model.llm, input.embeds, input.length, undefined, debug);
  const h = model.config.llama.hiddenSize;
  const positions = segHiddenPositions(input.ids, model.segTokenIdx, rows);
  const segMask = new Array<boolean>(input.length).fill(false);
  for (const p of positions) segMask[p] = true;
  const seg = await segmentFromHidden(model, enc, gatherRows(step.hidden, positions, h), positions.length);
  const ce = shiftedCrossEntropy(step.logits, splicedLabels, model.config.llama.vocabSize);
  const labelPositions: number[] = [];
  splicedLabels.forEach((l, i) => {
    if (i > 0 && l !== IGNORE_INDEX) labelPositions.push(i);
  });
  const [H, W] = enc.originalSize;
  let losses: LisaLosses;
  if (gtMasks) {
    if (gtMasks.length !== positions.length * H * W)
      throw new LisaError(
        `${positions.length} [SEG] token(s) in the answer but ${gtMasks.length / (H * W)} ground-truth mask(s) of ${W}x${H}; ` +
          `LISA needs one per [SEG]`,
      );
    losses = lisaLosses(ce.loss, seg.predMasks.data as Float32Array, gtMasks, positions.length, H * W);
  } else losses = { loss: ce.loss, ce_loss: ce.loss, mask_bce_loss: NaN, mask_dice_loss: NaN, mask_loss: NaN };
  return { conversation, input, ids: input.ids, labels, splicedLabels, step, segMask, seg, labelPositions, losses };
}

/**
 * The official validation's forward for one query (ValDataset + model_forward(inference=True)): the user
 * turn as given (with <image>), the answer teacher-forced, masks from every [SEG] of the answer.
 */
export async function teacherForcedMasks(
  model: LisaModel,
  enc: ImageEncoding,
  userContent: string,
  answer = '[SEG].',
): Promise<SegOutputs> {
  const input = preparePrompt(
    model,
    enc,
    llavaV1Prompt([
      { role: 'USER', content: wrapImageTokens(userContent, model.config.mmUseImStartEnd) },
      { role: 'ASSISTANT', content: answer },
    ]),
  );
  const step = await llmForward(model.llm, input.embeds, input.length, undefined, false, 'last');
  const positions = segHiddenPositions(input.ids, model.segTokenIdx, imageRows(model));
  return segmentFromHidden(model, enc, gatherRows(step.hidden, positions, model.config.llama.hiddenSize), positions.length);
}

/** The question through the chat template and greedy generation; the masks of the generated [SEG]s. */
export async function generatedMasks(
  model: LisaModel,
  enc: ImageEncoding,
  userContent: string,
  opts: GenerateOptions = {},
): Promise<{ tokens: number[]; seg: SegOutputs }> {
  const input = preparePrompt(
    model,
    enc,
    llavaV1Prompt([
      { role: 'USER', content: wrapImageTokens(userContent, model.config.mmUseImStartEnd) },
      { role: 'ASSISTANT', content: '' },
    ]),
  );
  const prefill = await llmForward(model.llm, input.embeds, input.length, undefined, false, 'last');
  const gen = await generate(model.llm, prefill, input.length, { ...(await detectorGuidance(model, enc, prefill, input.length)), ...opts });
  const h = model.config.llama.hiddenSize;
  const idx = gen.tokens.flatMap((t, i) => (t === model.segTokenIdx ? [i] : []));
  const hidden = new Float32Array(idx.length * h);
  idx.forEach((i, j) => hidden.set(gen.producerHidden.subarray(i * h, (i + 1) * h), j * h));
  return {
    tokens: gen.tokens,
    seg: await segmentFromHidden(model, enc, hidden, idx.length, NO_VISUAL, false, namedClasses(model, gen.tokens)),
  };
}
