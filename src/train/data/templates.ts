/** LISA's question and answer templates (utils/utils.py:14-42), verbatim. */
export const SHORT_QUESTION_LIST = [
  '<image>\nCan you segment the {class_name} in this image?',
  '<image>\nPlease segment the {class_name} in this image.',
  '<image>\nWhat is {class_name} in this image? Please respond with segmentation mask.',
  '<image>\nWhat is {class_name} in this image? Please output segmentation mask.',
];
export const LONG_QUESTION_LIST = [
  '<image>\n{sent} Please respond with segmentation mask.',
  '<image>\n{sent} Please output segmentation mask.',
];
export const EXPLANATORY_QUESTION_LIST = [
  'Please output segmentation mask and explain why.',
  'Please output segmentation mask and explain the reason.',
  'Please output segmentation mask and give some explanation.',
];
export const ANSWER_LIST = ['It is [SEG].', 'Sure, [SEG].', 'Sure, it is [SEG].', 'Sure, the segmentation result is [SEG].', '[SEG].'];

export const pick = <T>(list: readonly T[], rand: () => number): T => list[Math.floor(rand() * list.length)]!;

/** The question for a class name (lower-cased, as the official datasets) or a sentence (kept as written). */
export function questionFor(text: string, isSentence: boolean, rand: () => number): string {
  return isSentence
    ? pick(LONG_QUESTION_LIST, rand).replace('{sent}', text)
    : pick(SHORT_QUESTION_LIST, rand).replace('{class_name}', text.toLowerCase());
}

/** random.sample(items, min(n, len)): up to n distinct items, in sampled order. */
export function sampleUpTo<T>(items: readonly T[], n: number, rand: () => number): T[] {
  const pool = [...items],
    out: T[] = [];
  while (out.length < n && pool.length) out.push(pool.splice(Math.floor(rand() * pool.length), 1)[0]!);
  return out;
}
