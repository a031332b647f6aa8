import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { campaign, TARGETS } from '../bench/fuzz.js';

/**
 * A short seeded run of `npm run fuzz` (bench/fuzz.ts): for every parser of untrusted files, mutated real files
 * give a parse or a LisaError naming the file, never another exception.
 */
describe('fuzzing the parsers (short seeded run)', () => {
  for (const t of TARGETS) {
    it(`${t.name}: 150 mutated files, no exception other than a LisaError naming the file`, { timeout: 120000 }, async () => {
      const r = await campaign(t, 150, 7);
      assert.equal(r.parsed + r.refused, 150);
      assert.deepEqual(r.findings, []);
    });
  }
});
