import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, it } from 'node:test';
import { ROOT, tempDir } from './helpers.js';

const SCRIPT = join(ROOT, 'scripts', 'pack-runtime.js');

/**
 * onnxruntime-node is bundled into lisa-ts's tarball without its postinstall (which fetches CUDA libraries from
 * NuGet and fails an install that only reaches the npm registry): package.json's hooks and the script they run.
 */
describe('the bundled runtime (scripts/pack-runtime.js)', () => {
  it('package.json bundles onnxruntime-node and strips its postinstall around npm pack', () => {
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')) as {
      bundleDependencies: string[];
      dependencies: Record<string, string>;
      scripts: Record<string, string>;
    };
    assert.deepEqual(pkg.bundleDependencies, ['onnxruntime-node']);
    assert.ok(pkg.dependencies['onnxruntime-node']);
    assert.equal(pkg.scripts.prepack, 'node scripts/pack-runtime.js strip');
    assert.equal(pkg.scripts.postpack, 'node scripts/pack-runtime.js restore');
  });

  it('strip removes only the postinstall, restore brings back the original bytes, and both are idempotent', () => {
    using dir = tempDir('lisa-pack-');
    const ort = join(dir.path, 'node_modules', 'onnxruntime-node');
    mkdirSync(ort, { recursive: true });
    // The hooks of the real package (node_modules/onnxruntime-node/package.json), in its own formatting.
    const original = `{\n  "name": "onnxruntime-node",\n  "version": "1.30.0",\n  "scripts": {"postinstall": "node ./script/install", "build": "tsc"}\n}\n`;
    writeFileSync(join(ort, 'package.json'), original);
    const run = (mode: string): void => void execFileSync(process.execPath, [SCRIPT, mode, dir.path]);
    run('strip');
    run('strip'); // a second prepack (an interrupted pack run again) keeps the first original
    const stripped = JSON.parse(readFileSync(join(ort, 'package.json'), 'utf8')) as { scripts: Record<string, string>; version: string };
    assert.deepEqual(stripped.scripts, { build: 'tsc' });
    assert.equal(stripped.version, '1.30.0');
    run('restore');
    assert.equal(readFileSync(join(ort, 'package.json'), 'utf8'), original);
    assert.ok(!existsSync(join(ort, 'package.json.lisa-ts-original')));
    run('restore');
    assert.equal(readFileSync(join(ort, 'package.json'), 'utf8'), original);
  });

  it('says what is missing in one line when onnxruntime-node is not installed, and exits non-zero', () => {
    using dir = tempDir('lisa-pack-');
    const r = spawnSync(process.execPath, [SCRIPT, 'strip', dir.path], { encoding: 'utf8' });
    assert.equal(r.status, 1);
    assert.match(r.stderr.trim(), /onnxruntime-node\/package\.json is missing: run npm ci before npm pack/);
    assert.equal(r.stderr.trim().split('\n').length, 1);
    assert.equal(spawnSync(process.execPath, [SCRIPT, 'bogus'], { encoding: 'utf8' }).status, 2);
  });
});
