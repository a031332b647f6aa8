import { mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { checkOutputDir } from '../io/file.js';
import { join } from 'node:path';
import { LisaError } from '../errors.js';
import type { AnyTypedArray, DType } from '../io/dtype.js';
import { encodeNpy } from '../io/npy.js';
import type { RgbImage } from '../image/decode.js';
import { samNormalizePad } from '../image/preprocess.js';
import type { LisaModel } from '../models/lisa.js';
import { argmax } from './generate.js';
import { logSumExp } from './losses.js';
import { imageRows, runChat, trainForward } from './pipeline.js';

export interface DumpOptions {
  question: string;
  maxNewTokens?: number;
  /** 0-based new-token indexes at which [SEG] is forced (a second, forced generation). */
  forceSegAt?: number[];
  /** Teacher-forced answer (with [SEG]) for the training-style forward, and its ground-truth masks. */
  answer?: string;
  gtMasks?: Uint8Array[];
}

interface ArrayEntry {
  file: string;
  dtype: DType;
  shape: number[];
}

/**
 * Runs the official code paths (chat.py + evaluate, optionally a forced [SEG], optionally model_forward with
 * an answer) and writes every intermediate as .npy plus manifest.json, named and shaped as the parity
 * fixtures (`fixtures/lisa-tiny/golden`). Written into a temp folder, then renamed into place.
 */
/** An earlier `lisa dump` output (its manifest names the format): the only non-empty folder a dump replaces. */
export function isDumpFolder(dir: string): boolean {
  try {
    return (JSON.parse(readFileSync(join(dir, 'manifest.json'), 'utf8')) as { format?: unknown }).format === 'lisa-ts-dump-v1';
  } catch {
    return false;
  }
}

export async function dumpIntermediates(
  model: LisaModel,
  image: RgbImage,
  outDir: string,
  opts: DumpOptions,
): Promise<Record<string, unknown>> {
  const clip = model.clipConfig,
    clipPre = model.clipPreprocess;
  if (!clip || !clipPre)
    throw new LisaError(`${model.dir}: lisa dump writes the official code's CLIP intermediates; this model has no CLIP tower`);
  const tmp = `${outDir}.tmp-${process.pid}`;
  rmSync(tmp, { recursive: true, force: true });
  mkdirSync(tmp, { recursive: true });
  const arrays: Record<string, ArrayEntry> = {};
  const put = (name: string, dtype: DType, shape: number[], data: AnyTypedArray): void => {
    writeFileSync(join(tmp, `${name}.npy`), encodeNpy(dtype, shape, data));
    arrays[name] = { file: `${name}.npy`, dtype, shape };
  };
  const i64 = (xs: readonly number[]): BigInt64Array => BigInt64Array.from(xs, BigInt);
  const c = model.config.llama;
  const H = c.hiddenSize,
    V = c.vocabSize;
  const [oh, ow] = [image.height, image.width];
  try {
    const enc = await model.encodeImage(image, { clipHiddenStates: true });
    const crop = clipPre.cropSize,
      s = model.samConfig.imgSize,
      rows = imageRows(model);
    put('image_rgb', 'uint8', [oh, ow, 3], image.data);
    put('clip_pixel_values', 'float32', [1, 3, crop, crop], enc.clipPixels);
    put('sam_resized_rgb', 'uint8', [enc.resize[0], enc.resize[1], 3], enc.samResized.data);
    put('sam_pixel_values', 'float32', [1, 3, s, s], samNormalizePad(enc.samResized, s));
    put('clip_hidden_states_all', 'float32', [clip.numLayers + 1, rows + 1, clip.hiddenSize], enc.clipHiddenStates!);
    put('clip_image_features', 'float32', [1, rows, clip.hiddenSize], enc.clipFeatures);
    put('mm_projector_out', 'float32', [1, rows, H], enc.projected);
    put('sam_image_embeddings', 'float32', [...enc.samEmbeddings.shape], enc.samEmbeddings.data);

    const chat = await runChat(model, enc, opts.question, { maxNewTokens: opts.maxNewTokens ?? 512, keepStepLogits: true }, true);
    const L = chat.input.length;
    put('input_ids', 'int64', [1, chat.input.ids.length], i64(chat.input.ids));
    put('inputs_embeds', 'float32', [1, L, H], chat.input.embeds);
    const layers = new Float32Array(c.numLayers * L * H);
    chat.prefill.layers.forEach((l, i) => layers.set(l, i * L * H));
    put('llm_layer_outputs', 'float32', [c.numLayers, L, H], layers);
    put('llm_final_hidden', 'float32', [L, H], chat.prefill.hidden);
    const am: number[] = [],
      lse = new Float32Array(L);
    for (let p = 0; p < L; p++) {
      const row = chat.prefill.logits.subarray(p * V, (p + 1) * V);
      am.push(argmax(row));
      lse[p] = logSumExp(row);
    }
    put('prompt_logits_argmax', 'int64', [L], i64(am));
    put('prompt_logits_logsumexp', 'float32', [L], lse);
    const last = Math.min(4, L);
    put('prompt_logits_last4', 'float32', [last, V], chat.prefill.logits.slice((L - last) * V));
    const steps = chat.generation.stepLogits;
    const stepLogits = new Float32Array(steps.length * V);
    steps.forEach((r, i) => stepLogits.set(r, i * V));
    put('gen_step_logits', 'float32', [steps.length, V], stepLogits);
    put('gen_last_step_hidden', 'float32', [chat.generation.allHidden.length / H, H], chat.generation.allHidden);
    put('output_ids', 'int64', [1, chat.outputIds.length], i64(chat.outputIds));
    const tokens = chat.input.ids.map((id) => (id === -200 ? '<IMAGE:-200>' : model.tokenizer.idToToken(id)));
    const manifest: Record<string, unknown> = {
      format: 'lisa-ts-dump-v1',
      query: opts.question,
      prompt: chat.input.prompt,
      original_size: [oh, ow],
      resize: enc.resize,
      input_tokens: tokens,
      new_token_ids: chat.generation.tokens,
      new_tokens: chat.generation.tokens.map((id) => model.tokenizer.idToToken(id)),
      text_output: chat.text,
      seg_token_generated: chat.generation.tokens.includes(model.segTokenIdx),
      seg_positions: chat.segPositions,
      stopped: chat.generation.stopped,
    };

    if (opts.forceSegAt && opts.forceSegAt.length > 0) {
      const forced = new Map(opts.forceSegAt.map((k) => [k, model.segTokenIdx]));
      const maxNew = Math.max(opts.maxNewTokens ?? 512, ...opts.forceSegAt.map((k) => k + 1));
      const f = await runChat(model, enc, opts.question, { maxNewTokens: maxNew, forced });
      const n = f.segPositions.length;
      put('forced_output_ids', 'int64', [1, f.outputIds.length], i64(f.outputIds));
      put('forced_gen_last_step_hidden', 'float32', [f.generation.allHidden.length / H, H], f.generation.allHidden);
      put('forced_seg_hidden', 'float32', [n, H], f.seg.segHidden);
      put('forced_pred_embeddings', 'float32', [n, model.sam.promptEncoder.embedDim], f.seg.predEmbeddings);
      put('forced_sparse_embeddings', 'float32', [n, 1, model.sam.promptEncoder.embedDim], f.seg.predEmbeddings);
      put('forced_low_res_masks', 'float32', [...f.seg.lowResMasks.shape], f.seg.lowResMasks.data);
      put('forced_iou_predictions', 'float32', [n, 1], f.seg.iouPredictions);
      put('forced_pred_masks', 'float32', [n, oh, ow], f.seg.predMasks.data);
      manifest.forced_seg = {
        forced_new_token_indexes: opts.forceSegAt,
        new_token_ids: f.generation.tokens,
        seg_positions: f.segPositions,
        text_output: f.text,
      };
    }

    if (opts.answer !== undefined) {
      const gt = opts.gtMasks ?? [];
      const pixels = oh * ow;
      const all = new Uint8Array(gt.length * pixels);
      gt.forEach((m, i) => {
        if (m.length !== pixels) throw new LisaError(`ground-truth mask ${i + 1} has ${m.length} pixels; the image has ${ow}x${oh}`);
        all.set(m, i * pixels);
      });
      const t = await trainForward(model, enc, opts.question, opts.answer, gt.length ? all : null, true);
      const Lt = t.step.hidden.length / H,
        n = t.seg.predEmbeddings.length / model.sam.promptEncoder.embedDim;
      put('train_input_ids', 'int64', [1, t.ids.length], i64(t.ids));
      put('train_labels', 'int64', [1, t.labels.length], i64(t.labels));
      put(
        'train_attention_masks',
        'uint8',
        [1, t.ids.length],
        Uint8Array.from(t.ids, (id) => (id !== 0 ? 1 : 0)),
      );
      const hs = new Float32Array((c.numLayers + 1) * Lt * H);
      hs.set(t.input.embeds, 0); // hidden_states[0] = inputs_embeds
      t.step.layers.slice(0, -1).forEach((l, i) => hs.set(l, (i + 1) * Lt * H));
      hs.set(t.step.hidden, c.numLayers * Lt * H);
      put('train_llm_hidden_states', 'float32', [c.numLayers + 1, Lt, H], hs);
      put('train_text_hidden_fcs_out', 'float32', [Lt, model.sam.promptEncoder.embedDim], await model.textHiddenFcs(t.step.hidden, Lt));
      put(
        'train_seg_token_mask',
        'uint8',
        [1, Lt],
        Uint8Array.from(t.segMask, (b) => (b ? 1 : 0)),
      );
      put('train_seg_hidden', 'float32', [n, H], t.seg.segHidden);
      put('train_pred_embeddings', 'float32', [n, model.sam.promptEncoder.embedDim], t.seg.predEmbeddings);
      put('train_sparse_embeddings', 'float32', [n, 1, model.sam.promptEncoder.embedDim], t.seg.predEmbeddings);
      const grid = s / model.samConfig.patchSize,
        e = model.sam.promptEncoder.embedDim;
      const dense = new Float32Array(n * e * grid * grid);
      for (let i = 0; i < n; i++)
        for (let ch = 0; ch < e; ch++)
          dense.fill(model.sam.promptEncoder.noMaskEmbed[ch]!, (i * e + ch) * grid * grid, (i * e + ch + 1) * grid * grid);
      put('train_dense_embeddings', 'float32', [n, e, grid, grid], dense);
      put('train_image_pe', 'float32', [1, e, grid, grid], model.imagePe());
      put('no_mask_embed', 'float32', [e], model.sam.promptEncoder.noMaskEmbed);
      put('train_low_res_masks', 'float32', [...t.seg.lowResMasks.shape], t.seg.lowResMasks.data);
      put('train_iou_predictions', 'float32', [n, 1], t.seg.iouPredictions);
      put('train_pred_masks', 'float32', [n, oh, ow], t.seg.predMasks.data);
      const targets = t.labelPositions.map((p) => t.splicedLabels[p]!);
      put('train_label_token_ids', 'int64', [targets.length], i64(targets));
      const before = new Float32Array(targets.length * V);
      t.labelPositions.forEach((p, i) => before.set(t.step.logits.subarray((p - 1) * V, p * V), i * V));
      put('train_logits_before_labels', 'float32', [targets.length, V], before);
      if (gt.length) {
        put('gt_mask', 'uint8', gt.length === 1 ? [oh, ow] : [gt.length, oh, ow], all);
        for (const [k, v] of Object.entries(t.losses)) put(`loss_${k}`, 'float32', [], Float32Array.of(v));
      }
      manifest.train = {
        conversation: t.conversation,
        train_tokens: t.ids.map((id) => (id === -200 ? '<IMAGE:-200>' : model.tokenizer.idToToken(id))),
        seg_positions: t.segMask.flatMap((b, i) => (b ? [i] : [])),
        label_positions_spliced: t.labelPositions,
        losses: gt.length ? t.losses : null,
        loss_weights: { ce: 1.0, bce: 2.0, dice: 0.5 },
      };
    }
    manifest.arrays = arrays;
    writeFileSync(join(tmp, 'manifest.json'), JSON.stringify(manifest, null, 1) + '\n');
    // Only an empty folder or an earlier dump is replaced (the CLI checks before running; a library caller too).
    checkOutputDir(outDir, 'dump output', { mustBeEmpty: true, ownOutput: isDumpFolder });
    rmSync(outDir, { recursive: true, force: true });
    renameSync(tmp, outDir);
    return manifest;
  } catch (e) {
    rmSync(tmp, { recursive: true, force: true });
    throw e;
  }
}
