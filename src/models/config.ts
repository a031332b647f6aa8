import { existsSync, readFileSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { LisaError } from '../errors.js';

/** A small JSON file of a model folder, parsed; one line naming the file when it is not. */
function readConfigJson(path: string): unknown {
  if (statSync(path).size > 4 * 1024 * 1024) throw new LisaError(`${path}: too large for a config file`);
  try {
    return JSON.parse(readFileSync(path, 'utf8')) as unknown;
  } catch (e) {
    throw new LisaError(`${path}: not valid JSON (${(e as Error).message})`);
  }
}

function readConfig(path: string): Record<string, unknown> {
  if (!existsSync(path)) throw new LisaError(`${path}: not found`);
  if (statSync(path).size > 4 * 1024 * 1024) throw new LisaError(`${path}: too large for a config file`);
  try {
    const j = JSON.parse(readFileSync(path, 'utf8')) as unknown;
    if (typeof j !== 'object' || j === null || Array.isArray(j)) throw new Error('not an object');
    return j as Record<string, unknown>;
  } catch (e) {
    throw new LisaError(`${path}: not valid JSON (${(e as Error).message})`);
  }
}

function int(cfg: Record<string, unknown>, key: string, where: string, dflt?: number): number {
  const v = cfg[key] ?? dflt;
  if (!Number.isSafeInteger(v) || (v as number) <= 0)
    throw new LisaError(`${where}: field "${key}" must be a positive integer, found ${JSON.stringify(cfg[key])}`);
  return v as number;
}
function num(cfg: Record<string, unknown>, key: string, where: string, dflt?: number): number {
  const v = cfg[key] ?? dflt;
  if (typeof v !== 'number' || !Number.isFinite(v))
    throw new LisaError(`${where}: field "${key}" must be a number, found ${JSON.stringify(cfg[key])}`);
  return v;
}

/** The LLaMA part of LISA's config.json (transformers LlamaConfig fields). */
export interface LlamaConfig {
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  numKvHeads: number;
  vocabSize: number;
  rmsNormEps: number;
  ropeTheta: number;
  maxPositionEmbeddings: number;
  bosTokenId: number;
  eosTokenId: number;
  tieWordEmbeddings: boolean;
}

export interface LisaConfig {
  llama: LlamaConfig;
  /** CLIP width the projector takes (mm_hidden_size). */
  mmHiddenSize: number;
  mmVisionSelectLayer: number;
  mmUseImStartEnd: boolean;
  outDim: number;
  visionTower: string | null;
  /** lisa-ts's own towers (config.json "lisa_ts"); null for a released LISA checkpoint (CLIP + SAM ViT). */
  towers: TowerConfig | null;
}

/** A TF.js graph-model detector as the vision tower (models/detector-tower.ts). Paths are absolute. */
export interface DetectorTowerConfig {
  model: string;
  /** The detector's square input side. */
  inputSize: number;
  classes: string[];
  /** The JSON file the class names come from. */
  classesFile: string;
}

/** How a [SEG] becomes SAM prompts: its class similarity weights the detector's boxes (models/seg-prompts.ts). */
export interface SegPromptConfig {
  /** A box is kept when p(class | [SEG]) · score reaches this… */
  minScore: number;
  /** …or this fraction of the best box's. */
  relativeScore: number;
  maxBoxes: number;
  /** A [SEG] is generated only when the detector's heatmap peak for its class reaches this. */
  presenceThreshold: number;
}

/** The default model's image-grounded class choice (inference/class-choice.ts); absent: the LLM's class stands. */
export interface ClassChoiceConfig {
  /** The LLM's class is kept over a seen one only when it is more likely by more than this many nats. */
  margin: number;
  /** Seen classes scored, most confident detections first. */
  candidates: number;
  /** Greedy tokens read to find the class the LLM names. */
  probeTokens: number;
}

export interface TowerConfig {
  vision: DetectorTowerConfig;
  classChoice: ClassChoiceConfig | null;
  /** An ONNX SAM image encoder in the folder (e.g. MobileSAM's), instead of the checkpoint's ViT. */
  samImageEncoder: string;
  segPrompts: SegPromptConfig;
}

/** config.json's "lisa_ts" block: names the towers of a model lisa-ts built (the default model), relative to its folder. */
function towersFromConfig(c: Record<string, unknown>, dir: string, path: string): TowerConfig | null {
  const t = c.lisa_ts;
  if (t === undefined) return null;
  const obj = (v: unknown, where: string): Record<string, unknown> => {
    if (typeof v !== 'object' || v === null || Array.isArray(v)) throw new LisaError(`${path}: ${where} must be an object`);
    return v as Record<string, unknown>;
  };
  const file = (v: unknown, where: string): string => {
    if (typeof v !== 'string' || !v) throw new LisaError(`${path}: ${where} must be a file name in the model folder`);
    const f = resolve(dir, v);
    if (!existsSync(f) || !statSync(f).isFile()) throw new LisaError(`${path}: ${where} names ${v}, which is not in ${dir}`);
    return f;
  };
  const top = obj(t, '"lisa_ts"');
  const v = obj(top.vision_tower, 'lisa_ts.vision_tower');
  if (v.type !== 'tfjs-detector')
    throw new LisaError(`${path}: lisa_ts.vision_tower.type must be "tfjs-detector", found ${JSON.stringify(v.type)}`);
  const classesFile = file(v.classes, 'lisa_ts.vision_tower.classes');
  const classes = readConfigJson(classesFile);
  if (!Array.isArray(classes) || classes.length === 0 || !classes.every((x) => typeof x === 'string'))
    throw new LisaError(`${classesFile}: must be a JSON list of class names`);
  const p = obj(top.seg_prompts, 'lisa_ts.seg_prompts');
  const where = `${path}: lisa_ts`;
  const cc = top.class_choice === undefined ? null : obj(top.class_choice, 'lisa_ts.class_choice');
  return {
    vision: {
      model: file(v.model, 'lisa_ts.vision_tower.model'),
      inputSize: int(v, 'input_size', `${where}.vision_tower`),
      classes: classes as string[],
      classesFile,
    },
    classChoice: cc && {
      margin: num(cc, 'margin', `${where}.class_choice`),
      candidates: int(cc, 'candidates', `${where}.class_choice`, 5),
      probeTokens: int(cc, 'probe_tokens', `${where}.class_choice`, 8),
    },
    samImageEncoder: file(top.sam_image_encoder, 'lisa_ts.sam_image_encoder'),
    segPrompts: {
      minScore: num(p, 'min_score', `${where}.seg_prompts`),
      relativeScore: num(p, 'relative_score', `${where}.seg_prompts`),
      maxBoxes: int(p, 'max_boxes', `${where}.seg_prompts`),
      presenceThreshold: num(p, 'presence_threshold', `${where}.seg_prompts`),
    },
  };
}

/** The LlamaConfig fields of a config.json (LISA's, or a plain HF LlamaForCausalLM's). */
function llamaFromConfig(c: Record<string, unknown>, path: string): LlamaConfig {
  if (c.rope_scaling != null) throw new LisaError(`${path}: rope_scaling is not supported (LISA uses none)`);
  if (c.hidden_act !== undefined && c.hidden_act !== 'silu')
    throw new LisaError(`${path}: hidden_act ${JSON.stringify(c.hidden_act)} is not supported (LLaMA uses silu)`);
  const heads = int(c, 'num_attention_heads', path);
  const cfg: LlamaConfig = {
    hiddenSize: int(c, 'hidden_size', path),
    intermediateSize: int(c, 'intermediate_size', path),
    numLayers: int(c, 'num_hidden_layers', path),
    numHeads: heads,
    numKvHeads: int(c, 'num_key_value_heads', path, heads),
    vocabSize: int(c, 'vocab_size', path),
    rmsNormEps: num(c, 'rms_norm_eps', path, 1e-6),
    ropeTheta: num(c, 'rope_theta', path, 10000),
    maxPositionEmbeddings: int(c, 'max_position_embeddings', path, 2048),
    bosTokenId: int(c, 'bos_token_id', path, 1),
    eosTokenId: int(c, 'eos_token_id', path, 2),
    tieWordEmbeddings: c.tie_word_embeddings === true,
  };
  if (cfg.hiddenSize % cfg.numHeads !== 0 || cfg.numHeads % cfg.numKvHeads !== 0)
    throw new LisaError(
      `${path}: hidden_size ${cfg.hiddenSize}, ${cfg.numHeads} heads and ${cfg.numKvHeads} kv heads do not divide evenly`,
    );
  return cfg;
}

export function readLlamaConfig(dir: string): LlamaConfig {
  const path = join(dir, 'config.json');
  return llamaFromConfig(readConfig(path), path);
}

export function readLisaConfig(dir: string): LisaConfig {
  const path = join(dir, 'config.json');
  const c = readConfig(path);
  if (c.model_type !== 'llava')
    throw new LisaError(`${path}: model_type ${JSON.stringify(c.model_type)} is not a LISA checkpoint (expected "llava")`);
  if (c.train_mask_decoder === undefined)
    throw new LisaError(`${path}: no "train_mask_decoder" key: a LLaVA checkpoint without LISA's SAM head, not a LISA checkpoint`);
  return {
    llama: llamaFromConfig(c, path),
    mmHiddenSize: int(c, 'mm_hidden_size', path, 1024),
    mmVisionSelectLayer: Number.isInteger(c.mm_vision_select_layer) ? (c.mm_vision_select_layer as number) : -2,
    mmUseImStartEnd: c.mm_use_im_start_end !== false,
    outDim: int(c, 'out_dim', path, 256),
    visionTower: typeof c.vision_tower === 'string' ? c.vision_tower : typeof c.mm_vision_tower === 'string' ? c.mm_vision_tower : null,
    towers: towersFromConfig(c, dir, path),
  };
}

/** HF CLIPVisionConfig (from a CLIPModel config.json's vision_config, or a CLIPVisionModel's own). */
export interface ClipVisionConfig {
  hiddenSize: number;
  intermediateSize: number;
  numLayers: number;
  numHeads: number;
  patchSize: number;
  imageSize: number;
  layerNormEps: number;
  hiddenAct: string;
}

export interface ClipPreprocessorConfig {
  shortestEdge: number;
  cropSize: number;
  mean: [number, number, number];
  std: [number, number, number];
}

export function readClipConfig(dir: string): { vision: ClipVisionConfig; preprocess: ClipPreprocessorConfig } {
  const path = join(dir, 'config.json');
  const c = readConfig(path);
  const v = (typeof c.vision_config === 'object' && c.vision_config !== null ? c.vision_config : c) as Record<string, unknown>;
  const act = typeof v.hidden_act === 'string' ? v.hidden_act : 'quick_gelu';
  if (act !== 'quick_gelu' && act !== 'gelu') throw new LisaError(`${path}: vision hidden_act ${act} is not supported`);
  const vision: ClipVisionConfig = {
    hiddenSize: int(v, 'hidden_size', path, 768),
    intermediateSize: int(v, 'intermediate_size', path, 3072),
    numLayers: int(v, 'num_hidden_layers', path, 12),
    numHeads: int(v, 'num_attention_heads', path, 12),
    patchSize: int(v, 'patch_size', path, 32),
    imageSize: int(v, 'image_size', path, 224),
    layerNormEps: num(v, 'layer_norm_eps', path, 1e-5),
    hiddenAct: act,
  };
  const ppPath = join(dir, 'preprocessor_config.json');
  const p = existsSync(ppPath) ? readConfig(ppPath) : {};
  const size = typeof p.size === 'object' && p.size !== null ? (p.size as Record<string, unknown>).shortest_edge : p.size;
  const crop = typeof p.crop_size === 'object' && p.crop_size !== null ? (p.crop_size as Record<string, unknown>).height : p.crop_size;
  const triple = (key: string, dflt: number[]): [number, number, number] => {
    const a = p[key] ?? dflt;
    if (!Array.isArray(a) || a.length !== 3 || !a.every((x) => typeof x === 'number'))
      throw new LisaError(`${ppPath}: ${key} must be three numbers`);
    return a as [number, number, number];
  };
  if (p.do_center_crop === false || p.do_resize === false || p.do_normalize === false)
    throw new LisaError(`${ppPath}: only the openai CLIP preprocessing (resize, centre crop, normalise) is supported`);
  if (p.resample !== undefined && p.resample !== 3)
    throw new LisaError(`${ppPath}: resample ${String(p.resample)} is not supported (expected 3, bicubic)`);
  return {
    vision,
    preprocess: {
      shortestEdge: Number.isInteger(size) ? (size as number) : 224,
      cropSize: Number.isInteger(crop) ? (crop as number) : 224,
      mean: triple('image_mean', [0.48145466, 0.4578275, 0.40821073]),
      std: triple('image_std', [0.26862954, 0.26130258, 0.27577711]),
    },
  };
}
