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
const polygons = (file: string): [number, number][][] => (JSON.parse(readFileSync(join(INPUTS, file), 'utf8')) as { shapes: { points: [number, number][] }[] }).shapes.map((s) => s.points);

const data = join(tmp.path, 'data.jsonl');
before(() => {
  const lines = [
    { image: join(INPUTS, 'synthetic.png'), question: 'What is the red box in this image?', answer: 'Sure, it is [SEG].', masks: [polygons('synthetic.json')] },
    { image: join(INPUTS, 'portrait_240x360.png'), question: 'What would a person sit on in this room?', masks: [polygons('portrait.json')] },
    { image: join(INPUTS, 'portrait_240x360.png'), question: 'Please segment the chair.', answer: '[SEG].', masks: [polygons('portrait.json')] },
  ];
  writeFileSync(data, lines.map((l) => JSON.stringify(l)).join('\n') + '\n');
});

const trainArgs = (out: string, steps = 4): string[] => ['train', '--model', CKPT, '--vision-tower', CLIP, '--data', data, '--out', out, '--steps', String(steps),
  '--warmup', '1', '--lr', '3e-3', '--save-every', '1', '--threads', '1', '--cache-dir', CACHE, '--seed', '7'];

interface Log { step: number; loss: number; lr: number }
const readLog = (out: string): Log[] => readFileSync(join(out, 'log.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as Log);

describe('lisa train', () => {
  const full = join(tmp.path, 'full');
  before(() => {
    const r = lisa(...trainArgs(full));
    assert.equal(r.code, 0, r.stderr);
  });

  it('writes a JSONL log per step, checkpoints, and its loss falls', () => {
    const log = readLog(full);
    assert.deepEqual(log.map((l) => l.step), [1, 2, 3, 4]);
    assert.ok(log[3]!.loss < log[0]!.loss, `loss ${log.map((l) => l.loss.toFixed(3)).join(' → ')}`);
    assert.ok(existsSync(join(full, 'checkpoint-4', 'trainable.safetensors')));
    assert.equal((JSON.parse(readFileSync(join(full, 'latest.json'), 'utf8')) as { step: number }).step, 4);
  });

  it('killed with SIGKILL mid-run, the same command resumes on the same trajectory', async () => {
    const out = join(tmp.path, 'killed');
    const child = spawn(process.execPath, [join(ROOT, 'bin', 'lisa.js'), ...trainArgs(out)], { stdio: 'ignore' });
    // Kill it as soon as its second checkpoint exists (mid-way through step 3).
    await new Promise<void>((resolve, reject) => {
      const t = setInterval(() => {
        if (existsSync(join(out, 'checkpoint-2'))) { clearInterval(t); child.kill('SIGKILL'); resolve(); }
      }, 20);
      child.on('exit', () => { clearInterval(t); reject(new Error('the run ended before it could be killed')); });
    });
    await new Promise((r) => child.on('exit', r));
    assert.ok(!existsSync(join(out, 'checkpoint-4')));
    const r = lisa(...trainArgs(out));
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stderr, /resuming from .*checkpoint-[23] \(step [23] of 4\)/);
    assert.deepEqual(readLog(out).map((l) => [l.step, l.loss, l.lr]), readLog(full).map((l) => [l.step, l.loss, l.lr]));
    const a = readSafetensors(join(full, 'checkpoint-4', 'trainable.safetensors')), b = readSafetensors(join(out, 'checkpoint-4', 'trainable.safetensors'));
    try {
      assert.equal(a.tensors.length, b.tensors.length);
      for (const t of a.tensors) assert.deepEqual(b.tensors.find((x) => x.name === t.name)!.bytes(), t.bytes(), `${t.name} differs after the resume`);
    } finally { a.close(); b.close(); }
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
    const base = openCheckpoint(CKPT), m = openCheckpoint(merged), t = readSafetensors(join(full, 'checkpoint-4', 'trainable.safetensors'));
    try {
      assert.deepEqual([...m.tensors.keys()].sort(), [...base.tensors.keys()].sort());
      for (const [n, ref] of base.tensors) assert.equal(m.get(n).dtype, ref.dtype, n);
      // q_proj of layer 0: W + B·A·(16/8), recomputed here in float64 from the run's adapter.
      const mod = 'model.layers.0.self_attn.q_proj';
      const w = base.get(`${mod}.weight`).float32(), got = m.get(`${mod}.weight`).float32();
      const A = t.tensors.find((x) => x.name === `${mod}.lora_A.default.weight`)!, B = t.tensors.find((x) => x.name === `${mod}.lora_B.default.weight`)!;
      const a = A.float32(), b = B.float32(), [rank, inF] = A.shape as [number, number];
      let maxDiff = 0, maxDelta = 0;
      for (let o = 0; o < got.length / inF; o++) for (let i = 0; i < inF; i++) {
        let d = 0; for (let k = 0; k < rank; k++) d += b[o * rank + k]! * a[k * inF + i]!;
        maxDiff = Math.max(maxDiff, Math.abs(got[o * inF + i]! - (w[o * inF + i]! + 2 * d)));
        maxDelta = Math.max(maxDelta, Math.abs(2 * d));
      }
      assert.ok(maxDelta > 1e-4, 'the adapter moved q_proj');
      assert.ok(maxDiff < 1e-6, `merged q_proj off by ${maxDiff}`);
      const trained = m.get('model.text_hidden_fcs.0.0.weight').float32(), fromRun = t.tensors.find((x) => x.name === 'model.text_hidden_fcs.0.0.weight')!.float32();
      assert.deepEqual(trained, fromRun);
    } finally { base.close(); m.close(); t.close(); }
    const s = lisa('segment', '--model', merged, '--vision-tower', CLIP, '--image', join(INPUTS, 'synthetic.png'), '--query', 'What is the red box?', '--answer', 'Sure, [SEG].', '--out', join(tmp.path, 'seg'), '--cache-dir', CACHE);
    assert.equal(s.code, 0, s.stderr);
    assert.ok(existsSync(join(tmp.path, 'seg', 'synthetic_mask_0.png')));
    assert.equal(lisa('merge', '--model', CKPT, '--checkpoint', full, '--out', merged).code, 1, 'a non-empty --out is refused');
  });
});

describe('lisa train --check-data', () => {
  it('lists every bad sample with its line and exits 1; a clean file passes', async () => {
    const empty = join(tmp.path, 'empty.png');
    await sharp({ create: { width: 321, height: 241, channels: 3, background: { r: 0, g: 0, b: 0 } } }).png().toFile(empty);
    const bad = join(tmp.path, 'bad.jsonl');
    writeFileSync(bad, [
      { image: join(INPUTS, 'synthetic.png'), question: 'What is the box?', answer: 'Sure, [SEG].', masks: [polygons('synthetic.json')] },
      { image: join(tmp.path, 'missing.jpg'), question: 'What is it?', masks: [polygons('synthetic.json')] },
      { image: join(INPUTS, 'synthetic.png'), question: 'What is it?', masks: [empty] },
      { image: join(INPUTS, 'synthetic.png'), question: 'What is it?', masks: [[[[10, 10], [400, 10], [400, 50]]]] },
      { image: join(INPUTS, 'synthetic.png'), question: 'What is it?', answer: 'It is a box.', masks: [polygons('synthetic.json')] },
    ].map((l) => JSON.stringify(l)).join('\n'));
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
