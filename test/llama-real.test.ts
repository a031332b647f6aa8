import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { after, describe, it } from 'node:test';
import { Engine } from '../src/graph/session.js';
import { generate } from '../src/inference/generate.js';
import { llmForward } from '../src/inference/llm.js';
import { openCheckpoint } from '../src/io/checkpoint.js';
import { readNpy } from '../src/io/npy.js';
import { readLlamaConfig } from '../src/models/config.js';
import { LlamaCausalLM } from '../src/models/llama-causal-lm.js';
import { FIXTURES, tempDir } from './helpers.js';

/** stories260K: a genuinely trained LLaMA (GQA, tied embeddings) against HF transformers and llama2.c. */
const DIR = join(FIXTURES, 'llama-stories260k');
const golden = JSON.parse(readFileSync(join(DIR, 'golden.json'), 'utf8')) as { prompt_ids: number[]; greedy_ids_200: number[]; prompt2: { ids: number[]; argmax: number[]; last_logits: number[] } };

describe('real weights: llama stories260K', () => {
  const cache = tempDir('lisa-stories-');
  const ckpt = openCheckpoint(DIR);
  const lm = new LlamaCausalLM(readLlamaConfig(DIR), ckpt, new Engine({ cacheDir: cache.path, threads: 1 }), 'stories260k');
  after(async () => { await lm.release(); ckpt.close(); cache[Symbol.dispose](); });

  it('greedy-generates the 200 reference tokens after BOS (KV cache)', async () => {
    const prefill = await llmForward(lm, lm.embedTokens(golden.prompt_ids), golden.prompt_ids.length);
    const gen = await generate(lm, prefill, golden.prompt_ids.length, { maxNewTokens: 200 });
    assert.deepEqual(gen.tokens, golden.greedy_ids_200);
  });

  it('reproduces prompt 2 logits and final hidden states, with and without the cache', async () => {
    const ids = golden.prompt2.ids;
    const V = lm.config.vocabSize;
    const full = await llmForward(lm, lm.embedTokens(ids), ids.length);
    const logits = readNpy(join(DIR, 'logits.npy')).data as Float32Array;
    const hidden = readNpy(join(DIR, 'final_hidden.npy')).data as Float32Array;
    const maxDiff = (a: Float32Array, b: ArrayLike<number>): number => a.reduce((m, v, i) => Math.max(m, Math.abs(v - b[i]!)), 0);
    assert.ok(maxDiff(full.logits, logits) < 1e-4, `logits differ by ${maxDiff(full.logits, logits)}`);
    assert.ok(maxDiff(full.hidden, hidden) < 1e-4, `final hidden differs by ${maxDiff(full.hidden, hidden)}`);
    // Generation asks for the last position's logits only: the golden's last row.
    const last = await llmForward(lm, lm.embedTokens(ids), ids.length, undefined, false, 'last');
    assert.equal(last.logits.length, V);
    assert.ok(maxDiff(last.logits, logits.subarray((ids.length - 1) * V)) < 1e-4);
    const argmax = Array.from({ length: ids.length }, (_, p) => { const r = full.logits.subarray(p * V, (p + 1) * V); return r.indexOf(Math.max(...r)); });
    assert.deepEqual(argmax, golden.prompt2.argmax);
    // 10-token prefill, then one token at a time through the KV cache.
    let step = await llmForward(lm, lm.embedTokens(ids.slice(0, 10)), 10);
    const rows: Float32Array[] = [step.logits];
    for (let t = 10; t < ids.length; t++) { step = await llmForward(lm, lm.embedTokens([ids[t]!]), 1, step.cache); rows.push(step.logits); }
    const cached = new Float32Array(ids.length * V);
    let o = 0;
    for (const r of rows) { cached.set(r, o); o += r.length; }
    assert.ok(maxDiff(cached, logits) < 1e-4, `cached logits differ by ${maxDiff(cached, logits)}`);
    assert.ok(maxDiff(step.logits, golden.prompt2.last_logits) < 1e-4);
  });
});
