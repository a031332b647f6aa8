import type { Command } from 'commander';
import { LisaError } from '../errors.js';
import { createServer } from '../serve/server.js';
import type { Backend } from '../serve/backend.js';
import { LisaService } from '../serve/service.js';
import { QueueBackend } from '../scale/queue-backend.js';
import { checkCacheDir, loadOptions, modelOptions, parseIntArg, type ModelCliOptions } from './common.js';
import { defaultModelDir } from '../models/default-model.js';
import { packageVersion } from './main.js';

interface ServeCliOptions extends Partial<ModelCliOptions> {
  queue?: string;
  host: string;
  port: number;
  apiKey?: string;
  cors?: string[];
  maxUploadMb: number;
  maxPixels: number;
  maxQuestionChars: number;
  requestTimeout: number;
  maxQueue: number;
  cacheMb: number;
}

const MB = 1024 * 1024;

export function registerServe(program: Command): void {
  modelOptions(program.command('serve'), {
    modelRequired: false,
    modelHelp: 'LISA checkpoint folder (default: the shipped lisa-coco80; not with --queue: the workers hold it)',
  })
    .description('HTTP API (own JSON and OpenAI-compatible chat) and a web page at /, for one model')
    .option('--queue <url>', 'a stateless front end: requests become jobs for `lisa worker`s on this Redis (redis://HOST:PORT)')
    .option('--host <addr>', 'address to listen on (loopback by default; 0.0.0.0 exposes it to the network)', '127.0.0.1')
    .option('--port <n>', 'port (0: any free one)', parseIntArg('--port', 0, 65535), 8080)
    .option('--api-key <key>', 'require "Authorization: Bearer KEY" on /v1/* and /metrics (default: $LISA_API_KEY, else none)')
    .option('--cors <origin...>', 'origins allowed to call the API from a browser (default: none)')
    .option('--max-upload-mb <n>', 'bytes of one image upload, in MiB', parseIntArg('--max-upload-mb', 1, 1024), 20)
    .option('--max-pixels <n>', 'pixels of one image, checked from its header before decoding', parseIntArg('--max-pixels', 1), 40_000_000)
    .option('--max-question-chars <n>', 'characters of one question or answer', parseIntArg('--max-question-chars', 1), 4000)
    .option('--request-timeout <s>', 'seconds per request, queueing included (504 past it)', parseIntArg('--request-timeout', 1), 600)
    .option(
      '--max-queue <n>',
      'requests waiting behind the running one before 429 (with --queue: in flight)',
      parseIntArg('--max-queue', 0, 100_000),
      32,
    )
    .option(
      '--cache-mb <n>',
      'MiB for encoded images, KV caches and chat sessions (LRU; 0 keeps nothing: every request encodes its image)',
      parseIntArg('--cache-mb', 0),
      4096,
    )
    .action(async (o: ServeCliOptions) => {
      if (o.queue && o.model) throw new LisaError('--model and --queue: give one (with --queue, the workers load the model)', 2);
      if (!o.queue) o.model ??= defaultModelDir();
      let service: Backend;
      if (o.queue) service = new QueueBackend(o.queue, { maxInflight: o.maxQueue + 1, maxPixels: o.maxPixels });
      else {
        checkCacheDir(o);
        const m = o as ModelCliOptions;
        service = LisaService.load(m.model ?? defaultModelDir(), loadOptions(m), {
          cacheBytes: o.cacheMb * MB,
          maxQueue: o.maxQueue,
          maxPixels: o.maxPixels,
        });
      }
      const apiKey = o.apiKey ?? process.env.LISA_API_KEY;
      const maxImageBytes = o.maxUploadMb * MB;
      const app = await createServer(service, {
        maxImageBytes,
        // A base64 image in JSON is 4/3 of its bytes, plus the other fields.
        maxBodyBytes: Math.ceil((maxImageBytes * 4) / 3) + 64 * 1024 + o.maxQuestionChars * 4 * 200,
        maxQuestionChars: o.maxQuestionChars,
        requestTimeoutMs: o.requestTimeout * 1000,
        ...(apiKey ? { apiKey } : {}),
        ...(o.cors ? { corsOrigins: o.cors } : {}),
        version: packageVersion(),
      });
      let address: string;
      try {
        address = await app.listen({ host: o.host, port: o.port });
      } catch (e) {
        const err = e as NodeJS.ErrnoException;
        if (err.code === 'EADDRINUSE') throw new LisaError(`--port ${o.port}: already in use on ${o.host}`);
        if (err.code === 'EADDRNOTAVAIL' || err.code === 'ENOTFOUND')
          throw new LisaError(`--host ${o.host}: not an address of this machine`);
        if (err.code === 'EACCES') throw new LisaError(`--port ${o.port}: not allowed (ports below 1024 need root)`);
        throw e;
      }
      process.stderr.write(`lisa serve: ${service.modelName} at ${address} (web page at /, API under /v1, docs at /openapi.json)\n`);
      // SIGTERM / Ctrl-C: stop accepting, let in-flight requests finish (new ones get 503), then exit.
      await new Promise<void>((resolve) => {
        const stop = (sig: string): void => {
          process.stderr.write(`lisa serve: ${sig}: finishing ${service.depth} request(s), refusing new ones\n`);
          void app.close().then(resolve);
        };
        process.once('SIGTERM', () => stop('SIGTERM'));
        process.once('SIGINT', () => stop('SIGINT'));
      });
      await service.close();
      process.stderr.write('lisa serve: stopped\n');
    });
}
