import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import sharp from 'sharp';
import { LisaError } from '../src/errors.js';
import { decodeImage } from '../src/image/decode.js';
import { pillowResize } from '../src/image/pillow-resample.js';
import { clipPreprocess, samNormalizePad, samResize, samResizeShape } from '../src/image/preprocess.js';
import { readNpy } from '../src/io/npy.js';
import { FIXTURES, SHARED, tempDir } from './helpers.js';

const GOLDEN = join(FIXTURES, 'lisa-tiny', 'golden');
const manifest = JSON.parse(readFileSync(join(GOLDEN, 'manifest.json'), 'utf8')) as { cases: Record<string, { arrays: Record<string, { sha256: string }> }> };
const CASES = [['truck_jpg', 'truck.jpg'], ['synthetic_png', 'synthetic.png']] as const;

function countDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  assert.equal(a.length, b.length);
  let n = 0;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) n++;
  return n;
}

for (const [key, file] of CASES) {
  describe(`image preprocessing, ${key}`, async () => {
    const img = await decodeImage(join(GOLDEN, 'inputs', file));
    it('decodes bit-exactly as cv2.imread + BGR2RGB', () => {
      const g = readNpy(join(GOLDEN, key, 'image_rgb.npy'));
      assert.deepEqual([img.height, img.width, 3], g.shape);
      assert.equal(countDiff(img.data, g.data as Uint8Array), 0);
    });
    it('CLIP pixel values equal CLIPImageProcessor bit for bit', () => {
      const g = readNpy(join(GOLDEN, key, 'clip_pixel_values.npy'));
      assert.equal(countDiff(clipPreprocess(img), g.data as Float32Array), 0);
    });
    it('SAM resize equals ResizeLongestSide (PIL bilinear) and the padded input hashes equal', () => {
      const g = readNpy(join(GOLDEN, key, 'sam_resized_rgb.npy'));
      const r = samResize(img);
      assert.deepEqual([r.height, r.width, 3], g.shape);
      assert.equal(countDiff(r.data, g.data as Uint8Array), 0);
      const px = samNormalizePad(r);
      assert.equal(createHash('sha256').update(px).digest('hex'), manifest.cases[key]!.arrays.sam_pixel_values!.sha256);
    });
  });
}

describe('image decoding as OpenCV does', () => {
  it('applies EXIF orientation 6 (300x200 file → 200 wide, 300 high)', async () => {
    const p = join(SHARED, 'data', 'test_images', 'truck_300x200_exif6.jpg');
    const img = await decodeImage(p);
    assert.deepEqual([img.width, img.height], [200, 300]);
    // Rotated 90° clockwise: the stored image's bottom-left pixel becomes the top-left.
    const raw = await sharp(p).raw().toBuffer({ resolveWithObject: true });
    const stored = (x: number, y: number): number[] => { const o = (y * raw.info.width + x) * raw.info.channels; return [raw.data[o]!, raw.data[o + 1]!, raw.data[o + 2]!]; };
    assert.deepEqual([img.data[0], img.data[1], img.data[2]], stored(0, raw.info.height - 1));
  });

  it('replicates greyscale and drops alpha without compositing', async () => {
    using d = tempDir();
    const grey = join(d.path, 'g.png'), rgba = join(d.path, 'a.png');
    await sharp(Buffer.from([0, 128, 255, 7]), { raw: { width: 2, height: 2, channels: 1 } }).png().toFile(grey);
    await sharp(Buffer.from([10, 20, 30, 0, 40, 50, 60, 128]), { raw: { width: 2, height: 1, channels: 4 } }).png().toFile(rgba);
    assert.deepEqual([...(await decodeImage(grey)).data], [0, 0, 0, 128, 128, 128, 255, 255, 255, 7, 7, 7]);
    assert.deepEqual([...(await decodeImage(rgba)).data], [10, 20, 30, 40, 50, 60]);
  });

  it('refuses missing, empty and non-image files with one clear error', async () => {
    using d = tempDir();
    const txt = join(d.path, 'notes.txt');
    writeFileSync(txt, 'hello');
    const empty = join(d.path, 'empty.jpg');
    writeFileSync(empty, '');
    for (const [p, re] of [[join(d.path, 'missing.png'), /missing\.png: no such image file/], [txt, /notes\.txt: not a readable image/], [empty, /empty\.jpg: not a readable image/]] as const) {
      await assert.rejects(decodeImage(p), (e: unknown) => e instanceof LisaError && re.test(e.message));
    }
  });
});

describe('Pillow resampling', () => {
  it('keeps a constant image constant and an identity resize unchanged', () => {
    const img = { width: 5, height: 4, data: new Uint8Array(5 * 4 * 3).fill(77) };
    for (const [w, h] of [[13, 9], [2, 3], [5, 4]] as const) {
      for (const filter of ['bilinear', 'bicubic'] as const) assert.ok(pillowResize(img, w, h, filter).data.every((v) => v === 77));
    }
    const ramp = { width: 3, height: 1, data: Uint8Array.from([0, 0, 0, 100, 100, 100, 200, 200, 200]) };
    assert.deepEqual([...pillowResize(ramp, 3, 1, 'bicubic').data], [...ramp.data]);
  });

  it('computes the SAM resize shape with int(x*scale + 0.5)', () => {
    assert.deepEqual(samResizeShape(1200, 1800), [683, 1024]);
    assert.deepEqual(samResizeShape(241, 321), [769, 1024]);
    assert.deepEqual(samResizeShape(300, 200), [1024, 683]);
  });
});
