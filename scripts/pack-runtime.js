#!/usr/bin/env node
// npm pack hooks for the bundled onnxruntime-node (package.json "bundleDependencies").
//
// onnxruntime-node's postinstall fetches CUDA provider libraries from NuGet on linux/x64 (hundreds of MB lisa-ts never
// loads: it runs on the CPU) and fails the whole install where only the npm registry is reachable. Bundled, the
// runtime arrives inside lisa-ts's tarball with the CPU libraries it already ships; its package.json goes in without
// that postinstall, so nothing is downloaded at install time. `strip` (prepack) removes the hook from the copy in
// node_modules that npm packs, keeping the original beside it; `restore` (postpack) puts the original back.
import { existsSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const [mode, root = join(dirname(fileURLToPath(import.meta.url)), '..')] = process.argv.slice(2);
const pkg = join(root, 'node_modules', 'onnxruntime-node', 'package.json');
const kept = `${pkg}.lisa-ts-original`;

if (mode === 'strip') {
  if (!existsSync(pkg)) {
    console.error(`${pkg} is missing: run npm ci before npm pack (onnxruntime-node is bundled)`);
    process.exit(1);
  }
  if (!existsSync(kept)) {
    const text = readFileSync(pkg, 'utf8');
    const json = JSON.parse(text);
    writeFileSync(kept, text);
    if (json.scripts) delete json.scripts.postinstall;
    writeFileSync(pkg, `${JSON.stringify(json, null, 2)}\n`);
  }
} else if (mode === 'restore') {
  if (existsSync(kept)) renameSync(kept, pkg);
} else {
  console.error('usage: pack-runtime.js strip|restore [PACKAGE_ROOT]');
  process.exit(2);
}
