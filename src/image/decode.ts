import { readFileSync, statSync } from 'node:fs';
import sharp from 'sharp';
import { LisaError } from '../errors.js';

/** An 8-bit RGB image, row-major, 3 bytes per pixel (what `cv2.imread` + BGR2RGB gives). */
export interface RgbImage {
  width: number;
  height: number;
  data: Uint8Array;
}

/** Images bigger than this are refused before decoding (a 16k × 16k photo is 768 MB of RGB). */
export const MAX_IMAGE_PIXELS = 16384 * 16384;
export const MAX_IMAGE_FILE_BYTES = 256 * 1024 * 1024;

/**
 * Reads only the header: the format must be JPEG, PNG or WebP and the size within `maxPixels`, so a server can refuse
 * a bad or huge upload at once, before it waits for (or spends) a decode.
 */
export async function checkImageHeader(
  bytes: Uint8Array,
  name = 'image',
  maxPixels = MAX_IMAGE_PIXELS,
): Promise<{ width: number; height: number }> {
  let meta: sharp.Metadata;
  try {
    meta = await sharp(bytes, { limitInputPixels: false, failOn: 'error' }).metadata();
  } catch (e) {
    throw new LisaError(`${name}: not a readable image (${(e as Error).message.split('\n')[0]}); expected JPEG, PNG or WebP`);
  }
  if (!meta.width || !meta.height) throw new LisaError(`${name}: image has no pixels (${meta.width ?? 0}x${meta.height ?? 0})`);
  if (!['jpeg', 'png', 'webp'].includes(meta.format ?? ''))
    throw new LisaError(`${name}: ${meta.format} images are not supported; expected JPEG, PNG or WebP`);
  if (meta.width * meta.height > maxPixels)
    throw new LisaError(
      `${name}: image is ${meta.width}x${meta.height}, larger than the limit of ${maxPixels.toLocaleString('en-US')} pixels`,
    );
  return { width: meta.width, height: meta.height };
}

/**
 * Decodes JPEG, PNG or WebP as OpenCV's `imread(path, IMREAD_COLOR)` then `cvtColor(BGR2RGB)` does: EXIF
 * orientation applied, greyscale replicated to three channels, alpha dropped (not composited), 16-bit samples
 * reduced to 8 bits, no colour-profile conversion.
 */
export async function decodeImage(
  input: string | Uint8Array,
  name = typeof input === 'string' ? input : 'image',
  maxPixels = MAX_IMAGE_PIXELS,
): Promise<RgbImage> {
  let bytes: Uint8Array;
  if (typeof input === 'string') {
    let st: ReturnType<typeof statSync>;
    try {
      st = statSync(input);
    } catch {
      throw new LisaError(`${input}: no such image file`);
    }
    if (!st.isFile()) throw new LisaError(`${input}: is a folder, not an image file`);
    const size = st.size;
    if (size > MAX_IMAGE_FILE_BYTES)
      throw new LisaError(`${input}: ${size} bytes is larger than the ${MAX_IMAGE_FILE_BYTES}-byte limit for an image`);
    bytes = readFileSync(input);
  } else bytes = input;
  await checkImageHeader(bytes, name, maxPixels);
  try {
    const { data, info } = await sharp(bytes, { limitInputPixels: MAX_IMAGE_PIXELS, failOn: 'error', ignoreIcc: true })
      .rotate() // EXIF orientation, as imread applies it
      .removeAlpha()
      .toColourspace('srgb')
      .raw({ depth: 'uchar' })
      .toBuffer({ resolveWithObject: true });
    if (info.channels !== 3) throw new Error(`decoded to ${info.channels} channels`);
    return { width: info.width, height: info.height, data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength) };
  } catch (e) {
    throw new LisaError(`${name}: cannot decode image (${(e as Error).message.split('\n')[0]})`);
  }
}
