import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ByteLru } from '../src/inference/byte-lru.js';
import { InferenceQueue } from '../src/serve/queue.js';
import { HttpError } from '../src/serve/http-error.js';

describe('ByteLru', () => {
  it('evicts the least recently used entries to fit its byte budget, keeping the one just stored', () => {
    const evicted: string[] = [];
    const lru = new ByteLru<{ n: number }>(
      10,
      (v) => v.n,
      (k) => evicted.push(k),
    );
    lru.set('a', { n: 4 });
    lru.set('b', { n: 4 });
    assert.equal(lru.get('a')?.n, 4); // a is now the most recent
    lru.set('c', { n: 4 }); // 12 > 10: b goes
    assert.deepEqual(evicted, ['b']);
    assert.deepEqual([lru.has('a'), lru.has('b'), lru.has('c'), lru.bytes], [true, false, true, 8]);
    lru.set('big', { n: 50 }); // alone over budget: everything else goes, it stays
    assert.deepEqual([lru.size, lru.bytes, lru.has('big')], [1, 50, true]);
  });

  it('re-measures an entry that grew (touch) and takes without counting an eviction', () => {
    const evicted: string[] = [];
    const lru = new ByteLru<{ n: number }>(
      10,
      (v) => v.n,
      (k) => evicted.push(k),
    );
    const a = { n: 2 };
    lru.set('a', a);
    lru.set('b', { n: 2 });
    a.n = 9;
    lru.touch('a');
    assert.deepEqual([lru.bytes, evicted], [9, ['b']]);
    assert.equal(lru.take('a'), a);
    assert.deepEqual([lru.size, lru.bytes, evicted], [0, 0, ['b']]);
  });

  it('a budget of 0 keeps nothing', () => {
    const lru = new ByteLru<number>(0, () => 1);
    lru.set('a', 1);
    assert.deepEqual([lru.size, lru.get('a')], [0, undefined]);
  });
});

describe('InferenceQueue', () => {
  it('runs one job at a time in arrival order, refuses past its bound with 429, and drops aborted waiters', async () => {
    const q = new InferenceQueue(2);
    const order: string[] = [];
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const job = (name: string, wait?: Promise<void>) => async (): Promise<string> => {
      order.push(`start ${name}`);
      await wait;
      order.push(`end ${name}`);
      return name;
    };
    const a = q.run(job('a', gate));
    const ac = new AbortController();
    const b = q.run(job('b'), ac.signal);
    const c = q.run(job('c'));
    assert.equal(q.depth, 3);
    await assert.rejects(
      q.run(job('d')),
      (e: unknown) => e instanceof HttpError && e.status === 429 && Number(e.headers['retry-after']) >= 1,
    );
    ac.abort(new Error('gone'));
    await assert.rejects(b, /gone/);
    assert.equal(q.depth, 2);
    release();
    assert.deepEqual(await Promise.all([a, c]), ['a', 'c']);
    assert.deepEqual(order, ['start a', 'end a', 'start c', 'end c']);
    assert.equal(q.depth, 0);
  });
});
