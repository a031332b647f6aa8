import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { extname, join } from 'node:path';
import sharp from 'sharp';
import { LisaError } from '../errors.js';
import { decodeImage } from '../image/decode.js';

/**
 * A small real-image SANITY set — not ReasonSeg — in the ReasonSeg layout, from `shared/data`: PASCAL VOC
 * crops (palette ground truth, void = ignore), COCO image 39769 (cat polygons) and labelme's examples
 * (polygons, `__ignore__` kept as ignore). Each image is queried by a class name with LISA's short-question
 * template ("What is {class} in this image?", is_sentence false).
 */

export const VOC_CLASSES = [
  'background',
  'aeroplane',
  'bicycle',
  'bird',
  'boat',
  'bottle',
  'bus',
  'car',
  'cat',
  'chair',
  'cow',
  'diningtable',
  'dog',
  'horse',
  'motorbike',
  'person',
  'pottedplant',
  'sheep',
  'sofa',
  'train',
  'tvmonitor',
];
const READABLE: Record<string, string> = {
  diningtable: 'dining table',
  pottedplant: 'potted plant',
  tvmonitor: 'tv monitor',
  aeroplane: 'aeroplane',
};

/** The standard VOC colormap (bit interleaving of the class index). */
export function vocColor(i: number): [number, number, number] {
  let r = 0,
    g = 0,
    b = 0,
    c = i;
  for (let j = 0; j < 8; j++) {
    r |= ((c >> 0) & 1) << (7 - j);
    g |= ((c >> 1) & 1) << (7 - j);
    b |= ((c >> 2) & 1) << (7 - j);
    c >>= 3;
  }
  return [r, g, b];
}

interface Entry {
  name: string;
  text: string;
  shapes?: { label: string; points: number[][] }[];
  gtPng?: string;
}

export async function buildSanitySet(dataDir: string, outDir: string): Promise<{ count: number; dir: string }> {
  if (!existsSync(join(dataDir, 'voc_samples'))) throw new LisaError(`${dataDir}: not the shared data folder (no voc_samples/)`);
  const dir = join(outDir, 'val');
  mkdirSync(dir, { recursive: true });
  const entries: Entry[] = [];
  const write = (e: Entry): void => {
    writeFileSync(
      join(dir, `${e.name}.json`),
      JSON.stringify(
        { text: [e.text], is_sentence: false, shapes: e.shapes ?? [], ...(e.gtPng ? { gt_png: e.gtPng } : {}), sanity_set: true },
        null,
        1,
      ) + '\n',
    );
    entries.push(e);
  };
  // PASCAL VOC: the largest class of each crop; void becomes ignore (255).
  const voc = JSON.parse(readFileSync(join(dataDir, 'voc_samples', 'index.json'), 'utf8')) as {
    items: { image: string; target: string; classes: Record<string, number> }[];
  };
  for (const item of voc.items) {
    const cls = Object.entries(item.classes).sort((a, b) => b[1] - a[1])[0]?.[0];
    if (!cls) continue;
    const name = `voc_${item.image.replace(/_image\.png$/, '')}`;
    const t = await decodeImage(join(dataDir, 'voc_samples', item.target));
    const [r, g, b] = vocColor(VOC_CLASSES.indexOf(cls));
    const gt = Buffer.alloc(t.width * t.height);
    for (let i = 0; i < gt.length; i++) {
      const p = [t.data[i * 3]!, t.data[i * 3 + 1]!, t.data[i * 3 + 2]!];
      gt[i] = p[0] === 224 && p[1] === 224 && p[2] === 192 ? 255 : p[0] === r && p[1] === g && p[2] === b ? 1 : 0;
    }
    await sharp(gt, { raw: { width: t.width, height: t.height, channels: 1 } })
      .png()
      .toFile(join(dir, `${name}_gt.png`));
    copyFileSync(join(dataDir, 'voc_samples', item.image), join(dir, `${name}.png`));
    write({ name, text: READABLE[cls] ?? cls, gtPng: `${name}_gt.png` });
  }
  // COCO 39769: the two cats.
  const coco = JSON.parse(readFileSync(join(dataDir, 'coco_39769_cats', 'coco_annotations.json'), 'utf8')) as {
    segmentation: number[][];
    category_id: number;
  }[];
  const cats = coco
    .filter((a) => a.category_id === 17)
    .flatMap((a) =>
      a.segmentation.map((poly) => ({
        label: 'target',
        points: Array.from({ length: poly.length / 2 }, (_, i) => [poly[2 * i]!, poly[2 * i + 1]!]),
      })),
    );
  copyFileSync(join(dataDir, 'coco_39769_cats', '000000039769.png'), join(dir, 'coco_39769.png'));
  write({ name: 'coco_39769', text: 'cat', shapes: cats });
  // labelme examples: the first labelled class; its shapes are the target, __ignore__ stays ignore.
  const labelme: [string, string][] = [
    ['instance_segmentation/data_annotated/2011_000003', 'labelme_2011_000003'],
    ['instance_segmentation/data_annotated/2011_000006', 'labelme_2011_000006'],
    ['instance_segmentation/data_annotated/2011_000025', 'labelme_2011_000025'],
    ['tutorial/apc2016_obj3', 'labelme_apc2016_obj3'],
  ];
  for (const [src, name] of labelme) {
    const j = JSON.parse(readFileSync(join(dataDir, 'labelme_examples', `${src}.json`), 'utf8')) as {
      shapes: { label: string; points: number[][] }[];
    };
    const cls = j.shapes.find((s) => !s.label.includes('ignore'))!.label;
    const shapes = j.shapes
      .filter((s) => s.label === cls || s.label.toLowerCase().includes('ignore'))
      .map((s) => ({ label: s.label === cls ? 'target' : s.label, points: s.points }));
    const image = ['.jpg', '.png'].map((e) => join(dataDir, 'labelme_examples', `${src}${e}`)).find(existsSync)!;
    copyFileSync(image, join(dir, `${name}${extname(image)}`));
    write({ name, text: cls.replaceAll('_', ' '), shapes });
  }
  writeFileSync(
    join(outDir, 'README.md'),
    `# lisa-ts sanity set (NOT ReasonSeg)\n\n${entries.length} real images from shared/data in the ReasonSeg layout, ` +
      "each queried by a class name with LISA's short template. Useful to check that the evaluation runs end to end and " +
      'that a real model segments obvious objects; its numbers say nothing about reasoning segmentation.\n',
  );
  return { count: entries.length, dir: outDir };
}
