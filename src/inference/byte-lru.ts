/**
 * A least-recently-used map bounded by bytes rather than entries: encoded images and KV caches differ in size by
 * orders of magnitude (a tiny model's image is kilobytes, a 7B conversation's fp32 KV cache hundreds of MB), so a
 * count bound is either wasteful or unsafe.
 */
export class ByteLru<V> {
  private readonly entries = new Map<string, { value: V; bytes: number }>();
  private total = 0;

  constructor(
    readonly budget: number,
    private readonly sizeOf: (value: V) => number,
    private readonly onEvict?: (key: string, value: V) => void,
  ) {}

  /** Bytes held, as last measured. */
  get bytes(): number {
    return this.total;
  }

  get size(): number {
    return this.entries.size;
  }

  /** The value, now the most recently used. */
  get(key: string): V | undefined {
    const e = this.entries.get(key);
    if (!e) return undefined;
    this.entries.delete(key);
    this.entries.set(key, e);
    return e.value;
  }

  has(key: string): boolean {
    return this.entries.has(key);
  }

  /** Stores (or replaces) a value as the most recently used, evicting the oldest others to fit the budget. A budget of 0 keeps nothing. */
  set(key: string, value: V): void {
    this.remove(key);
    if (this.budget <= 0) return;
    const bytes = this.sizeOf(value);
    this.entries.set(key, { value, bytes });
    this.total += bytes;
    this.evict(key);
  }

  /** Re-measures a value that grew in place (an image whose prompt prefix got its KV cache) and evicts to fit. */
  touch(key: string): void {
    const e = this.entries.get(key);
    if (e) this.set(key, e.value);
  }

  /** Removes and returns a value (not counted as an eviction). */
  take(key: string): V | undefined {
    const e = this.entries.get(key);
    if (e) this.remove(key);
    return e?.value;
  }

  private remove(key: string): void {
    const e = this.entries.get(key);
    if (!e) return;
    this.entries.delete(key);
    this.total -= e.bytes;
  }

  /** The entry just used stays even when it alone exceeds the budget: it is needed now. */
  private evict(keep: string): void {
    for (const [key, e] of this.entries) {
      if (this.total <= this.budget) break;
      if (key === keep) continue;
      this.remove(key);
      this.onEvict?.(key, e.value);
    }
  }
}
