import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { LisaError } from '../src/errors.js';
import { decodeImage } from '../src/image/decode.js';
import { readNpy } from '../src/io/npy.js';
import { polygonToCounts, polygonToMask } from '../src/eval/coco-polygon.js';
import { rasterizeShapes, readReasonSegJson, type Shape } from '../src/eval/reasonseg.js';
import { FIXTURES, SHARED } from './helpers.js';

interface RasterCase {
  name: string;
  source: string;
  size_hw: [number, number];
}
const manifest = JSON.parse(readFileSync(join(FIXTURES, 'metrics', 'manifest.json'), 'utf8')) as {
  sections: { raster: { masks: RasterCase[]; arrays: Record<string, { file: string }> } };
};

function shapesOf(path: string): Shape[] {
  const j = JSON.parse(readFileSync(path, 'utf8')) as { shapes: Shape[] };
  return j.shapes.map((s) => ({ label: s.label, points: s.points }));
}

describe('ReasonSeg rasterisation (get_mask_from_json, OpenCV pixel rules)', () => {
  for (const c of manifest.sections.raster.masks) {
    it(`${c.name} equals the official mask bit for bit`, () => {
      const [h, w] = c.size_hw;
      const want = readNpy(join(FIXTURES, 'metrics', manifest.sections.raster.arrays[c.name]!.file));
      assert.deepEqual(want.shape, [h, w]);
      const got = rasterizeShapes(shapesOf(join(SHARED, 'data', c.source)), h, w);
      let diff = 0;
      got.forEach((v, i) => {
        if (v !== want.data[i]) diff++;
      });
      assert.equal(diff, 0, `${diff} pixels differ`);
    });
  }

  it('reads the real ReasonSeg annotation files', () => {
    const a = readReasonSegJson(join(SHARED, 'data', 'reasonseg_annotations_only', 'val', 'scene0104_00_0.json'));
    assert.equal(a.isSentence, true);
    assert.ok(a.text.length >= 1 && a.shapes.length >= 1);
  });

  it('agrees with the class masks labelme itself rendered (PIL polygons: boundary rules differ slightly)', async () => {
    const base = join(SHARED, 'data', 'labelme_examples', 'instance_segmentation');
    for (const name of ['2011_000003', '2011_000006', '2011_000025']) {
      const shapes = shapesOf(join(base, 'data_annotated', `${name}.json`));
      const png = await decodeImage(join(base, 'data_dataset_voc', 'SegmentationClassPNG', `${name}.png`));
      const mine = rasterizeShapes(
        shapes.map((s) => ({ ...s, label: 'target' })),
        png.height,
        png.width,
      );
      let agree = 0;
      for (let i = 0; i < mine.length; i++)
        if (mine[i]! > 0 === png.data[i * 3]! + png.data[i * 3 + 1]! + png.data[i * 3 + 2]! > 0) agree++;
      assert.ok(agree / mine.length > 0.99, `${name}: ${((100 * agree) / mine.length).toFixed(2)} % of pixels agree`);
    }
  });
});

describe('COCO polygons (pycocotools rleFrPoly)', () => {
  it('rasterises a square and a triangle as pycocotools does', () => {
    // A 2×2 box at (1,1)-(3,3) in a 5×5 image covers pixels x, y ∈ {1, 2}: column-major runs [6, 2, 3, 2, 12].
    assert.deepEqual(polygonToCounts([1, 1, 3, 1, 3, 3, 1, 3], 5, 5), [6, 2, 3, 2, 12]);
    // Triangle (0,0) (4,0) (0,4), traced through maskApi.c by hand: the ×5 boundary crosses pixel columns at
    // (x, y) = (0,0) (1,0) (2,0) (3,0) | (3,0) (2,1) (1,2) (0,3); as x·h + y, sorted, with h·w = 25 appended:
    // 0 3 5 7 10 11 15 15 25 → differences 0 3 2 2 3 1 4 0 10 → the zero merges the last two: 0 3 2 2 3 1 14.
    assert.deepEqual(polygonToCounts([0, 0, 4, 0, 0, 4], 5, 5), [0, 3, 2, 2, 3, 1, 14]);
    const tri = polygonToMask([0, 0, 4, 0, 0, 4], 5, 5);
    const rows = Array.from({ length: 5 }, (_, y) => Array.from(tri.data.subarray(y * 5, y * 5 + 5)).join(''));
    assert.deepEqual(rows, ['11100', '11000', '10000', '00000', '00000']);
  });
});

describe('rasterising polygons far outside the image', () => {
  it("rows above the image are skipped, not stepped: the same pixels as OpenCV's row-by-row walk", async () => {
    const { fillPoly } = await import('../src/eval/opencv-raster.js');
    const { rng } = await import('./helpers.js');
    const r = rng(9);
    for (let t = 0; t < 200; t++) {
      const pts = Array.from(
        { length: 3 + Math.floor(r() * 6) },
        () => [Math.floor(r() * 300) - 100, Math.floor(r() * 900) - 800] as [number, number],
      );
      const a = { width: 120, height: 100, data: new Uint8Array(12000) },
        b = { width: 120, height: 100, data: new Uint8Array(12000) };
      fillPoly(a, pts, 1);
      fillPoly(b, pts, 1, { stepRowsAbove: true });
      assert.deepEqual(a.data, b.data, JSON.stringify(pts));
    }
  });
  it('a coordinate of −2⁴⁰ or beyond returns at once; a non-finite one is an error naming the shape', { timeout: 10000 }, async () => {
    const { rasterizeShapes } = await import('../src/eval/reasonseg.js');
    const m = rasterizeShapes(
      [
        {
          label: 'target',
          points: [
            [10, 10],
            [-1099511627776, 50],
            [60, -1099511627776],
            [80, 90],
          ],
        },
      ],
      100,
      120,
    );
    assert.equal(m.length, 100 * 120);
    assert.throws(
      () =>
        rasterizeShapes(
          [
            {
              label: 'door',
              points: [
                [1, 1],
                [Number.POSITIVE_INFINITY, 2],
                [3, 4],
              ],
            },
          ],
          10,
          10,
        ),
      /shape "door": a point coordinate is not a finite number/,
    );
  });
});

describe('COCO polygons (frPyObjects) with hostile coordinates', () => {
  it('a coordinate far outside the image is one LisaError at once, not an allocation until the process dies', () => {
    const t = performance.now();
    assert.throws(
      () => polygonToMask([1, 1, 1099511627776, 2, 12, 40], 48, 64, 'x.json: annotation 3'),
      (e: unknown) => e instanceof LisaError && /x\.json: annotation 3: a polygon reaches far outside the 64x48 image/.test(e.message),
    );
    assert.throws(() => polygonToMask([1, 1, Number.NaN, 2, 12, 40], 48, 64, 'x.json'), /not a finite number/);
    assert.ok(performance.now() - t < 100);
    // A polygon that pokes out of the image a little is still rasterised as pycocotools does.
    assert.ok(polygonToMask([-20, -20, 80, 1, 12, 70], 48, 64).data.some((v) => v === 1));
  });
});
