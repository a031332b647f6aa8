import { MASK_FORMATS, OPTION_FIELDS, SEGMENT_FIELDS, type FieldSpec } from './fields.js';

function schemaOf(f: FieldSpec): Record<string, unknown> {
  const d = { description: f.description };
  const range = { ...(f.min !== undefined ? { minimum: f.min } : {}), ...(f.max !== undefined ? { maximum: f.max } : {}) };
  switch (f.type) {
    case 'points':
      return {
        ...d,
        type: 'array',
        maxItems: 64,
        items: { oneOf: [{ type: 'array', items: { type: 'number' }, minItems: 2, maxItems: 3 }, { $ref: '#/components/schemas/Point' }] },
      };
    case 'box':
      return {
        ...d,
        oneOf: [{ type: 'array', items: { type: 'number' }, minItems: 4, maxItems: 4 }, { $ref: '#/components/schemas/Box' }],
      };
    case 'mask_format':
      return { ...d, type: 'string', enum: [...MASK_FORMATS], default: 'rle' };
    default:
      return { ...d, type: f.type, ...range };
  }
}

const props = (fields: Record<string, FieldSpec>): Record<string, unknown> =>
  Object.fromEntries(Object.entries(fields).map(([k, f]) => [k, schemaOf(f)]));

const error = {
  description: 'a mistake in the request, named',
  content: { 'application/json': { schema: { $ref: '#/components/schemas/Error' } } },
};
const json = (ref: string): Record<string, unknown> => ({ 'application/json': { schema: { $ref: `#/components/schemas/${ref}` } } });
const errors = { '400': error, '401': error, '404': error, '413': error, '415': error, '429': error, '504': error };

/** The API as an OpenAPI 3.1 document (served at /openapi.json); request fields come from the table the parser uses. */
export function openApiDocument(version: string): Record<string, unknown> {
  return {
    openapi: '3.1.0',
    info: { title: 'lisa-ts', version, description: 'LISA reasoning segmentation: answers in text and one mask per [SEG] token.' },
    components: {
      securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'only when the server runs with --api-key' } },
      schemas: {
        Point: {
          type: 'object',
          properties: { x: { type: 'number' }, y: { type: 'number' }, label: { enum: [0, 1] } },
          required: ['x', 'y'],
        },
        Box: {
          type: 'object',
          properties: { x1: { type: 'number' }, y1: { type: 'number' }, x2: { type: 'number' }, y2: { type: 'number' } },
        },
        Error: {
          type: 'object',
          properties: {
            error: {
              type: 'object',
              properties: { message: { type: 'string' }, type: { type: 'string' }, param: { type: ['string', 'null'] } },
            },
          },
        },
        Mask: {
          type: 'object',
          properties: {
            index: { type: 'integer' },
            seg_index: { type: 'integer', description: 'which [SEG] of the answer (0-based); -1 for points/box only' },
            rle: {
              type: 'object',
              description: 'COCO RLE (pycocotools compressed counts)',
              properties: { size: { type: 'array' }, counts: { type: 'string' } },
            },
            bbox: { type: 'array', items: { type: 'number' }, description: 'COCO [x, y, w, h]' },
            area: { type: 'integer' },
            score: { type: 'number', description: "the mask decoder's IoU prediction" },
            png: { type: 'string', description: 'mask_format png: a 0/255 greyscale PNG, base64' },
            polygons: { type: 'array', description: 'mask_format polygon: [[x0, y0, x1, y1, …], …]' },
          },
        },
        SegmentRequest: { type: 'object', properties: props(SEGMENT_FIELDS) },
        SegmentResult: {
          type: 'object',
          properties: {
            image_id: { type: 'string' },
            width: { type: 'integer' },
            height: { type: 'integer' },
            question: { type: 'string' },
            text: { type: 'string' },
            no_target: { type: 'boolean' },
            tokens: { type: 'array', items: { type: 'integer' } },
            stopped: { enum: ['eos', 'max_new_tokens', 'teacher_forced', 'cancelled'] },
            masks: { type: 'array', items: { $ref: '#/components/schemas/Mask' } },
            timings: { type: 'object' },
            model: { type: 'string' },
          },
        },
        ImageResult: {
          type: 'object',
          properties: {
            image_id: { type: 'string' },
            width: { type: 'integer' },
            height: { type: 'integer' },
            encode_ms: { type: 'number' },
          },
        },
        ChatRequest: {
          type: 'object',
          required: ['messages'],
          description:
            'OpenAI chat completions; one image per conversation (image_url data: URL, or image_id). Extension fields as /v1/segment.',
          properties: {
            messages: { type: 'array', items: { type: 'object' } },
            max_tokens: { type: 'integer' },
            max_completion_tokens: { type: 'integer' },
            ...props(OPTION_FIELDS),
          },
        },
      },
    },
    security: [{}, { bearer: [] }],
    paths: {
      '/v1/images': {
        post: {
          summary: 'upload and encode an image once (CLIP + SAM); later requests name it by image_id',
          requestBody: {
            content: {
              'multipart/form-data': { schema: { type: 'object', properties: { image: { type: 'string', format: 'binary' } } } },
              'image/*': {},
              'application/octet-stream': {},
            },
          },
          responses: { '200': { description: 'encoded', content: json('ImageResult') }, ...errors },
        },
      },
      '/v1/segment': {
        post: {
          summary: 'a question about an image → the answer and one mask per [SEG] (stream: true for server-sent events)',
          requestBody: {
            content: { ...json('SegmentRequest'), 'multipart/form-data': { schema: { $ref: '#/components/schemas/SegmentRequest' } } },
          },
          responses: {
            '200': {
              description: 'the result, or with stream an event stream: text events {delta}, then a result event',
              content: { ...json('SegmentResult'), 'text/event-stream': {} },
            },
            ...errors,
          },
        },
      },
      '/v1/chat/completions': {
        post: {
          summary: "OpenAI-compatible chat; masks in choices[0].message.masks (or in the last stream chunk's delta.masks)",
          requestBody: { content: json('ChatRequest') },
          responses: {
            '200': {
              description: 'chat.completion, or chat.completion.chunk events',
              content: { 'application/json': {}, 'text/event-stream': {} },
            },
            ...errors,
          },
        },
      },
      '/v1/models': { get: { summary: 'the model served (OpenAI shape)', responses: { '200': { description: 'list' } } } },
      '/healthz': {
        get: {
          summary: 'liveness: 200 while serving, 503 while shutting down',
          security: [{}],
          responses: { '200': { description: 'ok' }, '503': { description: 'closing' } },
        },
      },
      '/metrics': { get: { summary: 'Prometheus metrics', responses: { '200': { description: 'text exposition format' } } } },
    },
  };
}
