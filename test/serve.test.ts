import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import OpenAI from 'openai';
import sharp from 'sharp';
import { decodeRle, type CocoRle } from '../src/image/mask-encoding.js';
import { readNpy } from '../src/io/npy.js';
import { officialMaskFlips, tempDir } from './helpers.js';
import { GOLDEN, readEvents, spawnServe, startServer, SYNTHETIC, TRUCK, type RunningServer } from './serve-helpers.js';

const manifest = JSON.parse(readFileSync(join(GOLDEN, 'manifest.json'), 'utf8')) as {
  cases: Record<string, { chat: { query: string; new_token_ids: number[]; text_output: string } }>;
};
const truck = manifest.cases.truck_jpg!.chat;
const truckText = truck.text_output.split('ASSISTANT: ').pop()!;
const truckBytes = readFileSync(TRUCK);
const truckB64 = truckBytes.toString('base64');
const officialMask = readNpy(join(GOLDEN, 'truck_jpg', 'train_pred_masks.npy')).data as Float32Array;

interface ApiMask {
  index: number;
  seg_index: number;
  rle: CocoRle;
  bbox: number[];
  area: number;
  score: number;
  png?: string;
  polygons?: number[][];
}
interface ApiError {
  error: { message: string; type: string; param: string | null };
}

const post = (url: string, body: unknown, headers: Record<string, string> = {}): Promise<Response> =>
  fetch(url, { method: 'POST', headers: { 'content-type': 'application/json', ...headers }, body: JSON.stringify(body) });

describe('lisa serve: the API on the tiny checkpoint', () => {
  const cache = tempDir('lisa-serve-');
  let s: RunningServer;
  before(async () => {
    s = await startServer(cache.path);
  });
  after(async () => {
    await s.close();
    cache[Symbol.dispose]();
  });

  it('health, model list, OpenAPI document and the page', async () => {
    const h = (await (await fetch(`${s.url}/healthz`)).json()) as { status: string; model: string };
    assert.deepEqual([h.status, h.model], ['ok', 'checkpoint']);
    const models = (await (await fetch(`${s.url}/v1/models`)).json()) as { data: { id: string }[] };
    assert.equal(models.data[0]!.id, 'checkpoint');
    const doc = (await (await fetch(`${s.url}/openapi.json`)).json()) as {
      openapi: string;
      paths: Record<string, unknown>;
      components: { schemas: Record<string, { properties: Record<string, unknown> }> };
    };
    assert.equal(doc.openapi, '3.1.0');
    for (const p of ['/v1/images', '/v1/segment', '/v1/chat/completions', '/healthz', '/metrics']) assert.ok(doc.paths[p], p);
    assert.ok(doc.components.schemas.SegmentRequest!.properties.mask_format);
    const page = await fetch(`${s.url}/`);
    assert.match(page.headers.get('content-type')!, /text\/html/);
    assert.match(await page.text(), /\/assets\/app\.js/);
    assert.equal((await fetch(`${s.url}/assets/app.js`)).status, 200);
    assert.equal((await fetch(`${s.url}/assets/../package.json`)).status, 404);
    assert.equal((await fetch(`${s.url}/assets/%2e%2e/%2e%2e/package.json`)).status, 404);
  });

  it('POST /v1/images encodes once; /v1/segment by image_id answers with the official greedy text', async () => {
    const up = await fetch(`${s.url}/v1/images`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: truckBytes });
    assert.equal(up.status, 200);
    const img = (await up.json()) as { image_id: string; width: number; height: number; encode_ms: number };
    assert.deepEqual([img.width, img.height], [1800, 1200]);
    assert.ok(img.encode_ms > 0);
    const r = (await (
      await post(`${s.url}/v1/segment`, { image_id: img.image_id, question: truck.query, max_new_tokens: truck.new_token_ids.length })
    ).json()) as {
      text: string;
      tokens: number[];
      no_target: boolean;
      timings: { encode_image_ms: number };
    };
    assert.deepEqual(r.tokens, truck.new_token_ids);
    assert.equal(r.text, truckText);
    assert.equal(r.timings.encode_image_ms, 0, 'the uploaded image was not encoded again');
    // The same image in a multipart upload has the same id (ids are the hash of the pixels).
    const form = new FormData();
    form.append('image', new Blob([truckBytes], { type: 'image/jpeg' }), 'truck.jpg');
    const again = (await (await fetch(`${s.url}/v1/images`, { method: 'POST', body: form })).json()) as {
      image_id: string;
      encode_ms: number;
    };
    assert.equal(again.image_id, img.image_id);
    assert.equal(again.encode_ms, 0);
  });

  it('teacher-forced /v1/segment gives the official mask as RLE, PNG or polygons; multipart and base64 alike', async () => {
    const viaJson = (await (
      await post(`${s.url}/v1/segment`, { image: truckB64, question: truck.query, answer: 'Sure, [SEG].', mask_format: 'png' })
    ).json()) as {
      masks: ApiMask[];
      stopped: string;
    };
    assert.equal(viaJson.stopped, 'teacher_forced');
    assert.equal(viaJson.masks.length, 1);
    const m = viaJson.masks[0]!;
    const fromRle = decodeRle(m.rle).data;
    assert.equal(officialMaskFlips(fromRle, officialMask), 0);
    const meta = await sharp(Buffer.from(m.png!, 'base64')).metadata();
    assert.deepEqual([meta.format, meta.width, meta.height, meta.channels], ['png', 1800, 1200, 1]);
    const png = await sharp(Buffer.from(m.png!, 'base64')).extractChannel(0).raw().toBuffer({ resolveWithObject: true });
    assert.deepEqual(
      new Uint8Array(png.data).map((v) => (v > 127 ? 1 : 0)),
      fromRle,
    );
    const form = new FormData();
    form.append('image', new Blob([truckBytes], { type: 'image/jpeg' }), 'truck.jpg');
    form.append('question', truck.query);
    form.append('answer', 'It is [SEG] and [SEG].');
    form.append('mask_format', 'polygon');
    const viaForm = (await (await fetch(`${s.url}/v1/segment`, { method: 'POST', body: form })).json()) as { masks: ApiMask[] };
    assert.deepEqual(
      viaForm.masks.map((x) => x.seg_index),
      [0, 1],
    );
    assert.ok(viaForm.masks.every((x) => Array.isArray(x.polygons)));
  });

  it('points and a box alone are plain SAM; with a question they join the [SEG]', async () => {
    const r = (await (await post(`${s.url}/v1/segment`, { image: truckB64, points: [[900, 600, 1]] })).json()) as {
      masks: ApiMask[];
      text: string;
    };
    assert.equal(r.text, '');
    assert.deepEqual(
      r.masks.map((x) => x.seg_index),
      [-1],
    );
    const b = (await (
      await post(`${s.url}/v1/segment`, { image: truckB64, question: 'q', answer: '[SEG]', box: { x1: 10, y1: 10, x2: 500, y2: 400 } })
    ).json()) as { masks: ApiMask[] };
    assert.equal(b.masks.length, 1);
    const out = await post(`${s.url}/v1/segment`, { image: truckB64, points: [[5000, 5, 1]] });
    assert.equal(out.status, 400);
    assert.match(((await out.json()) as ApiError).error.message, /outside the 1800x1200 image/);
  });

  it('streams /v1/segment as server-sent events: text deltas, then the result', async () => {
    const res = await post(`${s.url}/v1/segment`, {
      image: truckB64,
      question: truck.query,
      max_new_tokens: truck.new_token_ids.length,
      stream: true,
    });
    assert.equal(res.status, 200);
    assert.match(res.headers.get('content-type')!, /text\/event-stream/);
    const events = await readEvents(res);
    const text = events
      .filter(([e]) => e === 'text')
      .map(([, d]) => (JSON.parse(d) as { delta: string }).delta)
      .join('');
    assert.equal(text, truckText);
    const [last, data] = events[events.length - 1]!;
    assert.equal(last, 'result');
    assert.deepEqual((JSON.parse(data) as { tokens: number[] }).tokens, truck.new_token_ids);
  });

  it('the official openai client: a chat completion, a follow-up that reuses the KV cache, and a stream', async () => {
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const dataUrl = `data:image/jpeg;base64,${truckB64}`;
    const first = await client.chat.completions.create({
      model: 'lisa',
      messages: [
        {
          role: 'user',
          content: [
            { type: 'text', text: truck.query },
            { type: 'image_url', image_url: { url: dataUrl } },
          ],
        },
      ],
      max_tokens: truck.new_token_ids.length,
    });
    const answer = first.choices[0]!.message.content!;
    assert.equal(answer, truckText);
    assert.equal(first.choices[0]!.finish_reason, 'length');
    assert.equal(first.usage!.completion_tokens, truck.new_token_ids.length);
    const second = await client.chat.completions.create({
      model: 'lisa',
      messages: [
        { role: 'system', content: 'ignored: the model has its own system prompt' },
        {
          role: 'user',
          content: [
            { type: 'text', text: truck.query },
            { type: 'image_url', image_url: { url: dataUrl } },
          ],
        },
        { role: 'assistant', content: answer },
        { role: 'user', content: 'And where is it? Please output segmentation mask.' },
      ],
      max_tokens: 4,
    });
    const ext = (second as unknown as { lisa: { timings: { reused_positions: number; prompt_tokens: number; encode_image_ms: number } } })
      .lisa;
    assert.equal(ext.timings.encode_image_ms, 0);
    // The whole first turn comes from the session kept for this conversation, not just the image prefix.
    assert.ok(ext.timings.reused_positions >= first.usage!.prompt_tokens + truck.new_token_ids.length - 1, JSON.stringify(ext.timings));
    const stream = await client.chat.completions.create({
      model: 'lisa',
      messages: [
        {
          role: 'user',
          content: [
            { type: 'image_url', image_url: { url: dataUrl } },
            { type: 'text', text: truck.query },
          ],
        },
      ],
      max_tokens: truck.new_token_ids.length,
      stream: true,
    });
    let text = '';
    let masks: unknown;
    let finish: string | null = null;
    for await (const chunk of stream) {
      text += chunk.choices[0]?.delta.content ?? '';
      masks ??= (chunk.choices[0]?.delta as { masks?: unknown } | undefined)?.masks;
      finish = chunk.choices[0]?.finish_reason ?? finish;
    }
    assert.equal(text, truckText);
    assert.deepEqual(masks, []);
    assert.equal(finish, 'length');
  });

  it('chat completions return the masks of the answer in message.masks', async () => {
    const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'unused', maxRetries: 0 });
    const r = await client.chat.completions.create({
      model: 'lisa',
      messages: [
        {
          role: 'user',
          content: [
            { type: 'text', text: truck.query },
            { type: 'image_url', image_url: { url: `data:image/jpeg;base64,${truckB64}` } },
          ],
        },
      ],
      // Extension fields, as an OpenAI client passes unknown body fields through.
      ...({ answer: 'Sure, [SEG].' } as object),
    });
    const masks = (r.choices[0]!.message as unknown as { masks: ApiMask[] }).masks;
    assert.equal(masks.length, 1);
    assert.equal(officialMaskFlips(decodeRle(masks[0]!.rle).data, officialMask), 0);
  });

  it('bad requests get a 4xx JSON error naming the field, and the server keeps serving', async () => {
    const cases: [string, () => Promise<Response>, number, string | null][] = [
      ['bad base64', () => post(`${s.url}/v1/segment`, { image: '!!!', question: 'q' }), 400, 'image'],
      ['not an image', () => post(`${s.url}/v1/segment`, { image: Buffer.from('hello').toString('base64'), question: 'q' }), 400, 'image'],
      ['wrong type', () => post(`${s.url}/v1/segment`, { image: truckB64, question: 3 }), 400, 'question'],
      ['bad points', () => post(`${s.url}/v1/segment`, { image: truckB64, points: [[1, 'a']] }), 400, 'points[0].y'],
      ['bad label', () => post(`${s.url}/v1/segment`, { image: truckB64, points: [[1, 2, 7]] }), 400, 'points[0].label'],
      ['bad mask_format', () => post(`${s.url}/v1/segment`, { image: truckB64, question: 'q', mask_format: 'jpeg' }), 400, 'mask_format'],
      ['unknown field', () => post(`${s.url}/v1/segment`, { image: truckB64, query: 'q' }), 400, 'query'],
      ['negative tokens', () => post(`${s.url}/v1/segment`, { image: truckB64, question: 'q', max_new_tokens: -1 }), 400, 'max_new_tokens'],
      ['unknown image_id', () => post(`${s.url}/v1/segment`, { image_id: 'f00', question: 'q' }), 404, 'image_id'],
      ['no image', () => post(`${s.url}/v1/segment`, { question: 'q' }), 400, 'image'],
      ['empty question', () => post(`${s.url}/v1/segment`, { image: truckB64, question: '  ' }), 400, 'question'],
      ['JSON array', () => post(`${s.url}/v1/segment`, [1, 2]), 400, 'body'],
      [
        'invalid JSON',
        () => fetch(`${s.url}/v1/segment`, { method: 'POST', headers: { 'content-type': 'application/json' }, body: '{bad' }),
        400,
        'body',
      ],
      [
        'malformed multipart',
        () =>
          fetch(`${s.url}/v1/segment`, {
            method: 'POST',
            headers: { 'content-type': 'multipart/form-data; boundary=xx' },
            body: 'garbage',
          }),
        400,
        'body',
      ],
      [
        'text body',
        () => fetch(`${s.url}/v1/segment`, { method: 'POST', headers: { 'content-type': 'text/plain' }, body: 'hi' }),
        400,
        'body',
      ],
      [
        'unsupported type',
        () => fetch(`${s.url}/v1/segment`, { method: 'POST', headers: { 'content-type': 'application/xml' }, body: '<a/>' }),
        415,
        'body',
      ],
      ['huge body', () => post(`${s.url}/v1/segment`, { image: 'A'.repeat(13 * 1024 * 1024), question: 'q' }), 413, 'body'],
      ['long question', () => post(`${s.url}/v1/segment`, { image: truckB64, question: 'x'.repeat(2001) }), 400, 'question'],
      ['no messages', () => post(`${s.url}/v1/chat/completions`, { model: 'x' }), 400, 'messages'],
      [
        'http image url',
        () =>
          post(`${s.url}/v1/chat/completions`, {
            messages: [{ role: 'user', content: [{ type: 'image_url', image_url: { url: 'http://example.com/a.jpg' } }] }],
          }),
        400,
        'messages[0].content[0].image_url.url',
      ],
      ['chat without image', () => post(`${s.url}/v1/chat/completions`, { messages: [{ role: 'user', content: 'hi' }] }), 400, 'messages'],
      [
        'two users in a row',
        () =>
          post(`${s.url}/v1/chat/completions`, {
            messages: [
              { role: 'user', content: 'a' },
              { role: 'user', content: 'b' },
            ],
            image_id: 'x',
          }),
        400,
        'messages[1].role',
      ],
      [
        'ends with assistant',
        () =>
          post(`${s.url}/v1/chat/completions`, {
            messages: [
              { role: 'user', content: 'a' },
              { role: 'assistant', content: 'b' },
            ],
            image_id: 'x',
          }),
        400,
        'messages',
      ],
      [
        'bad part',
        () => post(`${s.url}/v1/chat/completions`, { messages: [{ role: 'user', content: [{ type: 'audio' }] }] }),
        400,
        'messages[0].content[0].type',
      ],
      ['unknown route', () => fetch(`${s.url}/v2/nothing`), 404, null],
    ];
    for (const [name, send, status, field] of cases) {
      const res = await send();
      assert.equal(res.status, status, name);
      const body = (await res.json()) as ApiError;
      assert.equal(typeof body.error.message, 'string', name);
      assert.equal(body.error.param, field, `${name}: ${body.error.message}`);
    }
    assert.equal((await fetch(`${s.url}/healthz`)).status, 200);
  });

  it('GET /metrics: request counts by route and status, latency histogram, tokens, queue depth and cache bytes', async () => {
    const text = await (await fetch(`${s.url}/metrics`)).text();
    assert.match(text, /lisa_http_requests_total\{route="\/v1\/segment",status="200"\} \d+/);
    assert.match(text, /lisa_http_requests_total\{route="\/v1\/segment",status="400"\} \d+/);
    assert.match(text, /lisa_http_request_duration_seconds_bucket\{le="0.5",route="\/v1\/segment"\}/);
    const tokens = Number(/^lisa_generated_tokens_total (\d+)/m.exec(text)![1]);
    assert.ok(tokens >= 4 * truck.new_token_ids.length);
    assert.match(text, /^lisa_queue_depth 0$/m);
    assert.ok(Number(/^lisa_cache_bytes (\d+)/m.exec(text)![1]) > 1800 * 1200 * 3);
  });
});

describe('lisa serve: limits and behaviour under load', () => {
  const cache = tempDir('lisa-serve-limits-');
  after(() => cache[Symbol.dispose]());

  it('a full queue answers 429 with Retry-After; a client that disconnects cancels its generation', async () => {
    const s = await startServer(cache.path, {}, { maxQueue: 0 });
    try {
      const ac = new AbortController();
      const long = post(`${s.url}/v1/segment`, { image: truckB64, question: 'q', max_new_tokens: 4000, stream: true }).then(async (r) => {
        const reader = r.body!.getReader();
        await reader.read(); // the first text event: generation is running
        ac.abort();
        await reader.cancel();
      });
      while (s.service.queue.depth === 0) await new Promise((r) => setTimeout(r, 5));
      const busy = await post(`${s.url}/v1/segment`, { image: truckB64, question: 'q' });
      assert.equal(busy.status, 429);
      assert.ok(Number(busy.headers.get('retry-after')) >= 1);
      assert.equal(((await busy.json()) as ApiError).error.type, 'rate_limit_error');
      await long;
      // Cancelled: the queue empties long before 1700 tokens (the tiny model's positions) could be generated.
      const t = performance.now();
      while (s.service.queue.depth > 0) await new Promise((r) => setTimeout(r, 5));
      assert.ok(performance.now() - t < 1500);
      let metrics = '';
      for (let i = 0; i < 100 && !/lisa_cancelled_requests_total 1/.test(metrics); i++)
        metrics = await (await fetch(`${s.url}/metrics`)).text();
      assert.match(metrics, /lisa_cancelled_requests_total 1/);
      assert.equal((await post(`${s.url}/v1/segment`, { image: truckB64, question: 'q', max_new_tokens: 2 })).status, 200);
    } finally {
      await s.close();
    }
  });

  it('a request past its time limit gets 504; uploads past the byte and pixel limits get 413', async () => {
    const s = await startServer(cache.path, { requestTimeoutMs: 150, maxImageBytes: 200_000 }, { maxPixels: 3_000_000 });
    try {
      const small = await sharp({ create: { width: 64, height: 48, channels: 3, background: '#808080' } })
        .png()
        .toBuffer();
      const slow = await post(`${s.url}/v1/segment`, { image: small.toString('base64'), question: 'q', max_new_tokens: 4000 });
      assert.equal(slow.status, 504);
      assert.match(((await slow.json()) as ApiError).error.message, /0.15 s limit/);
      // The 271 kB truck (2.2 Mpixel, within the pixel limit) as raw bytes, a multipart file and base64.
      const raw = await fetch(`${s.url}/v1/images`, { method: 'POST', headers: { 'content-type': 'image/jpeg' }, body: truckBytes });
      assert.equal(raw.status, 413);
      assert.match(((await raw.json()) as ApiError).error.message, /^image: 271475 bytes is larger than the 200000-byte limit$/);
      const form = new FormData();
      form.append('image', new Blob([truckBytes], { type: 'image/jpeg' }), 'truck.jpg');
      assert.equal((await fetch(`${s.url}/v1/images`, { method: 'POST', body: form })).status, 413);
      const b64 = await post(`${s.url}/v1/segment`, { image: truckB64, question: 'q' });
      assert.equal(b64.status, 413);
      assert.equal(((await b64.json()) as ApiError).error.param, 'image');
      // 3000 x 1100 pixels in a small PNG: refused from its header, before decoding.
      const wide = await sharp({ create: { width: 3000, height: 1100, channels: 3, background: '#000' } })
        .png()
        .toBuffer();
      assert.ok(wide.length < 200_000);
      const px = await fetch(`${s.url}/v1/images`, { method: 'POST', headers: { 'content-type': 'image/png' }, body: wide });
      assert.equal(px.status, 413);
      assert.match(((await px.json()) as ApiError).error.message, /3000x1100, larger than the limit of 3,000,000 pixels/);
    } finally {
      await s.close();
    }
  });

  it('images and sessions share one byte budget, least recently used evicted first', async () => {
    // Room for about one encoded image: the second upload evicts the first.
    const s = await startServer(cache.path, {}, { cacheBytes: 2 * 1800 * 1200 * 3 });
    try {
      const up = async (b: Buffer, type: string): Promise<string> =>
        (
          (await (await fetch(`${s.url}/v1/images`, { method: 'POST', headers: { 'content-type': type }, body: b })).json()) as {
            image_id: string;
          }
        ).image_id;
      const a = await up(truckBytes, 'image/jpeg');
      const b = await up(readFileSync(SYNTHETIC), 'image/png');
      assert.ok(s.service.store.bytes <= s.service.store.budget || s.service.store.size === 1);
      assert.equal((await post(`${s.url}/v1/segment`, { image_id: b, question: 'q', max_new_tokens: 1 })).status, 200);
      const gone = await post(`${s.url}/v1/segment`, { image_id: a, question: 'q', max_new_tokens: 1 });
      assert.equal(gone.status, 404);
      assert.match(((await gone.json()) as ApiError).error.message, /evicted: upload it again/);
    } finally {
      await s.close();
    }
  });

  it('--api-key: requests without the Bearer token get 401, the openai client with it is served', async () => {
    const s = await startServer(cache.path, { apiKey: 'sekret' });
    try {
      const no = await post(`${s.url}/v1/segment`, { image: truckB64, question: 'q' });
      assert.equal(no.status, 401);
      assert.equal(((await no.json()) as ApiError).error.param, 'authorization');
      assert.equal((await fetch(`${s.url}/metrics`)).status, 401);
      assert.equal((await fetch(`${s.url}/healthz`)).status, 200);
      const client = new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'sekret', maxRetries: 0 });
      const models = await client.models.list();
      assert.equal(models.data[0]!.id, 'checkpoint');
      await assert.rejects(
        new OpenAI({ baseURL: `${s.url}/v1`, apiKey: 'wrong', maxRetries: 0 }).models.list(),
        (e: { status?: number }) => e.status === 401,
      );
    } finally {
      await s.close();
    }
  });

  it('SIGTERM: the in-flight request finishes, new ones are refused, the process exits 0', async () => {
    const { url, child, stderr } = await spawnServe(cache.path);
    const exited = new Promise<number | null>((r) => child.on('exit', (code) => r(code)));
    const inflight = post(`${url}/v1/segment`, { image: truckB64, question: 'q', max_new_tokens: 4000 });
    // Wait until it runs, then stop the server.
    for (;;) {
      const h = (await (await fetch(`${url}/healthz`, { headers: { connection: 'close' } })).json()) as { queue_depth: number };
      if (h.queue_depth > 0) break;
      await new Promise((r) => setTimeout(r, 10));
    }
    child.kill('SIGTERM');
    const res = await inflight;
    assert.equal(res.status, 200);
    assert.equal(((await res.json()) as { stopped: string }).stopped, 'max_new_tokens');
    assert.equal(await exited, 0, stderr());
    assert.match(stderr(), /SIGTERM: finishing 1 request/);
    await assert.rejects(fetch(`${url}/healthz`));
  });

  it('binds to loopback by default and refuses a port in use with one line', async () => {
    const { url, child } = await spawnServe(cache.path);
    try {
      assert.match(url, /^http:\/\/127\.0\.0\.1:\d+$/);
      const port = new URL(url).port;
      const { spawnSync } = await import('node:child_process');
      const { CKPT, CLIP } = await import('./serve-helpers.js');
      const { ROOT } = await import('./helpers.js');
      const r = spawnSync(
        process.execPath,
        [join(ROOT, 'bin', 'lisa.js'), 'serve', '--model', CKPT, '--vision-tower', CLIP, '--cache-dir', cache.path, '--port', port],
        {
          encoding: 'utf8',
        },
      );
      assert.equal(r.status, 1);
      assert.equal(r.stderr.trim(), `lisa: --port ${port}: already in use on 127.0.0.1`);
    } finally {
      child.kill('SIGTERM');
    }
  });
});
