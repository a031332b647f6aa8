import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import {
  countsToString,
  decodeRle,
  encodeRle,
  maskArea,
  maskBbox,
  maskPolygons,
  rleCounts,
  stringToCounts,
  type BinaryMask,
} from '../src/image/mask-encoding.js';
import { LisaError } from '../src/errors.js';
import { rng } from './helpers.js';

function mask(rows: string[]): BinaryMask {
  return { width: rows[0]!.length, height: rows.length, data: Uint8Array.from(rows.join('').split(''), (c) => (c === '#' ? 1 : 0)) };
}

describe('COCO RLE (pycocotools)', () => {
  // Expected strings derived by hand from pycocotools' rleEncode / rleToString (mask.pyx, maskApi.c).
  it('encodes known masks: column-major runs starting with zeros, 5-bit chars, deltas after the second', () => {
    assert.deepEqual(encodeRle(mask(['...', '...', '...'])), { size: [3, 3], counts: '9' }); // [9]
    assert.deepEqual(encodeRle(mask(['##', '##'])), { size: [2, 2], counts: '04' }); // [0, 4]
    // Columns: (0,1), (1,1) → runs [1, 3]
    assert.deepEqual(encodeRle(mask(['.#', '##'])), { size: [2, 2], counts: '13' });
    // 2 rows × 4 cols, columns (0,1) (1,0) (0,0) (1,1): sequence 0,1,1,0,0,0,1,1 → [1, 2, 3, 2];
    // the 4th is stored as 2 − 2 = 0.
    assert.deepEqual(rleCounts(mask(['.#.#', '#..#'])), [1, 2, 3, 2]);
    assert.equal(countsToString([1, 2, 3, 2]), '1230');
    // A delta of −1: 31 with no continuation → 'O' (31 + 48).
    assert.equal(countsToString([1, 2, 3, 1]), '123O');
    // 40 = 0b01000 + 1·32: first char 8|0x20 (+48 = 'X'), then 1 (+48 = '1').
    assert.equal(countsToString([40]), 'X1');
    // 50 → 18|0x20 ('b'), 1 ('1'); 10 → ':'; then a delta of 10 − 50 = −40: low 5 bits 24 with the
    // continuation bit → 'h', then −40 >> 5 = −2: 30 → 'N' (its 0x10 bit set and the rest −1: stop).
    assert.equal(countsToString([0, 50, 10, 10]), '0b1:hN');
    // 100 → 4|0x20 ('T'), 3 ('3'); 0 → '0'; 60 (third count, no delta) → 28|0x20 ('l'), 1 ('1').
    assert.equal(countsToString([100, 0, 60]), 'T30l1');
  });

  it('decodes strings back to the same counts and masks', () => {
    for (const s of ['9', '04', '13', '1230', '123O', 'X1', 'T30l1', '0b1:hN']) assert.equal(countsToString(stringToCounts(s)), s);
    assert.deepEqual(stringToCounts('123O'), [1, 2, 3, 1]);
    assert.deepEqual(stringToCounts('T30l1'), [100, 0, 60]);
    assert.deepEqual(stringToCounts('0b1:hN'), [0, 50, 10, 10]);
    const m = mask(['.#.#', '#..#']);
    assert.deepEqual(decodeRle(encodeRle(m)), m);
    assert.deepEqual(decodeRle({ size: [2, 4], counts: [1, 2, 3, 2] }), m);
    const r = rng(7);
    for (let t = 0; t < 20; t++) {
      const w = 1 + Math.floor(r() * 40),
        h = 1 + Math.floor(r() * 40);
      const rand: BinaryMask = { width: w, height: h, data: Uint8Array.from({ length: w * h }, () => (r() < 0.3 ? 1 : 0)) };
      assert.deepEqual(decodeRle(encodeRle(rand)), rand);
    }
    assert.throws(() => decodeRle({ size: [2, 2], counts: '9' }), /cover 9 pixels but the mask has 4/);
  });

  it('computes area, bbox and outer polygons', () => {
    const m = mask(['......', '.##...', '.###..', '......', '....#.']);
    assert.equal(maskArea(m), 6);
    assert.deepEqual(maskBbox(m), [1, 1, 4, 4]);
    assert.deepEqual(maskBbox(mask(['..', '..'])), [0, 0, 0, 0]);
    const polys = maskPolygons(m);
    assert.equal(polys.length, 2);
    assert.deepEqual(polys[0], [1, 1, 2, 1, 3, 2, 2, 2, 1, 2]);
    assert.deepEqual(polys[1], [4, 4]);
    // A ring: one outer contour, the hole is not a separate polygon.
    assert.equal(maskPolygons(mask(['###', '#.#', '###'])).length, 1);
  });
});

describe('encodeRle on what the library returns', () => {
  it('takes a segment result mask ({ width, height, mask }) and refuses a malformed one with a clear error', async () => {
    const { encodeRle } = await import('../src/image/mask-encoding.js');
    const { LisaError } = await import('../src/errors.js');
    const mask = Uint8Array.from([0, 1, 1, 0, 0, 1]);
    assert.deepEqual(encodeRle({ width: 3, height: 2, mask }), encodeRle({ width: 3, height: 2, data: mask }));
    assert.throws(
      () => encodeRle({ width: 4, height: 2, mask }),
      (e: unknown) => e instanceof LisaError && /4x2 = 8 pixels/.test(e.message),
    );
  });
});

describe('generation options are checked', () => {
  it('maxNewTokens, temperature and topP outside their ranges are one clear error', async () => {
    const { checkGenerateOptions } = await import('../src/inference/generate.js');
    assert.throws(() => checkGenerateOptions({ maxNewTokens: -5 }), /maxNewTokens must be an integer >= 1, got -5/);
    assert.throws(() => checkGenerateOptions({ sampling: { temperature: 0.7, topP: 2, seed: 1 } }), /topP must be in \(0, 1\], got 2/);
    assert.throws(() => checkGenerateOptions({ sampling: { temperature: -1, topP: 0.9, seed: 1 } }), /temperature must be a number >= 0/);
    checkGenerateOptions({ maxNewTokens: 3, sampling: { temperature: 0, topP: 1, seed: 0 } });
  });
});

describe('decodeRle on untrusted input', () => {
  it('refuses counts and sizes of the wrong type with a LisaError (a number for counts was a raw TypeError)', () => {
    for (const bad of [
      { size: [2, 2], counts: 4 },
      { size: [2, 2], counts: [1, -3] },
      { size: [2, 2], counts: { a: 1 } },
      { size: 'x', counts: [4] },
    ])
      assert.throws(
        () => decodeRle(bad as never),
        (e: unknown) => e instanceof LisaError && /RLE (counts|size)/.test(e.message),
      );
    assert.deepEqual(Array.from(decodeRle({ size: [2, 2], counts: [1, 2, 1] }).data), [0, 1, 1, 0]);
  });
});
