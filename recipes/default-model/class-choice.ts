/**
 * Design probe (training photos only): what chose `class_choice.margin` (MODEL.md). Over coco128-seg's photos it
 * asks, for each class in a photo, a tuning question written here (in words apart from both the training
 * knowledge table and the validation questions), and, for two classes each photo lacks, the class name; then
 * reports, per margin, how often the answer names the right class and how often an absent name is kept.
 *
 *   node dist/recipes/default-model/class-choice.js MODEL_DIR ../shared/data/coco128-seg
 */
import { decodeImage } from '../../src/image/decode.js';
import { readYoloSeg } from '../../src/eval/yolo-seg.js';
import { LisaModel } from '../../src/models/lisa.js';
import { chooseClass, chosenClass, type ClassChoice } from '../../src/inference/class-choice.js';
import { llmForward } from '../../src/inference/llm.js';
import { preparePrompt } from '../../src/inference/pipeline.js';
import { chatPrompt } from '../../src/text/conversation.js';
import { LONG_QUESTION_LIST, SHORT_QUESTION_LIST } from '../../src/train/data/templates.js';

/** One tuning question per COCO class: never trained on, never in the validation set. */
export const TUNING_IMPLICIT: Record<string, string> = {
  person: 'Who here could tell me the way to the station?',
  bicycle: 'What here has spokes and gets you around on leg power?',
  car: 'What here would take a family of four on holiday by road?',
  motorcycle: 'What here roars down the highway on two wheels?',
  airplane: 'What here could carry me to another country in a few hours?',
  bus: 'What here stops at every corner to let people on?',
  train: 'What here pulls wagons from one city to the next?',
  truck: 'What here could move all the furniture of a house?',
  boat: 'What here floats and could take me across the lake?',
  'traffic light': 'What here tells drivers when to stop and when to go?',
  'fire hydrant': 'What on the pavement gives firefighters their water?',
  'stop sign': 'What red sign here makes every car halt?',
  'parking meter': 'What here takes coins before you may leave your car?',
  bench: 'Where in the park could I rest my legs?',
  bird: 'What here sings in the trees and lays eggs in a nest?',
  cat: 'Which pet here chases mice and climbs on curtains?',
  dog: 'Which animal here barks at the postman?',
  horse: 'Which animal here wears horseshoes?',
  sheep: 'Which animal here grows a thick fleece?',
  cow: 'Which animal here gives us milk and says moo?',
  elephant: 'Which animal here has a trunk and huge ears?',
  bear: 'Which big furry animal here sleeps through the winter?',
  zebra: 'Which animal here has black and white stripes?',
  giraffe: 'Which animal here can eat leaves from the top of a tree?',
  backpack: 'What here do students carry their books in on their backs?',
  umbrella: 'What here would keep me dry in the rain?',
  handbag: 'What here holds a purse, keys and lipstick?',
  tie: 'What goes around the collar of a shirt at a wedding?',
  suitcase: 'What here would I pack my clothes in for a trip?',
  frisbee: 'What here is a flying disc to throw on the beach?',
  skis: 'What here would I strap on to slide down a snowy mountain?',
  snowboard: 'What single board here slides down the slopes in winter?',
  'sports ball': 'What here gets kicked or thrown in a match?',
  kite: 'What here flies on a string when the wind blows?',
  'baseball bat': 'What here swings to hit a pitch?',
  'baseball glove': 'What leather thing here catches a fly ball?',
  skateboard: 'What here has four small wheels and does tricks at the skate park?',
  surfboard: 'What here rides the waves at the beach?',
  'tennis racket': 'What here hits a ball over the net?',
  bottle: 'What here holds water with a cap on top?',
  'wine glass': 'What here would I drink a red wine from?',
  cup: 'What here would I drink my morning coffee from?',
  fork: 'What here has prongs to pick up pasta?',
  knife: 'What here could slice the tomatoes?',
  spoon: 'What here would I stir my tea with?',
  bowl: 'What here could I eat my soup from?',
  banana: 'What yellow fruit here do monkeys love?',
  apple: 'What fruit here keeps the doctor away?',
  sandwich: 'What here is made of two slices of bread with a filling?',
  orange: 'What citrus fruit here could I squeeze for juice?',
  broccoli: 'What green vegetable here looks like a tiny tree?',
  carrot: 'What orange vegetable here do rabbits like?',
  'hot dog': 'What here is a sausage in a bun?',
  pizza: 'What here is a round flatbread with cheese and tomato, cut into slices?',
  donut: 'What sweet ring-shaped pastry here has a hole in the middle?',
  cake: 'What here would have candles on it at a birthday?',
  chair: 'What here could I sit on at my desk?',
  couch: 'Where here could I take a nap in the living room?',
  'potted plant': 'What here grows green leaves in a pot and needs watering?',
  bed: 'What here has a mattress, pillows and a duvet?',
  'dining table': 'What here do people gather around for dinner?',
  toilet: 'What here would I flush?',
  tv: 'What screen here shows films and football matches?',
  laptop: 'What here could I write an email on while travelling?',
  mouse: 'What here do I click to move the cursor?',
  remote: 'What here turns the volume up from the sofa?',
  keyboard: 'What here do I type letters on?',
  'cell phone': 'What here could I call my mother with?',
  microwave: 'What here warms up leftovers in two minutes?',
  oven: 'What here would I bake a loaf of bread in?',
  toaster: 'What here turns bread brown and crispy?',
  sink: 'Where here would I rinse the vegetables?',
  refrigerator: 'What here keeps the milk cold?',
  book: 'What here could I read at bedtime?',
  clock: 'What here shows that it is half past three?',
  vase: 'What here holds a bunch of roses with water?',
  scissors: 'What here could cut a piece of paper in two?',
  'teddy bear': 'What here would a child hug at night?',
  'hair drier': 'What here blows warm air on wet hair?',
  toothbrush: 'What here do I clean my teeth with each morning?',
};

const [modelDir, dataDir] = process.argv.slice(2);
const model = LisaModel.load(modelDir!, { threads: 2 });
const set = readYoloSeg(dataDir!);
const rows: { kind: 'implicit' | 'absent'; cls: number; c: ClassChoice }[] = [];
let k = 0;
for (const img of set.images) {
  const enc = await model.encodeImage(await decodeImage(img.image), { sam: false });
  const here = [...new Set(img.instances.map((i) => i.cls))];
  const lacks = set.classes.map((_, c) => c).filter((c) => !here.includes(c));
  const asks: { kind: 'implicit' | 'absent'; cls: number; q: string }[] = [
    ...here.map((cls) => ({
      kind: 'implicit' as const,
      cls,
      q: LONG_QUESTION_LIST[0]!.replace('{sent}', TUNING_IMPLICIT[set.classes[cls]!]!),
    })),
    ...[lacks[k++ % lacks.length]!, lacks[(k * 7) % lacks.length]!].map((cls) => ({
      kind: 'absent' as const,
      cls,
      q: SHORT_QUESTION_LIST[1]!.replace('{class_name}', set.classes[cls]!),
    })),
  ];
  for (const a of asks) {
    const input = preparePrompt(model, enc, chatPrompt(a.q.replace('<image>\n', ''), model.config.mmUseImStartEnd));
    const prefill = await llmForward(model.llm, input.embeds, input.length, undefined, false, 'last');
    rows.push({ kind: a.kind, cls: a.cls, c: await chooseClass(model, enc, prefill, input.length) });
  }
}
const implicit = rows.filter((r) => r.kind === 'implicit'),
  absent = rows.filter((r) => r.kind === 'absent');
console.log(`${implicit.length} implicit questions about present classes, ${absent.length} absent class names`);
for (const m of [-Infinity, 0, 1, 2, 3, 4, 6, 8, 12, 16, Infinity]) {
  const right = implicit.filter((r) => chosenClass(r.c, m) === r.cls).length;
  const kept = absent.filter((r) => chosenClass(r.c, m) === r.cls).length;
  console.log(
    `margin ${m}: implicit named right ${right}/${implicit.length} (${((100 * right) / implicit.length).toFixed(1)} %), ` +
      `absent name kept ${kept}/${absent.length} (${((100 * kept) / absent.length).toFixed(1)} %)`,
  );
}
await model.release();
