import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { FIXTURES, ROOT, tempDir } from './helpers.js';

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
    const j = JSON.parse(r.stdout) as { tensors: { name: string; shape: number[] }[]; summary: { count: number; bytesByDtype: Record<string, number> } };
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
