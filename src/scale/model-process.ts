/**
 * The model of a `lisa worker`, in a child process of its own: inference keeps this process's CPU and event loop
 * busy for seconds at a time, while the parent's stays free to renew BullMQ's job locks and beat its heartbeat.
 * Messages come over IPC (advanced serialisation: image bytes travel as buffers); the process exits when its
 * parent goes away (the IPC channel closes), so a killed worker leaves no orphan.
 */
import { LisaError } from '../errors.js';
import { decodeImage } from '../image/decode.js';
import { encodeRle } from '../image/mask-encoding.js';
import { modelPredictor } from '../eval/runner.js';
import type { LisaLoadOptions } from '../models/lisa.js';
import { HttpError } from '../serve/http-error.js';
import { LisaService } from '../serve/service.js';
import { toWireTurn, type JobData, type WireEval } from './wire.js';

export interface ModelProcessConfig {
  model: string;
  load: LisaLoadOptions;
  cacheBytes: number;
  maxPixels: number;
  worker: string;
}

export type ToChild = { type: 'job'; id: string; data: JobData; image: Uint8Array } | { type: 'cancel'; requestId: string };
export type FromChild =
  | { type: 'text'; id: string; delta: string }
  | { type: 'done'; id: string; value: unknown }
  | { type: 'error'; id: string; message: string; status?: number; field?: string; user: boolean };

const config = JSON.parse(process.env.LISA_WORKER_CONFIG ?? '{}') as ModelProcessConfig;
const service = LisaService.load(config.model, config.load, {
  cacheBytes: config.cacheBytes,
  maxQueue: 1_000_000,
  maxPixels: config.maxPixels,
});
/** Image bytes hash → the service's image id, so a follow-up skips decoding as well as encoding. */
const encoded = new Map<string, string>();
const running = new Map<string, AbortController>();

const send = (m: FromChild): void => {
  process.send?.(m);
};

async function run(id: string, data: JobData, image: Uint8Array): Promise<unknown> {
  if (data.kind === 'eval') {
    const rgb = await decodeImage(image, 'image', config.maxPixels);
    const preds = await modelPredictor(service.lisa.model, data).predict('', rgb, data.prompts);
    return {
      preds: preds.map((p) =>
        'error' in p ? p : { rle: encodeRle({ width: rgb.width, height: rgb.height, data: p.mask }), noSeg: p.noSeg },
      ),
    } satisfies WireEval;
  }
  if (data.kind === 'encode') {
    const r = await service.addImage(image);
    encoded.set(data.imageHash, r.imageId);
    return { width: r.width, height: r.height, encodeMs: r.encodeMs, worker: config.worker };
  }
  const known = encoded.get(data.imageHash);
  const held = known !== undefined && service.store.has(`image:${known}`);
  const ac = new AbortController();
  running.set(data.requestId, ac);
  try {
    const t = await service.turn(
      { ...data.params, ...(held ? { imageId: known } : { image }), stream: false, history: data.history },
      ac.signal,
      (delta) => send({ type: 'text', id, delta }),
    );
    encoded.set(data.imageHash, t.imageId);
    return toWireTurn(t, config.worker);
  } finally {
    running.delete(data.requestId);
  }
}

process.on('message', (m: ToChild) => {
  if (m.type === 'cancel') {
    running.get(m.requestId)?.abort(new Error('cancelled by the client'));
    return;
  }
  run(m.id, m.data, m.image).then(
    (value) => send({ type: 'done', id: m.id, value }),
    (e: unknown) => {
      const user = e instanceof HttpError || e instanceof LisaError;
      send({
        type: 'error',
        id: m.id,
        message: (e as Error).message,
        user,
        ...(e instanceof HttpError
          ? { status: e.status, ...(e.field ? { field: e.field } : {}) }
          : e instanceof LisaError
            ? { status: 400 }
            : {}),
      });
    },
  );
});
process.on('disconnect', () => process.exit(0));
send({ type: 'done', id: 'ready', value: null });
