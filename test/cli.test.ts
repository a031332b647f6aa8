import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import sharp from 'sharp';
import { FIXTURES, officialMaskFlips, ROOT, tempDir } from './helpers.js';

function lisa(...args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [join(ROOT, 'bin', 'lisa.js'), ...args], { encoding: 'utf8' });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

describe('lisa inspect', () => {
  it('lists tensors and a summary', () => {
    const r = lisa('inspect', join(FIXTURES, 'torch-bin'));
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /model\.extra\.shared_b\s+float32\s+\[3, 4\]/);
    assert.match(r.stdout, /18 tensors, 1,091 parameters/);
    assert.match(r.stdout, /bfloat16\s+7 tensors/);
  });

  it('--json gives the same as data', () => {
    const r = lisa('inspect', '--json', join(FIXTURES, 'lisa-tiny', 'checkpoint'));
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout) as {
      tensors: { name: string; shape: number[] }[];
      summary: { count: number; bytesByDtype: Record<string, number> };
    };
    assert.equal(j.summary.count, 203);
    assert.deepEqual(j.tensors.find((t) => t.name === 'model.embed_tokens.weight')?.shape, [32003, 64]);
    assert.equal(j.summary.bytesByDtype.float32, 9_068_320 * 4);
  });

  it('a corrupt file gives one error line and exit code 1; usage errors exit 2', () => {
    using d = tempDir();
    const p = join(d.path, 'broken.safetensors');
    writeFileSync(p, Buffer.from([8, 0, 0, 0, 0, 0, 0, 0, 0x7b, 0x7b]));
    const r = lisa('inspect', p);
    assert.equal(r.code, 1);
    assert.equal(r.stdout, '');
    assert.match(r.stderr, /^lisa: .*broken\.safetensors: safetensors header claims 8 bytes/);
    assert.equal(r.stderr.trim().split('\n').length, 1, 'no stack trace');
    assert.equal(lisa('inspect').code, 2);
    assert.equal(lisa('frobnicate').code, 2);
    assert.equal(lisa('--help').code, 0);
  });
});

describe('lisa train-step', () => {
  const ckpt = join(FIXTURES, 'lisa-tiny', 'checkpoint');
  it('runs the official step and prints its losses', () => {
    using d = tempDir();
    const r = lisa(
      'train-step',
      '--model',
      ckpt,
      '--vision-tower',
      join(ckpt, 'clip-vit-tiny-patch14'),
      '--fixture',
      join(FIXTURES, 'train-step'),
      '--variant',
      'nodrop',
      '--out',
      join(d.path, 'out'),
      '--cache-dir',
      join(d.path, 'cache'),
    );
    assert.equal(r.code, 0, r.stderr);
    const m = /^loss ([\d.]+) \(ce ([\d.]+), bce ([\d.]+), dice ([\d.]+)\); grad norm ([\d.]+)/.exec(r.stdout);
    assert.ok(m, r.stdout);
    // The official step's values (fixtures/train-step/manifest.json).
    [12.090801, 10.353586, 1.308278, 0.428937, 10.052935].forEach((ref, i) =>
      assert.ok(Math.abs(Number(m[i + 1]) - ref) <= 2e-5 * ref, `${m[i + 1]} vs ${ref}`),
    );
  });
  it('a folder that is not a fixture, or an unknown variant, gives one line and exit code 1', () => {
    using d = tempDir();
    const base = [
      'train-step',
      '--model',
      ckpt,
      '--vision-tower',
      join(ckpt, 'clip-vit-tiny-patch14'),
      '--out',
      join(d.path, 'out'),
      '--cache-dir',
      join(d.path, 'cache'),
    ];
    const a = lisa(...base, '--fixture', d.path, '--variant', 'nodrop');
    assert.equal(a.code, 1);
    assert.match(a.stderr, /^lisa: .*: no manifest\.json \(expected a folder laid out like fixtures\/train-step\)\n$/);
    const b = lisa(...base, '--fixture', join(FIXTURES, 'train-step'), '--variant', 'other');
    assert.equal(b.code, 1);
    assert.match(b.stderr, /^lisa: .*manifest\.json: no variant "other" \(has nodrop, drop, peftinit_nodrop\)\n$/);
  });
});

describe('usage errors exit 2 with one line; --version', () => {
  it('bad option values, a thread count above the cores, eval with --queue and --predictions', () => {
    const model = join(FIXTURES, 'lisa-tiny', 'checkpoint');
    const cases: [string[], RegExp][] = [
      [
        ['segment', '--model', model, '--image', 'x.png', '--query', 'q', '--precision', 'int3'],
        /--precision.*int3.*Allowed choices are auto, fp32, int8, int4/,
      ],
      [['segment', '--model', model, '--image', 'x.png', '--query', 'q', '--sam-precision', 'fp16'], /--sam-precision.*fp16/],
      [['segment', '--model', model, '--image', 'x.png', '--query', 'q', '--threads', '1000'], /--threads must be at most \d+, got "1000"/],
      [['eval', '--model', model, '--data', '.', '--dataset', 'foo'], /--dataset.*foo.*Allowed choices are reasonseg/],
      [['eval', '--model', model, '--data', '.', '--dataset', 'reasonseg', '--protocol', 'fast'], /--protocol.*fast/],
      [
        ['eval', '--data', '.', '--dataset', 'reasonseg', '--queue', 'redis://127.0.0.1:1', '--predictions', '.'],
        /--queue and --predictions/,
      ],
    ];
    for (const [args, re] of cases) {
      const r = lisa(...args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, re);
      assert.equal(r.stderr.trim().split('\n').length, 1, `one line: ${r.stderr}`);
    }
    const v = lisa('--version');
    assert.equal(v.code, 0);
    assert.match(v.stdout, /^\d+\.\d+\.\d+\n$/);
  });
});

describe('lisa chat in a real terminal (a pty through script(1))', () => {
  it('shows a prompt, echoes the question, survives Ctrl-C at the prompt and quits on /quit', async () => {
    const { spawn } = await import('node:child_process');
    const m = join(FIXTURES, 'lisa-tiny');
    using d = tempDir();
    const cmd = [
      process.execPath,
      join(ROOT, 'bin', 'lisa.js'),
      'chat',
      '--model',
      join(m, 'checkpoint'),
      '--vision-tower',
      join(m, 'checkpoint', 'clip-vit-tiny-patch14'),
      '--image',
      join(m, 'golden', 'inputs', 'truck.jpg'),
      '--cache-dir',
      join(d.path, 'cache'),
      '--max-new-tokens',
      '4',
    ]
      .map((a) => `'${a}'`)
      .join(' ');
    const child = spawn('script', ['-qfec', cmd, '/dev/null'], { stdio: ['pipe', 'pipe', 'pipe'] });
    let out = '';
    const waitFor = (re: RegExp, ms = 60000): Promise<void> =>
      new Promise((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`timed out waiting for ${re}; got: ${out}`)), ms);
        const check = (): void => {
          if (re.test(out)) {
            clearTimeout(t);
            resolve();
          }
        };
        child.stdout!.on('data', check);
        check();
      });
    child.stdout!.on('data', (b: Buffer) => {
      out += b.toString();
    });
    await waitFor(/commands: .*\/quit/);
    await waitFor(/> /);
    child.stdin!.write('What is in the picture?\r');
    await waitFor(/ASSISTANT: [^\n]+\n[\s\S]*> /);
    child.stdin!.write('\x03');
    await waitFor(/Ctrl-C again or \/quit to leave/);
    child.stdin!.write('/quit\r');
    const code = await new Promise<number | null>((r) => child.on('exit', r));
    assert.equal(code, 0, out);
    assert.match(out, /> \S*What is in the picture\?/, 'the typed question is echoed after the prompt');
  });
});

describe('lisa segment in a real terminal', () => {
  it('the streamed answer is not wiped by the progress line', () => {
    const m = join(FIXTURES, 'lisa-tiny');
    using d = tempDir();
    const cmd = [
      process.execPath,
      join(ROOT, 'bin', 'lisa.js'),
      'segment',
      '--model',
      join(m, 'checkpoint'),
      '--vision-tower',
      join(m, 'checkpoint', 'clip-vit-tiny-patch14'),
      '--image',
      join(m, 'golden', 'inputs', 'truck.jpg'),
      '--query',
      'What is in the picture?',
      '--max-new-tokens',
      '6',
      '--cache-dir',
      join(d.path, 'cache'),
    ]
      .map((a) => `'${a}'`)
      .join(' ');
    const r = spawnSync('script', ['-qfec', cmd, '/dev/null'], { encoding: 'utf8' });
    assert.equal(r.status, 0, r.stdout);
    const start = r.stdout.indexOf('ballogger'); // the tiny checkpoint's first generated token, as the parity tests check
    assert.ok(start >= 0, r.stdout);
    const line = r.stdout.slice(start, r.stdout.indexOf('\n', start));
    assert.doesNotMatch(line, /\x1b\[K/, 'no clear-line sequence after the answer started');
    assert.match(r.stdout, /\d+\.\d+ s \(image/);
  });
});

describe('lisa eval exit codes', () => {
  it('a missing --predictions folder, and a run where no query could be scored, exit 1', async () => {
    const { mkdirSync } = await import('node:fs');
    using d = tempDir();
    const val = join(d.path, 'data', 'val');
    mkdirSync(val, { recursive: true });
    writeFileSync(join(val, 'a.json'), JSON.stringify({ text: ['the cat'], is_sentence: false, shapes: [] }));
    writeFileSync(join(val, 'a.jpg'), 'not a jpeg');
    const a = lisa(
      'eval',
      '--data',
      join(d.path, 'data'),
      '--dataset',
      'reasonseg',
      '--predictions',
      join(d.path, 'none'),
      '--out',
      join(d.path, 'o1'),
    );
    assert.equal(a.code, 1);
    assert.match(a.stderr, /^lisa: --predictions .*none: no such folder\n$/);
    mkdirSync(join(d.path, 'preds'));
    const b = lisa(
      'eval',
      '--data',
      join(d.path, 'data'),
      '--dataset',
      'reasonseg',
      '--predictions',
      join(d.path, 'preds'),
      '--out',
      join(d.path, 'o2'),
    );
    assert.equal(b.code, 1, b.stdout + b.stderr);
    assert.match(b.stderr, /^lisa: no query could be scored \(1 errors, the first: .*a\.jpg: not a readable image/m);
  });
});

describe('output and cache folders are checked before the model runs; nothing is lost', () => {
  const m = join(FIXTURES, 'lisa-tiny');
  const base = [
    '--model',
    join(m, 'checkpoint'),
    '--vision-tower',
    join(m, 'checkpoint', 'clip-vit-tiny-patch14'),
    '--image',
    join(m, 'golden', 'inputs', 'truck.jpg'),
    '--query',
    'q',
  ];
  it('dump refuses a folder with other files (and leaves them), a file, or a place under a file', async () => {
    const { mkdirSync, readdirSync } = await import('node:fs');
    using d = tempDir();
    const keep = join(d.path, 'mine');
    mkdirSync(keep);
    writeFileSync(join(keep, 'notes.txt'), 'precious');
    const a = lisa('dump', ...base, '--out', keep, '--cache-dir', join(d.path, 'cache'));
    assert.equal(a.code, 1);
    assert.match(a.stderr, /^lisa: --out .*mine: the folder is not empty and holds no earlier output of this command/);
    assert.deepEqual(readdirSync(keep), ['notes.txt']);
    const file = join(d.path, 'file');
    writeFileSync(file, 'x');
    assert.match(lisa('dump', ...base, '--out', file).stderr, /^lisa: --out .*file: is a file, not a folder\n$/);
    assert.match(
      lisa('segment', ...base, '--out', join(file, 'sub')).stderr,
      /^lisa: --out .*: .*file is a file, so the folder cannot be made under it\n$/,
    );
    const c = lisa('segment', ...base, '--cache-dir', file);
    assert.equal(c.code, 1);
    assert.match(c.stderr, /^lisa: --cache-dir .*file: is a file, not a folder\n$/);
  });
});

describe('long inputs', () => {
  const m = join(FIXTURES, 'lisa-tiny');
  const base = [
    'segment',
    '--model',
    join(m, 'checkpoint'),
    '--vision-tower',
    join(m, 'checkpoint', 'clip-vit-tiny-patch14'),
    '--image',
    join(m, 'golden', 'inputs', 'truck.jpg'),
  ];
  it('a question longer than the model takes is one line naming the lengths, before the image is encoded', () => {
    using d = tempDir();
    const r = lisa(...base, '--query', 'what is this '.repeat(2600), '--cache-dir', join(d.path, 'cache'));
    assert.equal(r.code, 1);
    assert.match(
      r.stderr,
      /^lisa: the prompt is \d+ positions \(\d+ tokens \+ 255 more for the image's 256 rows\) but the model takes at most 2048; shorten the question\n$/,
    );
  });
  it('a ~34 KB command line runs (it crashed onnxruntime with SIGSEGV on the default stack)', () => {
    using d = tempDir();
    const points = Array.from({ length: 2200 }, (_, i) => ['--point', `${10 + (i % 500)},${10 + (i % 300)}`]).flat();
    const r = lisa(...base, ...points, '--cache-dir', join(d.path, 'cache'));
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /mask 0: area \d+ px/);
  });
});

describe('smaller everyday fixes', () => {
  const m = join(FIXTURES, 'lisa-tiny');
  const ckpt = join(m, 'checkpoint');
  it('tokenize gives -200 for <image> (tokenizer_image_token) and reads --input - from stdin', () => {
    const r = lisa('tokenize', '--model', ckpt, '--json', 'Look: <image>\nWhat is it?');
    assert.equal(r.code, 0, r.stderr);
    const j = JSON.parse(r.stdout) as { ids: number[]; pieces: string[] };
    assert.equal(j.ids[0], 1);
    assert.ok(j.ids.includes(-200));
    assert.equal(j.pieces[j.ids.indexOf(-200)], '<image>');
    const s = spawnSync(process.execPath, [join(ROOT, 'bin', 'lisa.js'), 'tokenize', '--model', ckpt, '--input', '-'], {
      input: '"hello"\n"world"\n',
      encoding: 'utf8',
    });
    assert.equal(s.status, 0, s.stderr);
    assert.equal(s.stdout.trim().split('\n').length, 2);
    const missing = lisa('tokenize', '--model', ckpt, '--input', join(ROOT, 'no-such.jsonl'));
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /^lisa: --input .*no-such\.jsonl: no such file\n$/);
  });
  it('--json | head ends quietly (EPIPE), with exit 0', () => {
    const r = spawnSync(
      'sh',
      [
        '-c',
        `'${process.execPath}' '${join(ROOT, 'bin', 'lisa.js')}' inspect --json '${ckpt}' | head -c 10 > /dev/null; echo "status ` +
          `\${PIPESTATUS:-0}"`,
      ],
      { encoding: 'utf8' },
    );
    assert.doesNotMatch(r.stderr, /EPIPE|Error/);
  });
  it('--json without --out names no mask files; mask PNGs are single-channel; --box outside the image is refused before encoding', async () => {
    using d = tempDir();
    const base = [
      'segment',
      '--model',
      ckpt,
      '--vision-tower',
      join(ckpt, 'clip-vit-tiny-patch14'),
      '--image',
      join(m, 'golden', 'inputs', 'truck.jpg'),
      '--query',
      'q',
      '--answer',
      'Sure, [SEG].',
      '--cache-dir',
      join(d.path, 'cache'),
    ];
    const j = lisa(...base, '--json');
    assert.equal(j.code, 0, j.stderr);
    const masks = (JSON.parse(j.stdout) as { masks: Record<string, unknown>[] }).masks;
    assert.equal(masks.length, 1);
    assert.ok(!('file' in masks[0]!));
    const w = lisa(...base, '--out', join(d.path, 'o'));
    assert.equal(w.code, 0, w.stderr);
    assert.equal((await sharp(join(d.path, 'o', 'truck_mask_0.png')).metadata()).channels, 1);
    const b = lisa(...base, '--box', '10,10,5000,50');
    assert.equal(b.code, 1);
    assert.match(b.stderr, /^lisa: --box 10,10,5000,50 is outside the 1800x1200 image\n$/);
  });
});

describe('one line instead of a stack trace', () => {
  const m = join(FIXTURES, 'lisa-tiny');
  const ckpt = join(m, 'checkpoint');
  it('--image a folder, eval/sanity-set --out a file, a prediction that is a folder, config.json not matching the weights, /save onto a file', async () => {
    const { mkdirSync, readdirSync, symlinkSync, readFileSync: rf } = await import('node:fs');
    using d = tempDir();
    const oneLine = (r: { code: number | null; stderr: string }, re: RegExp): void => {
      assert.equal(r.code, 1, r.stderr);
      assert.match(r.stderr, re);
      assert.doesNotMatch(r.stderr, /\n\s+at /, 'no stack trace');
    };
    oneLine(
      lisa(
        'segment',
        '--model',
        ckpt,
        '--vision-tower',
        join(ckpt, 'clip-vit-tiny-patch14'),
        '--image',
        d.path,
        '--query',
        'q',
        '--cache-dir',
        join(d.path, 'c'),
      ),
      /the folder holds no JPEG, PNG or WebP image\n$/,
    );
    const file = join(d.path, 'file');
    writeFileSync(file, 'x');
    oneLine(lisa('sanity-set', '--out', file, '--data', join(FIXTURES, '..', 'data')), /^lisa: --out .*file: is a file, not a folder\n$/);
    const data = join(d.path, 'data', 'val');
    mkdirSync(data, { recursive: true });
    writeFileSync(join(data, 'a.json'), JSON.stringify({ text: ['the cat'], is_sentence: false, shapes: [] }));
    writeFileSync(join(data, 'a.jpg'), readFileSync(join(m, 'golden', 'inputs', 'truck.jpg')));
    oneLine(
      lisa('eval', '--data', join(d.path, 'data'), '--dataset', 'reasonseg', '--predictions', d.path, '--out', file),
      /^lisa: --out .*file: is a file, not a folder\n$/,
    );
    const preds = join(d.path, 'preds');
    mkdirSync(join(preds, 'a.png'), { recursive: true });
    const p = lisa('eval', '--data', join(d.path, 'data'), '--dataset', 'reasonseg', '--predictions', preds, '--out', join(d.path, 'e'));
    oneLine(p, /no query could be scored \(1 errors, the first: .*a\.png: is a folder, not an image file\)/);
    const bad = join(d.path, 'badcfg');
    mkdirSync(bad);
    for (const f of readdirSync(ckpt)) if (f !== 'config.json') symlinkSync(join(ckpt, f), join(bad, f));
    const cfg = JSON.parse(rf(join(ckpt, 'config.json'), 'utf8')) as Record<string, unknown>;
    writeFileSync(join(bad, 'config.json'), JSON.stringify({ ...cfg, intermediate_size: 999 }));
    oneLine(
      lisa(
        'segment',
        '--model',
        bad,
        '--vision-tower',
        join(ckpt, 'clip-vit-tiny-patch14'),
        '--image',
        join(m, 'golden', 'inputs', 'truck.jpg'),
        '--query',
        'q',
        '--cache-dir',
        join(d.path, 'c'),
      ),
      /^lisa: .*badcfg\/config\.json: intermediate_size, hidden_size give model\.layers\.0\.mlp\.gate_proj\.weight the shape \[999, 64\], but the checkpoint has \[172, 64\]\n$/,
    );
    const chat = spawnSync(
      process.execPath,
      [
        join(ROOT, 'bin', 'lisa.js'),
        'chat',
        '--model',
        ckpt,
        '--vision-tower',
        join(ckpt, 'clip-vit-tiny-patch14'),
        '--image',
        join(m, 'golden', 'inputs', 'truck.jpg'),
        '--cache-dir',
        join(d.path, 'c'),
        '--max-new-tokens',
        '2',
      ],
      { input: `What is it?\n/save ${file}\n/image ${d.path}\nAnd now?\n/quit\n`, encoding: 'utf8' },
    );
    assert.equal(chat.status, 0, chat.stderr);
    assert.match(chat.stderr, /lisa: \/save .*file: is a file, not a folder/);
    assert.match(chat.stderr, /lisa: .*: is a folder, not an image file/);
    assert.equal((chat.stdout.match(/ASSISTANT:/g) ?? []).length, 2, 'the chat goes on after both mistakes');
  });
});

describe('eval and convert share the model options', () => {
  it('eval and convert take --precision, --sam-precision and --low-memory; sanity-set needs --data', () => {
    for (const cmd of ['eval', 'convert']) {
      const h = lisa(cmd, '--help');
      assert.equal(h.code, 0);
      for (const flag of ['--precision', '--sam-precision', '--low-memory', '--threads', '--cache-dir', '--vision-tower'])
        assert.ok(h.stdout.includes(flag), `${cmd} --help lacks ${flag}`);
    }
    const s = lisa('sanity-set', '--out', 'x');
    assert.equal(s.code, 2);
    assert.match(s.stderr, /required option '--data <dir>'/);
  });
});

describe('lisa cache', () => {
  it('lists graphs and converted weights with sizes, and clears by name', () => {
    using d = tempDir();
    const m = join(FIXTURES, 'lisa-tiny', 'checkpoint');
    const c = join(d.path, 'cache');
    assert.equal(lisa('convert', '--model', m, '--vision-tower', join(m, 'clip-vit-tiny-patch14'), '--cache-dir', c).code, 0);
    const l = lisa('cache', 'list', '--cache-dir', c, '--json');
    assert.equal(l.code, 0, l.stderr);
    const entries = (JSON.parse(l.stdout) as { entries: { kind: string; name: string; bytes: number }[] }).entries;
    assert.ok(entries.some((e) => e.kind === 'graph' && e.name.startsWith('clip-')));
    assert.ok(entries.some((e) => e.kind === 'weights' && e.bytes > 0));
    const r = lisa('cache', 'clear', 'clip', '--cache-dir', c);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /^removed \d+ graphs? \(/);
    const after = (JSON.parse(lisa('cache', 'list', '--cache-dir', c, '--json').stdout) as { entries: { name: string }[] }).entries;
    assert.ok(!after.some((e) => e.name.startsWith('clip-')));
    assert.equal(lisa('cache', 'clear', 'nosuch', '--cache-dir', c).code, 1);
  });
});

describe('lisa segment over several images', () => {
  it('one process, one result set per image (same stems kept apart), a summary, and failures listed with exit 1', async () => {
    const { mkdirSync, copyFileSync, existsSync: ex } = await import('node:fs');
    using d = tempDir();
    const m = join(FIXTURES, 'lisa-tiny');
    const ckpt = join(m, 'checkpoint');
    mkdirSync(join(d.path, 'a'));
    mkdirSync(join(d.path, 'b'));
    copyFileSync(join(m, 'golden', 'inputs', 'truck.jpg'), join(d.path, 'a', 'photo.jpg'));
    copyFileSync(join(m, 'golden', 'inputs', 'synthetic.png'), join(d.path, 'b', 'photo.png'));
    writeFileSync(join(d.path, 'b', 'broken.jpg'), 'not an image');
    const out = join(d.path, 'out');
    const r = lisa(
      'segment',
      '--model',
      ckpt,
      '--vision-tower',
      join(ckpt, 'clip-vit-tiny-patch14'),
      '--image',
      join(d.path, 'a', 'photo.jpg'),
      join(d.path, 'b'),
      '--query',
      'What can carry cargo?',
      '--answer',
      'Sure, [SEG].',
      '--out',
      out,
      '--cache-dir',
      join(d.path, 'c'),
    );
    assert.equal(r.code, 1, r.stderr);
    assert.match(r.stdout, /2 of 3 images segmented, 2 masks, results in /);
    assert.match(r.stderr, /lisa: .*broken\.jpg: not a readable image/);
    assert.match(r.stderr, /lisa: 1 of 3 images failed \(listed above\)/);
    for (const f of ['photo.json', 'photo_mask_0.png', 'photo_2.json', 'photo_2_mask_0.png']) assert.ok(ex(join(out, f)), f);
    const second = JSON.parse(readFileSync(join(out, 'photo_2.json'), 'utf8')) as { width: number; image: string };
    assert.equal(second.width, 321, 'the PNG with the same stem got its own files');
  });
});

describe('a trustworthy cache', () => {
  const m = join(FIXTURES, 'lisa-tiny', 'checkpoint');
  const convert = (cache: string): string[] => [
    'convert',
    '--model',
    m,
    '--vision-tower',
    join(m, 'clip-vit-tiny-patch14'),
    '--cache-dir',
    cache,
  ];
  /** `lisa segment` on the truck with a teacher-forced [SEG] answer, using `cache`. */
  const segmentTruck = (cache: string, query = 'q', ...extra: string[]): string[] => [
    'segment',
    '--model',
    m,
    '--vision-tower',
    join(m, 'clip-vit-tiny-patch14'),
    '--image',
    join(FIXTURES, 'lisa-tiny', 'golden', 'inputs', 'truck.jpg'),
    '--query',
    query,
    '--answer',
    'Sure, [SEG].',
    ...extra,
    '--cache-dir',
    cache,
  ];
  it('two processes building the same graphs at once both succeed, and what they leave loads', async () => {
    const { spawn } = await import('node:child_process');
    const { readdirSync } = await import('node:fs');
    using d = tempDir();
    const c = join(d.path, 'cache');
    const run = (): Promise<number | null> =>
      new Promise((r) => spawn(process.execPath, [join(ROOT, 'bin', 'lisa.js'), ...convert(c)], { stdio: 'ignore' }).on('exit', r));
    assert.deepEqual(await Promise.all([run(), run()]), [0, 0]);
    const graphs = readdirSync(join(c, 'graphs'));
    assert.ok(!graphs.some((g) => g.startsWith('.staging')), 'no staging folder left');
    for (const g of ['clip', 'llm_fp32', 'sam_image_encoder', 'sam_mask_decoder', 'sam_postprocess', 'text_hidden_fcs'])
      assert.ok(
        graphs.some((x) => x.startsWith(`${g}-`)),
        `${g} built`,
      );
    // Every graph the cache holds is complete and loads (a later run trusts it).
    const r = lisa(...segmentTruck(c));
    assert.equal(r.code, 0, r.stderr);
  });
  it('a damaged cached graph is rebuilt, not loaded', async () => {
    const { readdirSync, truncateSync } = await import('node:fs');
    using d = tempDir();
    const c = join(d.path, 'cache');
    assert.equal(lisa(...convert(c)).code, 0);
    for (const g of readdirSync(join(c, 'graphs'))) truncateSync(join(c, 'graphs', g, 'model.onnx'), 100);
    const r = lisa(...segmentTruck(c));
    assert.equal(r.code, 0, r.stderr);
  });
  it('a converted weight corrupted in place (same size) fails its checksum: rebuilt, never loaded', async () => {
    const { readdirSync, readFileSync, writeFileSync } = await import('node:fs');
    const { decodeRle } = await import('../src/image/mask-encoding.js');
    const { readNpy } = await import('../src/io/npy.js');
    using d = tempDir();
    const c = join(d.path, 'cache');
    assert.equal(lisa(...convert(c)).code, 0);
    const store = join(c, 'weights');
    const bins = readdirSync(store).filter((f) => f.endsWith('.bin'));
    assert.ok(bins.length > 10);
    // Flip bytes in the middle of every converted weight, in place: same size, same inode (a disk's bit rot).
    for (const f of bins) {
      const b = readFileSync(join(store, f));
      for (let i = b.length >> 1; i < Math.min(b.length, (b.length >> 1) + 64); i++) b[i] = b[i]! ^ 0x5a;
      writeFileSync(join(store, f), b);
    }
    const query = (
      JSON.parse(readFileSync(join(FIXTURES, 'lisa-tiny', 'golden', 'manifest.json'), 'utf8')) as {
        cases: { truck_jpg: { chat: { query: string } } };
      }
    ).cases.truck_jpg.chat.query;
    const r = lisa(...segmentTruck(c, query, '--json'));
    assert.equal(r.code, 0, r.stderr);
    const mask = decodeRle((JSON.parse(r.stdout) as { masks: { rle: { size: [number, number]; counts: string } }[] }).masks[0]!.rle).data;
    const official = readNpy(join(FIXTURES, 'lisa-tiny', 'golden', 'truck_jpg', 'train_pred_masks.npy')).data as Float32Array;
    const flips = officialMaskFlips(mask, official);
    assert.equal(flips, 0, 'the mask is the official one: no corrupted weight was used');
  });
  it('a read-only --cache-dir or --out is one clear line before any work, even as root (a read-only mount)', () => {
    using d = tempDir();
    const mnt = join(d.path, 'ro');
    spawnSync('mkdir', ['-p', mnt]);
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'ro,size=1m', 'tmpfs', mnt]);
    assert.equal(mounted.status, 0, `mount a read-only tmpfs (needs root, as CI has): ${mounted.stderr}`);
    try {
      const image = join(FIXTURES, 'lisa-tiny', 'golden', 'inputs', 'truck.jpg');
      const base = ['segment', '--model', m, '--vision-tower', join(m, 'clip-vit-tiny-patch14'), '--image', image, '--query', 'q'];
      const cache = lisa(...base, '--cache-dir', join(mnt, 'cache'));
      assert.equal(cache.code, 1);
      assert.equal(cache.stderr, `lisa: --cache-dir ${join(mnt, 'cache')}: cannot write in ${mnt} (EROFS)\n`);
      const out = lisa(...base, '--cache-dir', join(d.path, 'cache'), '--out', join(mnt, 'out'));
      assert.equal(out.code, 1);
      assert.equal(out.stderr, `lisa: --out ${join(mnt, 'out')}: cannot write in ${mnt} (EROFS)\n`);
    } finally {
      spawnSync('umount', [mnt]);
    }
  });
  it('a full disk during lisa convert is one clear line and leaves nothing a later run would trust (tmpfs)', () => {
    using d = tempDir();
    const mnt = join(d.path, 'small');
    spawnSync('mkdir', ['-p', mnt]);
    const mounted = spawnSync('mount', ['-t', 'tmpfs', '-o', 'size=3m', 'tmpfs', mnt]);
    assert.equal(mounted.status, 0, `mount a 3 MB tmpfs (needs root, as CI has): ${mounted.stderr}`);
    try {
      const r = lisa(...convert(mnt));
      assert.equal(r.code, 1, r.stdout + r.stderr);
      assert.match(
        r.stderr,
        /^lisa: .*small: cannot write the cache \(ENOSPC\) while building \w+; free space there or give another --cache-dir\n$/m,
      );
      assert.doesNotMatch(r.stderr, /\n\s+at /);
      const left = spawnSync('sh', ['-c', `find '${mnt}' -name '*.tmp-*' -o -name '.staging-*' | wc -l`], {
        encoding: 'utf8',
      }).stdout.trim();
      assert.equal(left, '0', 'no temp or staging files left');
    } finally {
      spawnSync('umount', [mnt]);
    }
  });
});
