import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import sharp from 'sharp';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { readSafetensors } from '../src/io/safetensors.js';
import { FIXTURES, ROOT, tempDir } from './helpers.js';

/**
 * `lisa train`, `lisa merge` and `--check-data` as a user runs them, on the tiny checkpoint and the two real
 * images of fixtures/train-step/inputs, in the user data format (polygons from their labelme files).
 */

const CKPT = join(FIXTURES, 'lisa-tiny', 'checkpoint');
const CLIP = join(CKPT, 'clip-vit-tiny-patch14');
const INPUTS = join(FIXTURES, 'train-step', 'inputs');
const tmp = tempDir('lisa-train-');
after(() => tmp[Symbol.dispose]());
const CACHE = join(tmp.path, 'cache');

function lisa(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [join(ROOT, 'bin', 'lisa.js'), ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}
const polygons = (file: string): [number, number][][] =>
  (JSON.parse(readFileSync(join(INPUTS, file), 'utf8')) as { shapes: { points: [number, number][] }[] }).shapes.map((s) => s.points);

const data = join(tmp.path, 'data.jsonl');
before(() => {
  const lines = [
    {
      image: join(INPUTS, 'synthetic.png'),
      question: 'What is the red box in this image?',
      answer: 'Sure, it is [SEG].',
      masks: [polygons('synthetic.json')],
    },
    {
      image: join(INPUTS, 'portrait_240x360.png'),
      question: 'What would a person sit on in this room?',
      masks: [polygons('portrait.json')],
    },
    {
      image: join(INPUTS, 'portrait_240x360.png'),
      question: 'Please segment the chair.',
      answer: '[SEG].',
      masks: [polygons('portrait.json')],
    },
  ];
  writeFileSync(data, lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
});

const trainArgs = (out: string, steps = 4): string[] => [
  'train',
  '--model',
  CKPT,
  '--vision-tower',
  CLIP,
  '--data',
  data,
  '--out',
  out,
  '--steps',
  String(steps),
  '--warmup',
  '1',
  '--lr',
  '3e-3',
  '--save-every',
  '1',
  '--threads',
  '1',
  '--cache-dir',
  CACHE,
  '--seed',
  '7',
];

interface Log {
  step: number;
  loss: number;
  lr: number;
}
const readLog = (out: string): Log[] =>
  readFileSync(join(out, 'log.jsonl'), 'utf8')
    .trim()
    .split('\n')
    .map((l) => JSON.parse(l) as Log);

describe('lisa train', () => {
  const full = join(tmp.path, 'full');
  before(() => {
    const r = lisa(...trainArgs(full));
    assert.equal(r.code, 0, r.stderr);
  });

  it('writes a JSONL log per step, checkpoints, and its loss falls', () => {
    const log = readLog(full);
    assert.deepEqual(
      log.map((l) => l.step),
      [1, 2, 3, 4],
    );
    assert.ok(log[3]!.loss < log[0]!.loss, `loss ${log.map((l) => l.loss.toFixed(3)).join(' → ')}`);
    assert.ok(existsSync(join(full, 'checkpoint-4', 'trainable.safetensors')));
    assert.equal((JSON.parse(readFileSync(join(full, 'latest.json'), 'utf8')) as { step: number }).step, 4);
  });

  it('trains LoRA on a frozen int4 base (block 128, zero points): the loss falls as in fp32', () => {
    const out = join(tmp.path, 'int4');
    const r = lisa(...trainArgs(out), '--precision', 'int4');
    assert.equal(r.code, 0, r.stderr);
    const q = readLog(out),
      f = readLog(full);
    assert.ok(q[3]!.loss < q[0]!.loss, `int4 loss ${q.map((l) => l.loss.toFixed(3)).join(' → ')}`);
    // The base's quantisation error moves the losses a little, never far (the gradient reads the zero points).
    for (let i = 0; i < 4; i++)
      assert.ok(Math.abs(q[i]!.loss - f[i]!.loss) < 0.1 * f[i]!.loss, `step ${i + 1}: ${q[i]!.loss} vs ${f[i]!.loss}`);
    assert.notEqual(q[0]!.loss, f[0]!.loss, "the int4 base ran (its loss is not fp32's to the bit)");
  });

  it('killed with SIGKILL mid-run, the same command resumes on the same trajectory', async () => {
    const out = join(tmp.path, 'killed');
    const child = spawn(process.execPath, [join(ROOT, 'bin', 'lisa.js'), ...trainArgs(out)], { stdio: 'ignore' });
    // Kill it as soon as its second checkpoint exists (mid-way through step 3).
    await new Promise<void>((resolve, reject) => {
      const t = setInterval(() => {
        if (existsSync(join(out, 'checkpoint-2'))) {
          clearInterval(t);
          child.kill('SIGKILL');
          resolve();
        }
      }, 20);
      child.on('exit', () => {
        clearInterval(t);
        reject(new Error('the run ended before it could be killed'));
      });
    });
    await new Promise((r) => child.on('exit', r));
    assert.ok(!existsSync(join(out, 'checkpoint-4')));
    const r = lisa(...trainArgs(out));
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /resuming from .*checkpoint-[23] \(step [23] of 4\)/);
    assert.deepEqual(
      readLog(out).map((l) => [l.step, l.loss, l.lr]),
      readLog(full).map((l) => [l.step, l.loss, l.lr]),
    );
    const a = readSafetensors(join(full, 'checkpoint-4', 'trainable.safetensors')),
      b = readSafetensors(join(out, 'checkpoint-4', 'trainable.safetensors'));
    try {
      assert.equal(a.tensors.length, b.tensors.length);
      for (const t of a.tensors)
        assert.deepEqual(b.tensors.find((x) => x.name === t.name)!.bytes(), t.bytes(), `${t.name} differs after the resume`);
    } finally {
      a.close();
      b.close();
    }
  });

  it('Ctrl-C (SIGINT) finishes the step, saves a checkpoint and exits 0; the same command resumes', async () => {
    const out = join(tmp.path, 'interrupted');
    const child = spawn(process.execPath, [join(ROOT, 'bin', 'lisa.js'), ...trainArgs(out, 30)], { stdio: ['ignore', 'ignore', 'pipe'] });
    let stderr = '';
    child.stderr!.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    await new Promise<void>((resolve) => {
      const t = setInterval(() => {
        if (existsSync(join(out, 'checkpoint-1'))) {
          clearInterval(t);
          child.kill('SIGINT');
          resolve();
        }
      }, 20);
    });
    const code = await new Promise<number | null>((r) => child.on('exit', r));
    assert.equal(code, 0, stderr);
    const m = /stopped at step (\d+); checkpoint saved/.exec(stderr);
    assert.ok(m, stderr);
    assert.equal((JSON.parse(readFileSync(join(out, 'latest.json'), 'utf8')) as { step: number }).step, Number(m[1]));
    assert.ok(Number(m[1]) < 30);
  });

  it('refuses to resume a run folder with other settings', () => {
    const r = lisa(...trainArgs(full, 5));
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^lisa: .*full: holds a run with other settings \(steps\); use another --out/);
  });

  it('lisa merge writes the released layout, folds LoRA into q_proj/v_proj, and lisa segment loads it', () => {
    const merged = join(tmp.path, 'merged');
    const r = lisa('merge', '--model', CKPT, '--checkpoint', full, '--out', merged);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /merged 4 LoRA layers and \d+ trained tensors/);
    for (const f of ['config.json', 'tokenizer.model', 'added_tokens.json', 'model.safetensors']) assert.ok(existsSync(join(merged, f)), f);
    const base = openCheckpoint(CKPT),
      m = openCheckpoint(merged),
      t = readSafetensors(join(full, 'checkpoint-4', 'trainable.safetensors'));
    try {
      assert.deepEqual([...m.tensors.keys()].sort(), [...base.tensors.keys()].sort());
      for (const [n, ref] of base.tensors) assert.equal(m.get(n).dtype, ref.dtype, n);
      // q_proj of layer 0: W + B·A·(16/8), recomputed here in float64 from the run's adapter.
      const mod = 'model.layers.0.self_attn.q_proj';
      const w = base.get(`${mod}.weight`).float32(),
        got = m.get(`${mod}.weight`).float32();
      const A = t.tensors.find((x) => x.name === `${mod}.lora_A.default.weight`)!,
        B = t.tensors.find((x) => x.name === `${mod}.lora_B.default.weight`)!;
      const a = A.float32(),
        b = B.float32(),
        [rank, inF] = A.shape as [number, number];
      let maxDiff = 0,
        maxDelta = 0;
      for (let o = 0; o < got.length / inF; o++)
        for (let i = 0; i < inF; i++) {
          let d = 0;
          for (let k = 0; k < rank; k++) d += b[o * rank + k]! * a[k * inF + i]!;
          maxDiff = Math.max(maxDiff, Math.abs(got[o * inF + i]! - (w[o * inF + i]! + 2 * d)));
          maxDelta = Math.max(maxDelta, Math.abs(2 * d));
        }
      assert.ok(maxDelta > 1e-4, 'the adapter moved q_proj');
      assert.ok(maxDiff < 1e-6, `merged q_proj off by ${maxDiff}`);
      const trained = m.get('model.text_hidden_fcs.0.0.weight').float32(),
        fromRun = t.tensors.find((x) => x.name === 'model.text_hidden_fcs.0.0.weight')!.float32();
      assert.deepEqual(trained, fromRun);
    } finally {
      base.close();
      m.close();
      t.close();
    }
    const s = lisa(
      'segment',
      '--model',
      merged,
      '--vision-tower',
      CLIP,
      '--image',
      join(INPUTS, 'synthetic.png'),
      '--query',
      'What is the red box?',
      '--answer',
      'Sure, [SEG].',
      '--out',
      join(tmp.path, 'seg'),
      '--cache-dir',
      CACHE,
    );
    assert.equal(s.code, 0, s.stderr);
    assert.ok(existsSync(join(tmp.path, 'seg', 'synthetic_mask_0.png')));
    assert.equal(lisa('merge', '--model', CKPT, '--checkpoint', full, '--out', merged).code, 1, 'a non-empty --out is refused');
    // Sharded output (and a sharded input: the merged folder as the base of a second merge).
    const sharded = join(tmp.path, 'merged-sharded');
    const r2 = lisa('merge', '--model', CKPT, '--checkpoint', full, '--out', sharded, '--max-shard-gb', '0.01');
    assert.equal(r2.code, 0, r2.stderr);
    const index = JSON.parse(readFileSync(join(sharded, 'model.safetensors.index.json'), 'utf8')) as { weight_map: Record<string, string> };
    assert.ok(new Set(Object.values(index.weight_map)).size > 2, 'several shards');
    const a = openCheckpoint(merged),
      b = openCheckpoint(sharded);
    try {
      for (const [n, t] of a.tensors) assert.deepEqual(b.get(n).bytes(), t.bytes(), n);
    } finally {
      a.close();
      b.close();
    }
    const again = lisa('merge', '--model', sharded, '--checkpoint', full, '--out', join(tmp.path, 'merged-twice'));
    assert.equal(again.code, 0, again.stderr);
  });
});

describe('random init of trained parts (training from scratch)', () => {
  it("gives text_hidden_fcs PyTorch's default Linear init and leaves every other tensor as the checkpoint has it", async () => {
    const { TrainingSet, LISA_TRAIN_SPEC } = await import('../src/train/params.js');
    const { reinitialize } = await import('../src/train/trainer.js');
    const ckpt = openCheckpoint(CKPT);
    try {
      const set = new TrainingSet(ckpt, LISA_TRAIN_SPEC);
      const names = reinitialize(set, ['text_hidden_fcs'], 3);
      assert.deepEqual(names.sort(), [
        'model.text_hidden_fcs.0.0.bias',
        'model.text_hidden_fcs.0.0.weight',
        'model.text_hidden_fcs.0.2.bias',
        'model.text_hidden_fcs.0.2.weight',
      ]);
      const w = set.params.get('model.text_hidden_fcs.0.0.weight')!.value,
        bound = 1 / Math.sqrt(64);
      assert.ok(w.every((x) => Math.abs(x) <= bound) && Math.max(...w) > 0.9 * bound && Math.min(...w) < -0.9 * bound, 'U(±1/√fan_in)');
      assert.notDeepEqual(w, ckpt.get('model.text_hidden_fcs.0.0.weight').float32());
      assert.deepEqual(set.params.get('lm_head.weight')!.value, ckpt.get('lm_head.weight').float32());
      const norm = reinitialize(set, ['transformer.layers.0.norm1'], 3);
      assert.equal(norm.length, 2);
      assert.ok(set.params.get('model.visual_model.mask_decoder.transformer.layers.0.norm1.weight')!.value.every((x) => x === 1));
      assert.ok(set.params.get('model.visual_model.mask_decoder.transformer.layers.0.norm1.bias')!.value.every((x) => x === 0));
    } finally {
      ckpt.close();
    }
  });
});

describe('lisa train --check-data', () => {
  it('lists every bad sample with its line and exits 1; a clean file passes', async () => {
    const empty = join(tmp.path, 'empty.png');
    await sharp({ create: { width: 321, height: 241, channels: 3, background: { r: 0, g: 0, b: 0 } } })
      .png()
      .toFile(empty);
    const bad = join(tmp.path, 'bad.jsonl');
    writeFileSync(
      bad,
      [
        { image: join(INPUTS, 'synthetic.png'), question: 'What is the box?', answer: 'Sure, [SEG].', masks: [polygons('synthetic.json')] },
        { image: join(tmp.path, 'missing.jpg'), question: 'What is it?', masks: [polygons('synthetic.json')] },
        { image: join(INPUTS, 'synthetic.png'), question: 'What is it?', masks: [empty] },
        {
          image: join(INPUTS, 'synthetic.png'),
          question: 'What is it?',
          masks: [
            [
              [
                [10, 10],
                [400, 10],
                [400, 50],
              ],
            ],
          ],
        },
        { image: join(INPUTS, 'synthetic.png'), question: 'What is it?', answer: 'It is a box.', masks: [polygons('synthetic.json')] },
      ]
        .map((l) => JSON.stringify(l))
        .join('\n'),
    );
    const r = lisa('train', '--model', CKPT, '--vision-tower', CLIP, '--data', bad, '--check-data');
    assert.equal(r.code, 1);
    assert.match(r.stdout, /bad\.jsonl:2: image .*missing\.jpg does not exist/);
    assert.match(r.stdout, /bad\.jsonl:3: mask 0 is empty/);
    assert.match(r.stdout, /bad\.jsonl:4: polygon 0 point \(400, 10\) is outside the 321x241 image/);
    assert.match(r.stdout, /bad\.jsonl:5: 1 mask\(s\) given but the answer has no \[SEG\]/);
    assert.doesNotMatch(r.stdout, /bad\.jsonl:1:/);
    assert.match(r.stdout, /5 samples checked, 4 with problems/);
    assert.match(r.stderr, /^lisa: 4 of 5 samples have problems/);
    const ok = lisa('train', '--model', CKPT, '--vision-tower', CLIP, '--data', data, '--check-data');
    assert.equal(ok.code, 0, ok.stdout + ok.stderr);
  });

  it('a malformed data line names the file and line', () => {
    const f = join(tmp.path, 'malformed.jsonl');
    writeFileSync(f, '{"image": "a.jpg", "question": "q", "masks": []}\n{"image": 3}\n');
    const r = lisa('train', '--model', CKPT, '--vision-tower', CLIP, '--data', f, '--check-data');
    assert.equal(r.code, 1);
    assert.match(r.stderr, /^lisa: .*malformed\.jsonl:2: "image" must be a path string\n$/);
  });
});

describe('the product path after training: a generated [SEG] gives a mask', () => {
  it('a tiny model trained to answer "[SEG]." generates it, and its mask equals the teacher-forced one', () => {
    const one = join(tmp.path, 'one.jsonl'),
      run = join(tmp.path, 'seg-run'),
      merged = join(tmp.path, 'seg-merged');
    const question = 'What is the red box in this image? Please output segmentation mask.';
    writeFileSync(
      one,
      JSON.stringify({ image: join(INPUTS, 'synthetic.png'), question, answer: '[SEG].', masks: [polygons('synthetic.json')] }) + '\n',
    );
    const t = lisa(
      'train',
      '--model',
      CKPT,
      '--vision-tower',
      CLIP,
      '--data',
      one,
      '--out',
      run,
      '--steps',
      '24',
      '--warmup',
      '1',
      '--lr',
      '1e-2',
      '--save-every',
      '24',
      '--batch-size',
      '1',
      '--cache-dir',
      CACHE,
    );
    assert.equal(t.code, 0, t.stderr);
    assert.equal(lisa('merge', '--model', CKPT, '--checkpoint', run, '--out', merged).code, 0);
    const seg = (extra: string[]): { text: string; masks: { rle: { counts: string; size: [number, number] }; score: number }[] } => {
      const out = join(tmp.path, `seg-${extra.length}`);
      const r = lisa(
        'segment',
        '--model',
        merged,
        '--vision-tower',
        CLIP,
        '--image',
        join(INPUTS, 'synthetic.png'),
        '--query',
        question,
        '--max-new-tokens',
        '8',
        '--out',
        out,
        '--cache-dir',
        CACHE,
        ...extra,
      );
      assert.equal(r.code, 0, r.stderr);
      return JSON.parse(readFileSync(join(out, 'synthetic.json'), 'utf8')) as ReturnType<typeof seg>;
    };
    const generated = seg([]);
    assert.match(generated.text, /^\[SEG\] ?\.?(<\/s>)?$/, `generated "${generated.text}"`);
    assert.equal(generated.masks.length, 1);
    assert.deepEqual(generated.masks[0]!.rle.size, [241, 321]);
    // The [SEG] hidden state is the same whether generated (KV cache) or teacher-forced: so is the mask.
    const forced = seg(['--answer', '[SEG].']);
    assert.equal(generated.masks[0]!.rle.counts, forced.masks[0]!.rle.counts);
    assert.ok(
      Math.abs(generated.masks[0]!.score - forced.masks[0]!.score) < 1e-5,
      `IoU prediction ${generated.masks[0]!.score} vs ${forced.masks[0]!.score}`,
    );
  });
});

describe('lisa train on the real-image sanity set, validated each epoch', () => {
  it('trains on ../shared/data (VOC, COCO, labelme as ReasonSeg layout), its loss falls, and validation gIoU is logged', () => {
    const sanity = join(tmp.path, 'sanity'),
      run = join(tmp.path, 'sanity-run');
    const s = lisa('sanity-set', '--out', sanity, '--data', join(FIXTURES, '..', 'data'));
    assert.equal(s.code, 0, s.stderr);
    const r = lisa(
      'train',
      '--model',
      CKPT,
      '--vision-tower',
      CLIP,
      '--data',
      sanity,
      '--split',
      'val',
      '--out',
      run,
      '--steps',
      '8',
      '--warmup',
      '1',
      '--lr',
      '3e-3',
      '--save-every',
      '4',
      '--steps-per-epoch',
      '4',
      '--val',
      sanity,
      '--val-split',
      'val',
      '--val-limit',
      '2',
      '--cache-dir',
      CACHE,
      '--seed',
      '3',
    );
    assert.equal(r.code, 0, r.stderr);
    const log = readLog(run) as (Log & { val_giou?: number })[];
    assert.equal(log.length, 8);
    const mean = (xs: Log[]): number => xs.reduce((a, l) => a + l.loss, 0) / xs.length;
    assert.ok(mean(log.slice(6)) < mean(log.slice(0, 2)), `loss ${log.map((l) => l.loss.toFixed(3)).join(' → ')}`);
    const vals = log.filter((l) => l.val_giou !== undefined);
    assert.deepEqual(
      vals.map((l) => l.step),
      [4, 8],
    );
    for (const v of vals) assert.ok(v.val_giou! >= 0 && v.val_giou! <= 1);
    const state = JSON.parse(readFileSync(join(run, 'checkpoint-8', 'state.json'), 'utf8')) as { best: { step: number } | null };
    assert.ok(state.best && [4, 8].includes(state.best.step));
    assert.ok(existsSync(join(run, `checkpoint-${state.best.step}`)), 'the best checkpoint is kept');
  });
});
