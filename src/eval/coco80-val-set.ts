import { copyFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import sharp from 'sharp';
import { LisaError } from '../errors.js';
import { decodeImage } from '../image/decode.js';
import { VOC_CLASSES, vocColor } from './sanity-set.js';

/**
 * The default model's validation set, in the ReasonSeg layout, from the real photos of `shared/data` that are
 * not in coco128-seg (its training data): PASCAL VOC crops, COCO 39769 and labelme's VOC 2011 photos. Three
 * folders over the same objects:
 * - `class/val`: each object queried by its COCO class name (LISA's short template at evaluation);
 * - `implicit/val`: the same objects by an implicit question written here, never used in training;
 * - `absent/val`: questions about classes the photo does not contain (no shapes; `"absent": true`); VOC and
 *   labelme label all 20 VOC classes, so an unlabelled VOC class is truly absent.
 */

const VOC_TO_COCO: Record<string, string> = {
  aeroplane: 'airplane',
  diningtable: 'dining table',
  motorbike: 'motorcycle',
  pottedplant: 'potted plant',
  sofa: 'couch',
  tvmonitor: 'tv',
};
const cocoName = (voc: string): string => VOC_TO_COCO[voc] ?? voc;

/** Implicit questions for the validation objects, phrased apart from the training knowledge table. */
export const VALIDATION_IMPLICIT: Record<string, string> = {
  airplane: 'What in this picture takes travellers high above the clouds?',
  bicycle: 'What could I pedal to get to the shop without burning petrol?',
  bird: 'Which creature here has feathers and could fly off?',
  bottle: 'What could I pour a drink from here?',
  bus: 'What here could take dozens of commuters across town at once?',
  car: 'What here could I drive to the supermarket?',
  cat: 'Which animal here would purr if you stroked it?',
  chair: 'Where could one person sit down at the table?',
  cow: 'Which animal here could a farmer milk every morning?',
  couch: 'Where could a few people relax together while watching a film?',
  dog: 'Which pet here would fetch a stick?',
  horse: 'Which animal here could someone ride across a field?',
  motorcycle: 'Which two-wheeler here has an engine?',
  person: 'Who in this picture could answer if I asked a question?',
  sheep: 'Which animals here could be sheared for wool for sweaters?',
  remote: 'What would I press to switch the channel on the television?',
  bed: 'Where would someone lie down to sleep tonight?',
  train: 'What here runs on steel tracks?',
  tv: 'What here would I switch on to watch the news?',
};

/** Classes asked about as absent, in order; each photo gets the first two it lacks. */
const ABSENT_CANDIDATES = ['dog', 'bus', 'cat', 'horse', 'airplane', 'bicycle', 'cow', 'boat', 'train', 'sheep'];

interface Target {
  name: string;
  image: string;
  cls: string;
  gtPng?: string;
  shapes?: { label: string; points: number[][] }[];
}

/** VOC and labelme annotate the 20 VOC classes (COCO names); COCO 39769 all 80. */
const VOC_COCO = VOC_CLASSES.slice(1).map(cocoName);

export async function buildCoco80ValSet(dataDir: string, outDir: string): Promise<{ dir: string; objects: number; absent: number }> {
  if (!existsSync(join(dataDir, 'voc_samples'))) throw new LisaError(`${dataDir}: not the shared data folder (no voc_samples/)`);
  const dirs = Object.fromEntries(['class', 'implicit', 'absent'].map((k) => [k, join(outDir, k, 'val')])) as Record<string, string>;
  for (const d of Object.values(dirs)) mkdirSync(d, { recursive: true });
  const targets: Target[] = [];
  const photos: { name: string; image: string; present: string[]; labelled: string[] }[] = [];

  const voc = JSON.parse(readFileSync(join(dataDir, 'voc_samples', 'index.json'), 'utf8')) as {
    items: { image: string; target: string; size: [number, number]; classes: Record<string, number> }[];
  };
  for (const item of voc.items) {
    const stem = `voc_${item.image.replace(/_image\.png$/, '')}`;
    const t = await decodeImage(join(dataDir, 'voc_samples', item.target));
    const present = Object.keys(item.classes).map(cocoName);
    photos.push({ name: stem, image: join(dataDir, 'voc_samples', item.image), present, labelled: VOC_COCO });
    for (const [cls, pixels] of Object.entries(item.classes)) {
      if (pixels < 0.02 * t.width * t.height) continue; // a sliver is not a fair target for a class query
      const [r, g, b] = vocColor(VOC_CLASSES.indexOf(cls));
      const gt = Buffer.alloc(t.width * t.height);
      for (let i = 0; i < gt.length; i++) {
        const p = [t.data[i * 3]!, t.data[i * 3 + 1]!, t.data[i * 3 + 2]!];
        gt[i] = p[0] === 224 && p[1] === 224 && p[2] === 192 ? 255 : p[0] === r && p[1] === g && p[2] === b ? 1 : 0;
      }
      const name = `${stem}_${cocoName(cls).replaceAll(' ', '_')}`;
      for (const d of [dirs.class!, dirs.implicit!])
        await sharp(gt, { raw: { width: t.width, height: t.height, channels: 1 } })
          .png()
          .toFile(join(d, `${name}_gt.png`));
      targets.push({ name, image: join(dataDir, 'voc_samples', item.image), cls: cocoName(cls), gtPng: `${name}_gt.png` });
    }
  }
  // COCO 39769: two cats, two remotes, a couch, a bed (COCO category ids 17, 75, 63, 65).
  const cocoIds: Record<number, string> = { 17: 'cat', 75: 'remote', 63: 'couch', 65: 'bed' };
  const coco = JSON.parse(readFileSync(join(dataDir, 'coco_39769_cats', 'coco_annotations.json'), 'utf8')) as {
    segmentation: number[][];
    category_id: number;
  }[];
  const cocoImage = join(dataDir, 'coco_39769_cats', '000000039769.png');
  const cocoPresent = [...new Set(coco.map((a) => cocoIds[a.category_id]).filter((c): c is string => !!c))];
  photos.push({ name: 'coco_39769', image: cocoImage, present: cocoPresent, labelled: VOC_COCO });
  for (const cls of cocoPresent) {
    const shapes = coco
      .filter((a) => cocoIds[a.category_id] === cls)
      .flatMap((a) =>
        a.segmentation.map((p) => ({
          label: 'target',
          points: Array.from({ length: p.length / 2 }, (_, i) => [p[2 * i]!, p[2 * i + 1]!]),
        })),
      );
    targets.push({ name: `coco_39769_${cls}`, image: cocoImage, cls, shapes });
  }
  // labelme's VOC 2011 photos: every labelled class; __ignore__ stays ignore.
  for (const stem of ['2011_000003', '2011_000006', '2011_000025']) {
    const base = join(dataDir, 'labelme_examples', 'instance_segmentation', 'data_annotated', stem);
    const j = JSON.parse(readFileSync(`${base}.json`, 'utf8')) as { shapes: { label: string; points: number[][] }[] };
    const classes = [...new Set(j.shapes.map((s) => s.label).filter((l) => !l.includes('ignore')))];
    photos.push({ name: `labelme_${stem}`, image: `${base}.jpg`, present: classes.map(cocoName), labelled: VOC_COCO });
    for (const cls of classes) {
      const shapes = j.shapes
        .filter((s) => s.label === cls || s.label.includes('ignore'))
        .map((s) => ({ label: s.label === cls ? 'target' : s.label, points: s.points }));
      targets.push({ name: `labelme_${stem}_${cocoName(cls).replaceAll(' ', '_')}`, image: `${base}.jpg`, cls: cocoName(cls), shapes });
    }
  }
  const write = (dir: string, name: string, image: string, json: Record<string, unknown>): void => {
    copyFileSync(image, join(dir, `${name}${image.slice(image.lastIndexOf('.'))}`));
    writeFileSync(join(dir, `${name}.json`), `${JSON.stringify({ ...json, coco80_val_set: true }, null, 1)}\n`);
  };
  for (const t of targets) {
    const gt = { shapes: t.shapes ?? [], ...(t.gtPng ? { gt_png: t.gtPng } : {}), class: t.cls };
    write(dirs.class!, t.name, t.image, { text: [t.cls], is_sentence: false, ...gt });
    const q = VALIDATION_IMPLICIT[t.cls];
    if (!q) throw new LisaError(`internal: no implicit validation question for ${t.cls}`);
    write(dirs.implicit!, t.name, t.image, { text: [q], is_sentence: true, ...gt });
  }
  let absent = 0;
  for (const p of photos) {
    const lacks = ABSENT_CANDIDATES.filter((c) => p.labelled.includes(c) && !p.present.includes(c)).slice(0, 2);
    for (const cls of lacks) {
      write(dirs.absent!, `${p.name}_no_${cls}`, p.image, { text: [cls], is_sentence: false, shapes: [], absent: true, class: cls });
      absent++;
    }
  }
  writeFileSync(
    join(outDir, 'README.md'),
    `# lisa-ts COCO-80 validation set (not ReasonSeg)\n\nReal photos of shared/data outside coco128-seg: ${targets.length} objects ` +
      `queried by class name (class/) and by an implicit question (implicit/), and ${absent} questions about absent classes (absent/).\n`,
  );
  return { dir: outDir, objects: targets.length, absent };
}
