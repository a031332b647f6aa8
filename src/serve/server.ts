import { readFileSync, readdirSync } from 'node:fs';
import { dirname, extname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import cors from '@fastify/cors';
import multipart from '@fastify/multipart';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { LisaError } from '../errors.js';
import { readSegmentParams, type RequestLimits } from './fields.js';
import { errorBody, HttpError } from './http-error.js';
import { ServerMetrics } from './metrics.js';
import { chatChunk, chatCompletion, completionId, finishReason, readChatRequest, usage } from './openai.js';
import { openApiDocument } from './openapi.js';
import { masksJson, segmentJson } from './result.js';
import type { Backend } from './backend.js';
import type { TurnResult } from './service.js';

export interface ServerOptions extends RequestLimits {
  /** Bytes of one request body (JSON with a base64 image is ~4/3 of the image). */
  maxBodyBytes: number;
  /** Milliseconds from arrival to answer, queueing included; past it the generation stops and 504 answers. */
  requestTimeoutMs: number;
  /** Required as `Authorization: Bearer KEY` on /v1/* and /metrics when set. */
  apiKey?: string;
  /** Origins allowed to call the API from a browser (none by default). */
  corsOrigins?: string[];
  version: string;
}

const WEB_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'web');
const MIME: Record<string, string> = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.jpg': 'image/jpeg',
  '.png': 'image/png',
  '.svg': 'image/svg+xml',
};

/** The page's files, read once: only these names are served, so no path from a request reaches the file system. */
function webAssets(): Map<string, { type: string; body: Buffer }> {
  const out = new Map<string, { type: string; body: Buffer }>();
  const walk = (dir: string, prefix: string): void => {
    for (const e of readdirSync(dir, { withFileTypes: true })) {
      if (e.isDirectory()) walk(join(dir, e.name), `${prefix}${e.name}/`);
      else if (MIME[extname(e.name)])
        out.set(`${prefix}${e.name}`, { type: MIME[extname(e.name)]!, body: readFileSync(join(dir, e.name)) });
    }
  };
  walk(WEB_DIR, '');
  return out;
}

/** 499, nginx's "client closed request": nobody reads the answer, but the metrics show it. */
class ClientGone extends HttpError {
  constructor() {
    super(499, 'client disconnected');
  }
}

/** Why a request stopped: its client went away (nothing to answer) or it ran past the time limit (504). */
function stopError(signal: AbortSignal, timeoutMs: number): Error | undefined {
  if (!signal.aborted) return undefined;
  if (signal.reason instanceof ClientGone) return signal.reason;
  return new HttpError(504, `the request took longer than the ${timeoutMs / 1000} s limit (--request-timeout)`);
}

function toError(e: unknown): { status: number; message: string; field?: string; headers?: Record<string, string> } {
  if (e instanceof HttpError) return { status: e.status, message: e.message, ...(e.field ? { field: e.field } : {}), headers: e.headers };
  if (e instanceof LisaError) return { status: 400, message: e.message };
  const fe = e as { statusCode?: number; code?: string; message?: string };
  if (typeof fe.statusCode === 'number' && fe.statusCode >= 400 && fe.statusCode < 500) {
    const msg =
      fe.code === 'FST_ERR_CTP_BODY_TOO_LARGE' || fe.code === 'FST_REQ_FILE_TOO_LARGE'
        ? 'body: larger than the upload limit'
        : (fe.message ?? 'bad request');
    return { status: fe.statusCode, message: msg, field: 'body' };
  }
  return { status: 500, message: 'internal error (see the server log)' };
}

/** The HTTP API and the web page in front of a model: in this process, or workers behind a queue. */
export async function createServer(service: Backend, opts: ServerOptions): Promise<FastifyInstance> {
  const app = Fastify({
    bodyLimit: opts.maxBodyBytes,
    logger: false,
    // A slow sender may not hold a connection forever; keep-alive clients are closed once idle on shutdown.
    requestTimeout: 120_000,
    forceCloseConnections: 'idle',
    return503OnClosing: true,
  });
  const metrics = new ServerMetrics({
    queueDepth: () => service.depth,
    cacheBytes: () => service.cacheBytes,
    cacheEntries: () => service.cacheEntries,
  });
  const assets = webAssets();
  let closing = false;
  // Shutting down: answers in flight close their connection, so keep-alive (72 s in Fastify) does not hold the exit.
  app.addHook('preClose', async () => {
    closing = true;
  });
  app.addHook('onSend', async (_req, reply) => {
    if (closing) reply.header('connection', 'close');
  });

  if (opts.corsOrigins?.length) await app.register(cors, { origin: opts.corsOrigins });
  await app.register(multipart, {
    limits: { fileSize: opts.maxImageBytes, files: 1, fields: 32, fieldSize: Math.max(4096, opts.maxQuestionChars * 4), parts: 40 },
  });
  app.addContentTypeParser(
    ['image/jpeg', 'image/png', 'image/webp', 'application/octet-stream'],
    { parseAs: 'buffer' },
    (_req, body, done) => done(null, body),
  );

  const started = new WeakMap<FastifyRequest, number>();
  app.addHook('onRequest', async (req, reply) => {
    started.set(req, performance.now());
    const path = req.url.split('?')[0]!;
    if (opts.apiKey && (path.startsWith('/v1/') || path === '/metrics') && req.headers.authorization !== `Bearer ${opts.apiKey}`)
      return reply
        .code(401)
        .send(errorBody(401, 'authorization: expected "Bearer <api key>" (the server runs with --api-key)', 'authorization'));
  });
  const routeOf = (req: FastifyRequest): string => req.routeOptions.url ?? 'unknown';
  const record = (req: FastifyRequest, status: number): void =>
    metrics.request(routeOf(req), status, (performance.now() - (started.get(req) ?? performance.now())) / 1000);
  app.addHook('onResponse', async (req, reply) => record(req, reply.statusCode));

  app.setErrorHandler((e, req, reply) => {
    const err = toError(e);
    if (err.status === 500) process.stderr.write(`lisa serve: ${req.method} ${req.url}: ${(e as Error).stack ?? String(e)}\n`);
    return reply
      .code(err.status)
      .headers(err.headers ?? {})
      .send(errorBody(err.status, err.message, err.field));
  });
  app.setNotFoundHandler((req, reply) =>
    reply.code(404).send(errorBody(404, `no route ${req.method} ${req.url.split('?')[0]!.slice(0, 200)}`)),
  );

  /** Aborted when the client disconnects or the time limit passes: generation stops, a waiting job leaves the queue. */
  const requestSignal = (reply: FastifyReply): AbortSignal => {
    // One controller and a plain timer: an AbortSignal.any over AbortSignal.timeout holds the timeout weakly, and a
    // collected one never fires (a CI run answered 200 past the limit).
    const ac = new AbortController();
    const timer = setTimeout(() => ac.abort(new DOMException('request time limit', 'TimeoutError')), opts.requestTimeoutMs);
    reply.raw.on('close', () => {
      clearTimeout(timer);
      if (!reply.raw.writableFinished) ac.abort(new ClientGone());
    });
    return ac.signal;
  };
  const stopped = (signal: AbortSignal): Error | undefined => {
    const stop = stopError(signal, opts.requestTimeoutMs);
    if (stop instanceof ClientGone) metrics.clientGone();
    return stop;
  };
  const finish = (signal: AbortSignal, t: TurnResult): TurnResult => {
    const stop = stopped(signal);
    if (stop) throw stop;
    metrics.generation(t);
    return t;
  };
  /** Rejections from the queue carry the abort reason; map it to the answer. */
  const guard = async <T>(signal: AbortSignal, p: Promise<T>): Promise<T> => {
    try {
      return await p;
    } catch (e) {
      throw stopped(signal) ?? e;
    }
  };

  /**
   * Server-sent events, begun lazily: the status line goes out with the first event, so a request refused before
   * any output (429, a bad image, an unknown image_id) still gets its proper HTTP status.
   */
  const eventStream = (req: FastifyRequest, reply: FastifyReply) => {
    let open = false;
    const send = (data: unknown, event?: string): void => {
      if (!open) {
        open = true;
        reply.hijack();
        reply.raw.writeHead(200, {
          ...(reply.getHeaders() as Record<string, string>),
          'content-type': 'text/event-stream; charset=utf-8',
          'cache-control': 'no-cache',
          'x-accel-buffering': 'no',
          ...(closing ? { connection: 'close' } : {}),
        });
      }
      if (!reply.raw.destroyed)
        reply.raw.write(`${event ? `event: ${event}\n` : ''}data: ${typeof data === 'string' ? data : JSON.stringify(data)}\n\n`);
    };
    const end = (): void => {
      reply.raw.end();
      record(req, 200);
    };
    /** An error after the stream began: one error event (the OpenAI shape), then the end. */
    const fail = (e: unknown): boolean => {
      if (!open) return false;
      if (!(e instanceof ClientGone)) {
        const err = toError(e);
        send(errorBody(err.status, err.message, err.field), 'error');
      }
      end();
      return true;
    };
    return {
      send,
      end,
      fail,
      get open() {
        return open;
      },
    };
  };

  app.get('/', async (_req, reply) => reply.type('text/html; charset=utf-8').send(assets.get('index.html')!.body));
  app.get('/assets/*', async (req, reply) => {
    const a = assets.get((req.params as { '*': string })['*']);
    if (!a || (req.params as { '*': string })['*'] === 'index.html') throw new HttpError(404, `no asset ${req.url.slice(0, 200)}`);
    return reply.type(a.type).header('cache-control', 'no-cache').send(a.body);
  });
  app.get('/healthz', async (_req, reply) =>
    reply.code(closing || service.ready === false ? 503 : 200).send({
      status: closing ? 'closing' : service.ready === false ? 'backend unavailable' : 'ok',
      model: service.modelName,
      queue_depth: service.depth,
      cache_bytes: service.cacheBytes,
    }),
  );
  app.get('/metrics', async (_req, reply) => reply.type(metrics.registry.contentType).send(await metrics.registry.metrics()));
  const openapi = openApiDocument(opts.version);
  app.get('/openapi.json', async () => openapi);
  app.get('/v1/models', async () => ({
    object: 'list',
    data: [{ id: service.modelName, object: 'model', created: 0, owned_by: 'lisa-ts' }],
  }));

  /** A body as fields: JSON, or a multipart form (its `image` file part as bytes, other parts as strings). */
  const readBody = async (req: FastifyRequest): Promise<{ fields: Record<string, unknown>; image?: Uint8Array; form: boolean }> => {
    if (req.isMultipart()) {
      const fields: Record<string, unknown> = {};
      let image: Uint8Array | undefined;
      try {
        for await (const part of req.parts()) {
          if (part.type === 'file') {
            if (part.fieldname !== 'image')
              throw new HttpError(400, `${part.fieldname}: unexpected file field (expected "image")`, part.fieldname);
            image = new Uint8Array(await part.toBuffer());
          } else fields[part.fieldname] = part.value;
        }
      } catch (e) {
        // The form parser's own errors (a cut-off or garbled body) carry no status: they are the client's.
        const status = (e as { statusCode?: number }).statusCode;
        if (e instanceof HttpError || (status !== undefined && status < 500)) throw e;
        throw new HttpError(400, `body: malformed multipart form (${(e as Error).message})`, 'body');
      }
      return { fields, ...(image ? { image } : {}), form: true };
    }
    const b = req.body;
    if (Buffer.isBuffer(b)) {
      if (b.length > opts.maxImageBytes)
        throw new HttpError(413, `image: ${b.length} bytes is larger than the ${opts.maxImageBytes}-byte limit`, 'image');
      return { fields: {}, image: new Uint8Array(b), form: false };
    }
    if (!b || typeof b !== 'object' || Array.isArray(b))
      throw new HttpError(400, 'body: expected a JSON object or a multipart form', 'body');
    return { fields: b as Record<string, unknown>, form: false };
  };

  app.post('/v1/images', async (req, reply) => {
    const { fields, image } = await readBody(req);
    const bytes = image ?? (typeof fields.image === 'string' ? readSegmentParams({ image: fields.image }, opts).image : undefined);
    if (!bytes)
      throw new HttpError(
        400,
        'image: missing (send the image as raw bytes, a multipart "image" file, or base64 JSON {"image": …})',
        'image',
      );
    const signal = requestSignal(reply);
    const r = await guard(signal, service.addImage(bytes, signal));
    return { image_id: r.imageId, width: r.width, height: r.height, encode_ms: r.encodeMs };
  });

  app.post('/v1/segment', async (req, reply) => {
    const { fields, image, form } = await readBody(req);
    const p = readSegmentParams(fields, opts, { form });
    if (image) p.image = image;
    const signal = requestSignal(reply);
    if (!p.stream)
      return segmentJson(finish(signal, await guard(signal, service.segment(p, signal))), p.question, p.maskFormat, service.modelName);
    const es = eventStream(req, reply);
    try {
      const t = finish(
        signal,
        await guard(
          signal,
          service.segment(p, signal, (delta) => es.send({ delta }, 'text')),
        ),
      );
      es.send(await segmentJson(t, p.question, p.maskFormat, service.modelName), 'result');
      es.end();
    } catch (e) {
      if (!es.fail(e)) throw e;
    }
    return reply;
  });

  app.post('/v1/chat/completions', async (req, reply) => {
    const p = readChatRequest(req.body, opts);
    const signal = requestSignal(reply);
    const id = completionId();
    if (!p.stream) {
      const t = finish(signal, await guard(signal, service.turn(p, signal)));
      return chatCompletion(id, service.modelName, t, await masksJson(t.result, p.maskFormat));
    }
    const es = eventStream(req, reply);
    const sendChunk = (delta: Record<string, unknown>, reason: string | null = null): void =>
      es.send(chatChunk(id, service.modelName, delta, reason));
    try {
      let first = true;
      const t = finish(
        signal,
        await guard(
          signal,
          service.turn(p, signal, (content) => {
            sendChunk(first ? { role: 'assistant', content } : { content });
            first = false;
          }),
        ),
      );
      if (first) sendChunk({ role: 'assistant', content: t.result.text });
      sendChunk({ masks: await masksJson(t.result, p.maskFormat) }, finishReason(t));
      if (p.includeUsage) es.send({ ...chatChunk(id, service.modelName, {}), choices: [], usage: usage(t) });
      es.send('[DONE]');
      es.end();
    } catch (e) {
      if (!es.fail(e)) throw e;
    }
    return reply;
  });

  return app;
}
