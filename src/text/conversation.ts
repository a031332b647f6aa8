/**
 * LLaVA's `llava_v1` conversation template (model/llava/conversation.py), which every released LISA model
 * uses, LLaMA-2 based ones included: style TWO, sep " ", sep2 "</s>".
 */
export const LLAVA_V1_SYSTEM = "A chat between a curious human and an artificial intelligence assistant. The assistant gives helpful, detailed, and polite answers to the human's questions.";
export const ROLES = ['USER', 'ASSISTANT'] as const;
export const IM_START = '<im_start>';
export const IM_END = '<im_end>';

export interface Message { role: (typeof ROLES)[number]; content: string }

/**
 * Conversation.get_prompt for style TWO: system + " ", then per message "ROLE: content" followed by " " after
 * a user turn and "</s>" after an assistant turn; an empty content renders as "ROLE:" (the generation slot).
 */
export function llavaV1Prompt(messages: readonly Message[], system = LLAVA_V1_SYSTEM): string {
  const seps = [' ', '</s>'];
  let out = system + seps[0]!;
  messages.forEach((m, i) => {
    out += m.content ? `${m.role}: ${m.content}${seps[i % 2]}` : `${m.role}:`;
  });
  return out;
}

/** use_mm_start_end: every <image> becomes <im_start><image><im_end> (chat.py, and LISA's collate_fn). */
export function wrapImageTokens(text: string, useImStartEnd = true): string {
  return useImStartEnd ? text.replaceAll('<image>', `${IM_START}<image>${IM_END}`) : text;
}

/** chat.py's user turn: "<image>\n" + question, with <image> wrapped in <im_start>/<im_end> (use_mm_start_end). */
export function imageQuestion(question: string, useImStartEnd = true): string {
  return wrapImageTokens(`<image>\n${question}`, useImStartEnd);
}

/** The single-turn inference prompt chat.py builds: USER asks about the image, ASSISTANT's slot left open. */
export function chatPrompt(question: string, useImStartEnd = true): string {
  return llavaV1Prompt([{ role: 'USER', content: imageQuestion(question, useImStartEnd) }, { role: 'ASSISTANT', content: '' }]);
}
