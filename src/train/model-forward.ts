import { LisaError } from '../errors.js';
import { Graph } from '../graph/graph.js';
import type { Value } from '../graph/ir.js';
import { attention, F32_MIN, mergeHeads, splitHeads } from '../graph/nn.js';
import { f32, hostTensor, type HostTensor } from '../graph/tensor.js';
import { IGNORE_INDEX } from '../inference/multimodal.js';
import type { LisaModel } from '../models/lisa.js';
import { llamaModel, lmHead } from '../models/llama.js';
import { ModuleWeights } from '../models/module.js';
import { samMaskDecoder } from '../models/sam/mask-decoder.js';
import { constAxisResize, postprocessMasks } from '../models/sam/postprocess.js';
import { textHiddenFcs } from '../models/text-hidden-fcs.js';
import { IMAGE_TOKEN_INDEX } from '../text/tokenizer.js';
import { crossEntropy, lisaLoss, LISA_LOSS_WEIGHTS, type LossParts, type LossWeights } from './losses.js';
import type { TrainingSet } from './params.js';

/** One image of a micro-batch with what its frozen encoders produced and its ground-truth masks. */
export interface TrainImage {
  projected: Float32Array; // [imageRows, H]: CLIP (layer -2, CLS dropped) → mm_projector
  samEmbeddings: Float32Array; // [256, 64, 64]: SAM's image encoder
  resize: [number, number]; // SAM's resized (h, w)
  originalSize: [number, number]; // (H, W): the masks' size
  gtMasks: Uint8Array; // [numMasks, H, W], 0/1
  numMasks: number;
  /** Each mask's detector class (the default model's seg_class_head loss); absent when the data has none. */
  segClasses?: number[];
}

/** A collated micro-batch as LISA's collate_fn builds it (utils/dataset.py): conversations grouped by image. */
export interface TrainBatch {
  inputIds: number[][]; // [conversations][L], right-padded, one IMAGE_TOKEN_INDEX each
  labels: number[][]; // same shape; IGNORE_INDEX where no loss
  attentionMask: number[][]; // 1 for tokens, 0 for padding
  offset: number[]; // conversations of image i are offset[i] .. offset[i+1]-1
  images: TrainImage[];
}

/** What the host computes from a batch: the index tensors the graph gathers with, and the structure it is built for. */
export interface PreparedBatch {
  feeds: Record<string, HostTensor>;
  /** Unique token ids, in the order of the embed_rows input. */
  tokenIds: number[];
  /** Identifies the graph: conversations, spliced length, masks per image and sizes. */
  signature: string;
  structure: BatchStructure;
}

export interface BatchStructure {
  conversations: number;
  seqLen: number;
  ceTargets: number;
  /** The CE rows are padded to a bucket and weighted (ce_weight: 1 real, 0 padding). */
  ceWeighted: boolean;
  /** The default model's class loss on seg_class_head (seg_classes fed). */
  classes: boolean;
  /** SAM's decoder and the mask losses are in the graph (ground-truth masks fed). */
  masks: boolean;
  /** Per image: masks and the two sizes of its post-processing. */
  images: { numMasks: number; resize: [number, number]; originalSize: [number, number] }[];
}

/**
 * LLaVA's prepare_inputs_labels_for_multimodal + LISA's [SEG] selection, as index tensors: every spliced
 * position points at a row of [embed_rows | image features | a zero row] (LLaVA pads unequal lengths with
 * zeros); labels go through the same splice (image rows ignored); the CE rows are the positions t whose label
 * t+1 is a target (HF's shift); the [SEG] rows follow LISA's `input_ids[:, 1:] == seg` shifted by the image
 * rows − 1 (the hidden state before [SEG]).
 */
/** How a batch becomes graph inputs beyond LISA's own: mask losses on or off, the class loss, shape buckets. */
export interface PrepareOptions {
  masks: boolean;
  classes: boolean;
  /** Pad the sequence length and the CE rows up to a multiple of this (1 = exact, as the official step). */
  bucket: number;
}
export const LISA_PREPARE: PrepareOptions = { masks: true, classes: false, bucket: 1 };

export function prepareBatch(model: LisaModel, batch: TrainBatch, imageRows: number, opts: PrepareOptions = LISA_PREPARE): PreparedBatch {
  const h = model.config.llama.hiddenSize,
    seg = model.segTokenIdx;
  const nConv = batch.inputIds.length,
    nImg = batch.images.length;
  if (batch.offset.length !== nImg + 1 || batch.offset[0] !== 0 || batch.offset[nImg] !== nConv) {
    throw new LisaError(`training batch: offset ${JSON.stringify(batch.offset)} does not split ${nConv} conversations over ${nImg} images`);
  }
  const imageOf = (c: number): number => batch.offset.findIndex((o, i) => i < nImg && c >= o && c < batch.offset[i + 1]!);
  const unique = new Map<number, number>();
  const spliced: { rows: number[]; labels: number[]; mask: number[] }[] = [];
  for (let c = 0; c < nConv; c++) {
    const ids = batch.inputIds[c]!,
      labels = batch.labels[c]!,
      mask = batch.attentionMask[c]!;
    const p = ids.indexOf(IMAGE_TOKEN_INDEX);
    if (p < 0 || ids.indexOf(IMAGE_TOKEN_INDEX, p + 1) >= 0)
      throw new LisaError(`training batch: conversation ${c} must hold exactly one <image>`);
    const img = imageOf(c);
    const rows: number[] = [],
      lab: number[] = [],
      m: number[] = [];
    ids.forEach((id, k) => {
      if (k === p) {
        for (let r = 0; r < imageRows; r++) {
          rows.push(-1 - (img * imageRows + r));
          lab.push(IGNORE_INDEX);
          m.push(1);
        }
        return;
      }
      if (!unique.has(id)) unique.set(id, unique.size);
      rows.push(unique.get(id)!);
      lab.push(labels[k]!);
      m.push(mask[k]!);
    });
    spliced.push({ rows, labels: lab, mask: m });
  }
  const u = unique.size,
    zeroRow = u + nImg * imageRows;
  const roundUp = (n: number): number => Math.ceil(n / opts.bucket) * opts.bucket;
  // Padding positions are like LLaVA's right padding: the zero row, masked out of attention and the losses.
  const seqLen = roundUp(Math.max(...spliced.map((s) => s.rows.length)));
  const spliceIndex = new BigInt64Array(nConv * seqLen),
    bias = new Float32Array(nConv * seqLen),
    pos = new BigInt64Array(nConv * seqLen);
  const ceRows: number[] = [],
    ceTargets: number[] = [],
    segRows: number[] = [],
    maskImage: number[] = [];
  spliced.forEach((s, c) => {
    for (let t = 0; t < seqLen; t++) {
      const r = s.rows[t];
      spliceIndex[c * seqLen + t] = BigInt(r === undefined ? zeroRow : r >= 0 ? r : u + (-1 - r));
      bias[c * seqLen + t] = r !== undefined && s.mask[t] ? 0 : F32_MIN;
      pos[c * seqLen + t] = BigInt(t);
      const next = s.labels[t + 1];
      if (next !== undefined && next !== IGNORE_INDEX) {
        ceRows.push(c * seqLen + t);
        ceTargets.push(next);
      }
    }
  });
  // seg_token_mask, row-major over (conversation, position): the order pred_embeddings has in model_forward.
  batch.inputIds.forEach((ids, c) => {
    for (let k = 1; k < ids.length; k++)
      if (ids[k] === seg) {
        segRows.push(c * seqLen + k - 1 + imageRows - 1);
        maskImage.push(imageOf(c));
      }
  });
  batch.images.forEach((im, i) => {
    const n = maskImage.filter((x) => x === i).length;
    if (n !== im.numMasks)
      throw new LisaError(`training batch: image ${i} has ${im.numMasks} ground-truth masks but its conversations hold ${n} [SEG] tokens`);
  });
  if (ceRows.length === 0) throw new LisaError('training batch: no answer token carries a loss (every label is ignored)');
  const realCe = ceRows.length;
  while (ceRows.length < roundUp(realCe)) {
    ceRows.push(0);
    ceTargets.push(0);
  }
  const tokenIds = [...unique.keys()];
  // embed_rows (the rows of tokenIds) is fed by the trainer: from the trained table, or the checkpoint's.
  const feeds: Record<string, HostTensor> = {
    image_features: f32([nImg, imageRows, h], concat(batch.images.map((im) => im.projected))),
    splice_index: hostTensor('int64', [nConv, seqLen], spliceIndex),
    position_ids: hostTensor('int64', [nConv, seqLen], pos),
    attn_bias: f32([nConv, 1, 1, seqLen], bias),
    ce_rows: hostTensor('int64', [ceRows.length], BigInt64Array.from(ceRows, BigInt)),
    ce_targets: hostTensor('int64', [ceTargets.length], BigInt64Array.from(ceTargets, BigInt)),
    ...(opts.bucket > 1
      ? {
          ce_weight: f32(
            [ceRows.length],
            Float32Array.from(ceRows, (_, i) => (i < realCe ? 1 : 0)),
          ),
        }
      : {}),
    seg_rows: hostTensor('int64', [segRows.length], BigInt64Array.from(segRows, BigInt)),
    mask_image: hostTensor('int64', [maskImage.length], BigInt64Array.from(maskImage, BigInt)),
  };
  if (opts.masks)
    feeds.image_embeddings = f32([nImg, ...samEmbeddingShape(model, batch.images[0]!)], concat(batch.images.map((im) => im.samEmbeddings)));
  if (opts.masks)
    batch.images.forEach((im, i) => {
      if (im.numMasks) feeds[`gt_masks_${i}`] = f32([im.numMasks, ...im.originalSize], Float32Array.from(im.gtMasks));
    });
  if (opts.classes) {
    const cls = batch.images.flatMap((im) => {
      if (im.segClasses?.length !== im.numMasks) throw new LisaError('training batch: the class loss needs the class of every mask');
      return im.segClasses;
    });
    feeds.seg_classes = hostTensor('int64', [cls.length], BigInt64Array.from(cls, BigInt));
  }
  // Without mask losses the graph does not depend on the images' sizes: leave them out of its signature.
  const structure: BatchStructure = {
    conversations: nConv,
    seqLen,
    ceTargets: ceRows.length,
    ceWeighted: opts.bucket > 1,
    classes: opts.classes,
    masks: opts.masks,
    images: batch.images.map((im) =>
      opts.masks
        ? { numMasks: im.numMasks, resize: im.resize, originalSize: im.originalSize }
        : { numMasks: im.numMasks, resize: [0, 0], originalSize: [0, 0] },
    ),
  };
  return { feeds, tokenIds, signature: JSON.stringify(structure), structure };
}

function samEmbeddingShape(model: LisaModel, im: TrainImage): [number, number, number] {
  const c = model.sam.promptEncoder.embedDim,
    grid = model.samConfig.imgSize / model.samConfig.patchSize;
  if (im.samEmbeddings.length !== c * grid * grid)
    throw new LisaError(`training batch: SAM image embeddings have ${im.samEmbeddings.length} values, expected ${c}×${grid}×${grid}`);
  return [c, grid, grid];
}
function concat(parts: readonly Float32Array[]): Float32Array {
  const out = new Float32Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
}

/** The training graph and the values a step fetches from it (named apart from inference's TrainForward result). */
export interface TrainGraph {
  graph: Graph;
  losses: LossParts;
  embedRows: Value;
  predEmbeddings: Value;
  hidden: Value;
  lowResMasks: Value;
  predMasks: Value[];
}

/**
 * LISAForCausalLM.model_forward as one graph: splice → LLaMA (+ LoRA) over the padded batch with causal and
 * padding masks → lm_head on the CE rows → [SEG] rows → text_hidden_fcs → SAM's mask decoder (one sparse
 * token per [SEG], dense = no_mask_embed, multimask_output=False) → post-processing to each image's size →
 * LISA's losses. The boxes are the same model functions inference runs; trainable tensors are inputs.
 */
export function buildTrainForward(
  model: LisaModel,
  set: TrainingSet,
  s: BatchStructure,
  imageRows: number,
  weights: LossWeights = LISA_LOSS_WEIGHTS,
): TrainGraph {
  if (!s.masks && (weights.bce !== 0 || weights.dice !== 0)) throw new LisaError('training: mask losses need the masks in the batch');
  const cfg = model.config.llama,
    h = cfg.hiddenSize;
  const g = new Graph('lisa_train');
  const w = new ModuleWeights(model.ckpt, '', null, set);
  // The LLM's frozen linear layers at the model's precision (an int4 base for a 7B LoRA run); the rest fp32.
  const llm = w.withQuant(model.llm.quant);
  const grid = model.samConfig.imgSize / model.samConfig.patchSize;
  const embedRows = g.input('embed_rows', 'float32', ['tokens', h]);
  const imageFeatures = g.input('image_features', 'float32', [s.images.length, imageRows, h]);
  const spliceIndex = g.input('splice_index', 'int64', [s.conversations, s.seqLen]);
  const positionIds = g.input('position_ids', 'int64', [s.conversations, s.seqLen]);
  const attnBias = g.input('attn_bias', 'float32', [s.conversations, 1, 1, s.seqLen]);
  const ceRows = g.input('ce_rows', 'int64', [s.ceTargets]);
  const ceTargets = g.input('ce_targets', 'int64', [s.ceTargets]);
  const totalMasks = s.images.reduce((n, im) => n + im.numMasks, 0);
  const segRows = g.input('seg_rows', 'int64', [totalMasks]);
  const maskImage = g.input('mask_image', 'int64', [totalMasks]);
  const c = model.sam.promptEncoder.embedDim;

  const table = g.concat([embedRows, g.reshape(imageFeatures, [-1, h]), g.constant('float32', [1, h], new Float32Array(h))], 0);
  const embeds = g.gather(table, spliceIndex, 0); // [C, S, H]
  const heads = cfg.numHeads,
    kvHeads = cfg.numKvHeads,
    hd = cfg.hiddenSize / heads;
  const io = llamaModel(g, llm, cfg, embeds, positionIds, (q, k, v) =>
    mergeHeads(
      g,
      attention(g, splitHeads(g, q, heads, hd), splitHeads(g, k, kvHeads, hd), splitHeads(g, v, kvHeads, hd), {
        causal: true,
        bias: attnBias,
      }),
      heads,
      hd,
    ),
  );
  const hiddenFlat = g.reshape(io.hidden, [-1, h]);
  const ceWeight = s.ceWeighted ? g.input('ce_weight', 'float32', [s.ceTargets]) : null;
  const ce = crossEntropy(g, lmHead(g, llm, cfg, g.gather(hiddenFlat, ceRows, 0)), ceTargets, ceWeight);

  const perImage: { pred: Value; gt: Value; numMasks: number }[] = [];
  let predEmbeddings: Value = g.constant('float32', [0, model.config.outDim], new Float32Array(0));
  let lowResMasks: Value = g.constant('float32', [0, 1, 4 * grid, 4 * grid], new Float32Array(0));
  let classLoss: Value | null = null;
  if (totalMasks > 0) predEmbeddings = textHiddenFcs(g, w.sub('model').sub('text_hidden_fcs').sub(0), g.gather(hiddenFlat, segRows, 0));
  if (totalMasks > 0 && s.classes) {
    // The default model: which detector class each [SEG] asks for (models/seg-prompts.ts), CE over the classes.
    const logits = w.sub('model').linear(g, predEmbeddings, 'seg_class_head');
    classLoss = crossEntropy(g, logits, g.input('seg_classes', 'int64', [totalMasks]));
  }
  if (totalMasks > 0 && s.masks) {
    const imageEmbeddings = g.input('image_embeddings', 'float32', [s.images.length, c, grid, grid]);
    const vm = w.sub('model').sub('visual_model');
    const pe = g.constant('float32', [1, c, grid, grid], model.imagePe(), 'image_pe');
    const { masks } = samMaskDecoder(
      g,
      vm.sub('mask_decoder'),
      g.gather(imageEmbeddings, maskImage, 0),
      pe,
      g.unsqueeze(predEmbeddings, [1]),
      vm.sub('prompt_encoder').param(g, 'no_mask_embed.weight'),
    );
    lowResMasks = g.slice(masks, [0], [1], [1]); // multimask_output=False: mask token 0
    let first = 0;
    s.images.forEach((im, i) => {
      if (im.numMasks === 0) return;
      const low = g.slice(lowResMasks, [first], [first + im.numMasks], [0]);
      first += im.numMasks;
      const [hh, ww] = im.originalSize;
      const post = postprocessMasks(
        g,
        low,
        { rows: constAxisResize(g, im.resize[0], hh), cols: constAxisResize(g, im.resize[1], ww) },
        model.samConfig.imgSize,
      );
      perImage.push({
        pred: g.reshape(post, [im.numMasks, hh, ww]),
        gt: g.input(`gt_masks_${i}`, 'float32', [im.numMasks, hh, ww]),
        numMasks: im.numMasks,
      });
    });
  }
  const losses = lisaLoss(g, ce, perImage, weights, classLoss);
  return { graph: g, losses, embedRows, predEmbeddings, hidden: io.hidden, lowResMasks, predMasks: perImage.map((p) => p.pred) };
}
