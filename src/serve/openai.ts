import { decodeBase64Image, OPTION_FIELDS, readSegmentParams, type RequestLimits } from './fields.js';
import { HttpError } from './http-error.js';
import { snakeTimings } from './result.js';
import type { ChatTurn, TurnResult } from './service.js';

/**
 * POST /v1/chat/completions in OpenAI's shape. A client sends the whole conversation each time; LISA talks about
 * one image, so exactly one image is expected (an `image_url` data: URL part, or the `image_id` extension field).
 * The system prompt is the model's own (llava_v1, as it was trained): a `system` message is accepted and not used.
 */

/** OpenAI fields a client may send that mean nothing here (accepted, not used). */
const IGNORED = ['model', 'user', 'n', 'stop', 'presence_penalty', 'frequency_penalty', 'logit_bias', 'logprobs', 'top_logprobs'];
const IGNORED_ALSO = [
  'stream_options',
  'response_format',
  'tools',
  'tool_choice',
  'parallel_tool_calls',
  'store',
  'metadata',
  'service_tier',
];

export interface ChatRequest extends ChatTurn {
  /** The client asked for usage in the last stream chunk (`stream_options.include_usage`). */
  includeUsage: boolean;
}

const fail = (field: string, msg: string): never => {
  throw new HttpError(400, `${field}: ${msg}`, field);
};

function messageText(content: unknown, field: string, limits: RequestLimits, images: Uint8Array[]): string {
  if (typeof content === 'string') return content;
  if (!Array.isArray(content)) return fail(field, 'expected a string or an array of content parts');
  const texts: string[] = [];
  content.forEach((part: unknown, i) => {
    const f = `${field}[${i}]`;
    const p = part as { type?: unknown; text?: unknown; image_url?: { url?: unknown } | string };
    if (!p || typeof p !== 'object') return fail(f, 'expected a content part object');
    if (p.type === 'text') texts.push(typeof p.text === 'string' ? p.text : fail(`${f}.text`, 'expected a string'));
    else if (p.type === 'image_url') {
      const url = typeof p.image_url === 'string' ? p.image_url : p.image_url?.url;
      if (typeof url !== 'string') return fail(`${f}.image_url.url`, 'expected a string');
      if (!url.startsWith('data:')) return fail(`${f}.image_url.url`, 'only data: URLs are accepted (the server downloads nothing)');
      images.push(decodeBase64Image(`${f}.image_url.url`, url, limits.maxImageBytes));
    } else fail(`${f}.type`, `expected "text" or "image_url", got ${JSON.stringify(p.type)}`);
  });
  return texts.join('\n');
}

export function readChatRequest(body: unknown, limits: RequestLimits): ChatRequest {
  if (!body || typeof body !== 'object' || Array.isArray(body)) return fail('body', 'expected a JSON object');
  const { messages, max_tokens, max_completion_tokens, ...rest } = body as Record<string, unknown>;
  if (!Array.isArray(messages) || messages.length === 0) return fail('messages', 'expected a non-empty array of messages');
  if (messages.length > 200) fail('messages', `at most 200 messages, got ${messages.length}`);
  const maxTokens = max_completion_tokens ?? max_tokens;
  const opts = readSegmentParams({ ...rest, ...(maxTokens !== undefined ? { max_new_tokens: maxTokens } : {}) }, limits, {
    specs: OPTION_FIELDS,
    ignore: [...IGNORED, ...IGNORED_ALSO],
  });
  if (rest.n !== undefined && rest.n !== 1) fail('n', 'only n = 1 is supported');
  const images: Uint8Array[] = [];
  const turns: { role: 'user' | 'assistant'; text: string }[] = [];
  messages.forEach((m: unknown, i) => {
    const f = `messages[${i}]`;
    const msg = m as { role?: unknown; content?: unknown };
    if (!msg || typeof msg !== 'object') return fail(f, 'expected a message object');
    if (msg.role === 'system' || msg.role === 'developer') return;
    if (msg.role !== 'user' && msg.role !== 'assistant')
      return fail(`${f}.role`, `expected user, assistant or system, got ${JSON.stringify(msg.role)}`);
    const want = turns.length % 2 === 0 ? 'user' : 'assistant';
    if (msg.role !== want) fail(`${f}.role`, `expected a ${want} message here (turns alternate, starting with the user)`);
    const text = messageText(msg.content, `${f}.content`, limits, images);
    if (msg.role === 'user' && text.length > limits.maxQuestionChars)
      fail(`${f}.content`, `${text.length} characters is longer than the ${limits.maxQuestionChars}-character limit`);
    turns.push({ role: msg.role, text });
  });
  if (turns.length % 2 === 0) fail('messages', 'the last message must be from the user');
  if (images.length > 1) fail('messages', `one image per conversation (LISA talks about one), got ${images.length}`);
  if (images.length === 0 && !opts.imageId)
    fail('messages', 'no image: put an image_url part (a data: URL) in a user message, or give image_id');
  const history: ChatTurn['history'] = [];
  for (let i = 0; i + 1 < turns.length; i += 2) history.push({ question: turns[i]!.text, answer: turns[i + 1]!.text });
  const so = rest.stream_options as { include_usage?: unknown } | undefined;
  return {
    ...opts,
    ...(images[0] ? { image: images[0] } : {}),
    question: turns[turns.length - 1]!.text,
    history,
    includeUsage: so?.include_usage === true,
  };
}

export function finishReason(r: TurnResult): 'stop' | 'length' {
  return r.result.stopped === 'max_new_tokens' ? 'length' : 'stop';
}

export function usage(r: TurnResult): { prompt_tokens: number; completion_tokens: number; total_tokens: number } {
  const t = r.result.timings;
  return { prompt_tokens: t.promptTokens, completion_tokens: t.newTokens, total_tokens: t.promptTokens + t.newTokens };
}

export function completionId(): string {
  return `chatcmpl-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 10)}`;
}

/** The non-streamed answer: the text as usual, the masks in the `masks` extension field of the message. */
export function chatCompletion(id: string, model: string, r: TurnResult, masks: Record<string, unknown>[]): Record<string, unknown> {
  return {
    id,
    object: 'chat.completion',
    created: Math.floor(Date.now() / 1000),
    model,
    choices: [{ index: 0, message: { role: 'assistant', content: r.result.text, masks }, finish_reason: finishReason(r), logprobs: null }],
    usage: usage(r),
    lisa: {
      image_id: r.imageId,
      width: r.width,
      height: r.height,
      no_target: r.result.noTarget,
      stopped: r.result.stopped,
      timings: snakeTimings(r.result.timings),
    },
  };
}

export function chatChunk(
  id: string,
  model: string,
  delta: Record<string, unknown>,
  finish: string | null = null,
): Record<string, unknown> {
  return {
    id,
    object: 'chat.completion.chunk',
    created: Math.floor(Date.now() / 1000),
    model,
    choices: [{ index: 0, delta, finish_reason: finish }],
  };
}
