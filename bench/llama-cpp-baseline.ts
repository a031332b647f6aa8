/**
 * The llama.cpp baseline for `npm run bench`, run in its own process so its peak RSS is its own:
 *   node dist/bench/llama-cpp-baseline.js --gguf FILE [--threads N] [--prompt 320] [--steps 16]
 * prints one JSON line {load_s, prefill_s, decode_s_per_token, peak_rss_bytes, version}.
 *
 * node-llama-cpp (pinned 3.21.1) lives in bench/llama-cpp/ with its own lock file, installed by the bench on
 * first use: it is ~730 MB with its CUDA/Vulkan builds, which `npm ci` for users and CI should not carry.
 * Its CPU prebuilt binary is used (build: 'never'); nothing is downloaded or compiled at run time.
 */
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';

/** The part of node-llama-cpp's API used here. */
interface LlamaSequence {
  evaluateWithoutGeneratingNewTokens(tokens: number[]): Promise<void>;
  evaluate(tokens: number[], options?: { temperature?: number }): AsyncGenerator<number, void, void | number | number[]>;
}
interface LlamaContext { getSequence(): LlamaSequence; dispose(): Promise<void> }
interface LlamaModel { createContext(o: { contextSize: number; batchSize: number; threads: number }): Promise<LlamaContext>; dispose(): Promise<void> }
interface Llama { loadModel(o: { modelPath: string; gpuLayers: number; useMmap?: boolean }): Promise<LlamaModel>; dispose(): Promise<void> }
interface NodeLlamaCpp { getLlama(o: { gpu: false; build: 'never'; logLevel?: string; maxThreads?: number }): Promise<Llama> }

export const LLAMA_CPP_DIR = join(import.meta.dirname, '..', '..', 'bench', 'llama-cpp');

const args = process.argv.slice(2);
const get = (f: string, d?: string): string | undefined => { const i = args.indexOf(f); return i >= 0 ? args[i + 1] : d; };

async function main(): Promise<void> {
  const gguf = get('--gguf');
  if (!gguf) throw new Error('--gguf FILE is required');
  const threads = Number(get('--threads', '2')), L = Number(get('--prompt', '320')), steps = Number(get('--steps', '16'));
  const entry = createRequire(join(LLAMA_CPP_DIR, 'package.json')).resolve('node-llama-cpp');
  const lib = (await import(pathToFileURL(entry).href)) as NodeLlamaCpp;
  const version = (createRequire(entry)('../package.json') as { version: string }).version;
  const now = (): number => performance.now() / 1000;
  let t = now();
  const llama = await lib.getLlama({ gpu: false, build: 'never', logLevel: 'error', maxThreads: threads });
  const model = await llama.loadModel({ modelPath: gguf, gpuLayers: 0 });
  const ctx = await model.createContext({ contextSize: 1024, batchSize: 512, threads });
  const load = now() - t;
  const prompt = Array.from({ length: L }, (_, i) => 100 + i * 7);
  // Warm-up on another sequence's worth of tokens is not possible with one sequence; a short first prompt
  // pages the weights in, then the timed prompt starts from a fresh context.
  const warm = ctx.getSequence();
  await warm.evaluateWithoutGeneratingNewTokens(prompt.slice(0, 8));
  await ctx.dispose();
  const ctx2 = await model.createContext({ contextSize: 1024, batchSize: 512, threads });
  const seq = ctx2.getSequence();
  t = now();
  await seq.evaluateWithoutGeneratingNewTokens(prompt);
  const prefill = now() - t;
  // Greedy decode: the first yielded token costs one forward over the last prompt token's logits (already
  // computed), so time from the first token to the (steps+1)-th.
  let n = 0, t0 = 0;
  for await (const tok of seq.evaluate([prompt[L - 1]! + 1], { temperature: 0 })) {
    void tok;
    if (n === 0) t0 = now();
    if (++n > steps) break;
  }
  const decode = (now() - t0) / steps;
  await ctx2.dispose();
  await model.dispose();
  await llama.dispose();
  process.stdout.write(JSON.stringify({ load_s: load, prefill_s: prefill, decode_s_per_token: decode, peak_rss_bytes: process.resourceUsage().maxRSS * 1024, version }) + '\n');
}

// Imported by run.ts for LLAMA_CPP_DIR; runs only as a script.
if (import.meta.url === pathToFileURL(process.argv[1] ?? '').href) main().catch((e: unknown) => { process.stderr.write(`llama-cpp-baseline: ${e instanceof Error ? e.message : String(e)}\n`); process.exit(1); });
