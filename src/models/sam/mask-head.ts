import { Graph } from '../../graph/graph.js';
import { cachedPromise, type Engine, type EngineSession } from '../../graph/session.js';
import { f32, hostTensor, type HostTensor } from '../../graph/tensor.js';
import type { Checkpoint } from '../../io/checkpoint.js';
import { ModuleWeights } from '../module.js';
import { samMaskDecoder } from './mask-decoder.js';
import { postprocessMasks, torchLinearWeights, type AxisResize } from './postprocess.js';
import { SamPromptEncoder } from './prompt-encoder.js';

/**
 * SAM's prompt side on one set of weights: the prompt encoder (host-side), the mask decoder and mask
 * post-processing (onnxruntime sessions, built on first use). LISA feeds it [SEG] embeddings as sparse
 * tokens; SAM's own points and boxes go through `promptEncoder.embedPrompts` first.
 */
export class SamMaskHead {
  readonly promptEncoder: SamPromptEncoder;
  private readonly sessions = new Map<'decoder' | 'post', Promise<EngineSession>>();
  private pe: Float32Array | null = null;

  constructor(
    readonly ckpt: Checkpoint,
    readonly prefix: string,
    readonly engine: Engine,
    readonly imgSize = 1024,
    readonly grid = 64,
  ) {
    this.promptEncoder = new SamPromptEncoder(new ModuleWeights(ckpt, prefix).sub('prompt_encoder'), [grid, grid], [imgSize, imgSize]);
  }

  /** get_dense_pe(), computed once. */
  imagePe(): Float32Array {
    this.pe ??= this.promptEncoder.denseImagePe();
    return this.pe;
  }

  private decoderSession(): Promise<EngineSession> {
    return cachedPromise(this.sessions, 'decoder', () => this.engine.load(this.decoderGraph()));
  }

  decoderGraph(): Graph {
    const g = new Graph('sam_mask_decoder');
    const c = this.promptEncoder.embedDim;
    const w = new ModuleWeights(this.ckpt, this.prefix);
    const emb = g.input('image_embeddings', 'float32', [1, c, this.grid, this.grid]);
    const sparse = g.input('sparse', 'float32', ['n', 't', c]);
    const pe = g.constant('float32', [1, c, this.grid, this.grid], this.imagePe(), 'image_pe');
    const { masks, iou } = samMaskDecoder(
      g,
      w.sub('mask_decoder'),
      emb,
      pe,
      sparse,
      w.sub('prompt_encoder').param(g, 'no_mask_embed.weight'),
    );
    g.output(masks, 'masks');
    g.output(iou, 'iou_predictions');
    return g;
  }

  /** The mask decoder for N prompts of T sparse tokens each, on one image: all mask tokens [N, 4, 256, 256], IoU [N, 4]. */
  async decode(
    imageEmbeddings: HostTensor,
    sparse: Float32Array,
    n: number,
    tokens: number,
  ): Promise<{ masks: HostTensor; iou: HostTensor }> {
    const out = await (
      await this.decoderSession()
    ).run({ image_embeddings: imageEmbeddings, sparse: f32([n, tokens, this.promptEncoder.embedDim], sparse) });
    return { masks: out.masks!, iou: out.iou_predictions! };
  }

  private postSession(): Promise<EngineSession> {
    return cachedPromise(this.sessions, 'post', () => this.engine.load(this.postGraph()));
  }

  postGraph(): Graph {
    const g = new Graph('sam_postprocess');
    const low = 4 * this.grid;
    const masks = g.input('masks', 'float32', ['n', 'm', low, low]);
    const axis = (name: string, n: string): AxisResize => ({
      i0: g.input(`${name}_i0`, 'int64', [n]),
      i1: g.input(`${name}_i1`, 'int64', [n]),
      w0: g.input(`${name}_w0`, 'float32', [n]),
      w1: g.input(`${name}_w1`, 'float32', [n]),
    });
    g.output(postprocessMasks(g, masks, { rows: axis('rows', 'H'), cols: axis('cols', 'W') }, this.imgSize), 'pred_masks');
    return g;
  }

  /** Sam.postprocess_masks: [N, M, 256, 256] low-res logits → [N, M, H, W] logits at the original size. */
  async postprocess(lowRes: HostTensor, resize: readonly [number, number], originalSize: readonly [number, number]): Promise<HostTensor> {
    const feeds: Record<string, HostTensor> = { masks: lowRes };
    const add = (name: string, inSize: number, outSize: number): void => {
      const w = torchLinearWeights(inSize, outSize);
      feeds[`${name}_i0`] = hostTensor('int64', [outSize], w.i0);
      feeds[`${name}_i1`] = hostTensor('int64', [outSize], w.i1);
      feeds[`${name}_w0`] = f32([outSize], w.w0);
      feeds[`${name}_w1`] = f32([outSize], w.w1);
    };
    add('rows', resize[0], originalSize[0]);
    add('cols', resize[1], originalSize[1]);
    return (await (await this.postSession()).run(feeds)).pred_masks!;
  }

  async release(): Promise<void> {
    for (const s of this.sessions.values()) await (await s).release();
    this.sessions.clear();
  }
}

/**
 * One mask per prompt from the decoder's mask tokens: multimask_output=False → token 0 (LISA's rule);
 * True → the best-scoring of tokens 1..3 (SAM's usual pick for an ambiguous prompt). [N, 1, h, w] and scores [N].
 */
export function selectMaskToken(masks: HostTensor, iou: HostTensor, multimask: boolean): { lowRes: HostTensor; scores: Float32Array } {
  const [n, m, mh, mw] = masks.shape as [number, number, number, number];
  const data = masks.data as Float32Array,
    all = iou.data as Float32Array;
  const low = new Float32Array(n * mh * mw),
    scores = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const s = all.subarray(i * m, (i + 1) * m);
    let pick = 0;
    if (multimask) {
      pick = 1;
      for (let k = 2; k < m; k++) if (s[k]! > s[pick]!) pick = k;
    }
    low.set(data.subarray((i * m + pick) * mh * mw, (i * m + pick + 1) * mh * mw), i * mh * mw);
    scores[i] = s[pick]!;
  }
  return { lowRes: f32([n, 1, mh, mw], low), scores };
}
