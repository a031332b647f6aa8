import sharp from 'sharp';

/** A 0/1 mask as a single-channel 0/255 PNG (sharp would otherwise write a 1-channel input as RGB). */
export function maskPng(mask: Uint8Array, width: number, height: number): Promise<Buffer> {
  return sharp(Buffer.from(mask.map((v) => (v ? 255 : 0))), { raw: { width, height, channels: 1 } })
    .toColourspace('b-w')
    .png()
    .toBuffer();
}
