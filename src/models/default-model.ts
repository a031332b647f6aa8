import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { LisaError } from '../errors.js';

/** The model that ships inside the package (MODEL.md): used when no --model / folder is given. */
export const DEFAULT_MODEL_NAME = 'lisa-coco80';

/** Its folder: `models/lisa-coco80` at the package root (this file is dist/src/models/default-model.js). */
export function defaultModelDir(): string {
  const dir = fileURLToPath(new URL(`../../../models/${DEFAULT_MODEL_NAME}`, import.meta.url));
  if (!existsSync(join(dir, 'config.json')))
    throw new LisaError(`the default model is missing from ${dir} (a damaged install?); pass --model DIR`);
  return dir;
}
