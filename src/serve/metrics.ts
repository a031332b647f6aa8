import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { TurnResult } from './service.js';

/** The Prometheus metrics of one server (its own registry, so several servers in one process stay apart). */
export class ServerMetrics {
  readonly registry = new Registry();
  private readonly requests: Counter<'route' | 'status'>;
  private readonly latency: Histogram<'route'>;
  private readonly tokens: Counter;
  private readonly generateSeconds: Counter;
  private readonly tokensPerSecond: Histogram;
  private readonly cancelled: Counter;

  constructor(sources: { queueDepth: () => number; cacheBytes: () => number; cacheEntries: () => number }) {
    const registers = [this.registry];
    collectDefaultMetrics({ register: this.registry, prefix: 'lisa_process_' });
    this.requests = new Counter({
      name: 'lisa_http_requests_total',
      help: 'HTTP requests by route and status',
      labelNames: ['route', 'status'],
      registers,
    });
    this.latency = new Histogram({
      name: 'lisa_http_request_duration_seconds',
      help: 'HTTP request latency (queueing included) by route',
      labelNames: ['route'],
      buckets: [0.005, 0.02, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300],
      registers,
    });
    this.tokens = new Counter({ name: 'lisa_generated_tokens_total', help: 'tokens generated', registers });
    this.generateSeconds = new Counter({ name: 'lisa_generate_seconds_total', help: 'seconds spent generating tokens', registers });
    this.tokensPerSecond = new Histogram({
      name: 'lisa_generation_tokens_per_second',
      help: 'decode speed of each generating request',
      buckets: [0.5, 1, 2, 5, 10, 20, 50, 100, 200, 500, 1000],
      registers,
    });
    this.cancelled = new Counter({
      name: 'lisa_cancelled_requests_total',
      help: 'requests stopped because the client disconnected',
      registers,
    });
    new Gauge({
      name: 'lisa_queue_depth',
      help: 'inference requests running or waiting',
      registers,
      collect() {
        this.set(sources.queueDepth());
      },
    });
    new Gauge({
      name: 'lisa_cache_bytes',
      help: 'bytes of encoded images, KV caches and chat sessions held',
      registers,
      collect() {
        this.set(sources.cacheBytes());
      },
    });
    new Gauge({
      name: 'lisa_cache_entries',
      help: 'images and chat sessions held',
      registers,
      collect() {
        this.set(sources.cacheEntries());
      },
    });
  }

  request(route: string, status: number, seconds: number): void {
    this.requests.inc({ route, status: String(status) });
    this.latency.observe({ route }, seconds);
  }

  clientGone(): void {
    this.cancelled.inc();
  }

  generation(t: TurnResult): void {
    const { newTokens, generateMs } = t.result.timings;
    if (newTokens === 0) return;
    this.tokens.inc(newTokens);
    this.generateSeconds.inc(generateMs / 1000);
    if (generateMs > 0) this.tokensPerSecond.observe(newTokens / (generateMs / 1000));
  }
}
