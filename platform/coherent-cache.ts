/**
 * Cache coherence for the Moleculer cachers of this platform (Memory in embedded mode, Redis in a cluster).
 *
 * Moleculer's cacher middleware has a read-populate race: a reader misses, reads the database, and stores its
 * answer AFTER a writer has committed and cleaned the cache; the pre-write answer then lives for the whole
 * TTL (a revoked grant served for 10 minutes). Here every cache scope (a service name: "courses", "access",
 * "auth") has an epoch. A reader notes the epoch after its miss and BEFORE it reads the database; it stores
 * its answer only if the epoch is still the same (atomically, in Redis). A writer commits, bumps the epoch,
 * then cleans. So a fill computed from pre-write data is dropped, whatever the interleaving:
 *   - reader noted epoch e before the bump → its fill is refused (it may or may not have seen the write);
 *   - reader noted e+1 → the bump came after the commit, so its database read sees the write.
 *
 * The same read-through path serves Moleculer's `cache:` actions (through `middleware()`) and services that
 * cache by hand (`readThrough`), and counts hits and misses per scope.
 */
import { Cachers, Errors, type Context, type MetricRegistry, type Middleware, type ServiceBroker } from "moleculer";

/** What this platform needs of its cacher beyond Moleculer's get/set/clean. */
export interface CoherentCacher {
  /** true: one store every node reads (Redis); false: this process's memory only. */
  readonly shared: boolean;
  /** The scope's current epoch; null when it cannot be known (then nothing is stored). */
  epochOf(scope: string): Promise<string | null>;
  /** Stores `data` only if the scope's epoch is still `epoch`. Never throws. */
  setIfEpoch(key: string, data: unknown, ttlS: number | undefined, scope: string, epoch: string): Promise<boolean>;
  /** Bumps the scope's epoch, then drops the keys matching `patterns`. Never throws. */
  invalidate(scope: string, patterns: readonly string[]): Promise<void>;
  readonly stats: CacheStats;
}

type BaseCacher = InstanceType<typeof Cachers.Base>;
export type PlatformCacher = BaseCacher & CoherentCacher;

export interface ScopeCounts {
  hits: number;
  misses: number;
  /** Fills refused because a write invalidated the scope while the answer was being computed. */
  dropped: number;
}

const METRICS = {
  hits: "autolabs.cache.hits.total",
  misses: "autolabs.cache.misses.total",
  dropped: "autolabs.cache.dropped.total",
} as const;

/**
 * Hit and miss counters per scope, in this process; also exported as the seed's metrics
 * (autolabs_cache_hits_total / autolabs_cache_misses_total{scope} at GET /metrics).
 */
export class CacheStats {
  private readonly scopes = new Map<string, ScopeCounts>();
  private metrics: MetricRegistry | null = null;

  /** Called by the cacher's init, once the broker's registry exists. */
  bind(metrics: MetricRegistry | null | undefined): void {
    if (!metrics) return;
    this.metrics = metrics;
    metrics.register({
      name: METRICS.hits,
      type: "counter",
      labelNames: ["scope"],
      description: "Answers served from the cache",
    });
    metrics.register({
      name: METRICS.misses,
      type: "counter",
      labelNames: ["scope"],
      description: "Answers computed on a cache miss",
    });
    metrics.register({
      name: METRICS.dropped,
      type: "counter",
      labelNames: ["scope"],
      description: "Computed answers not stored because a write invalidated them meanwhile",
    });
  }

  private of(scope: string): ScopeCounts {
    let c = this.scopes.get(scope);
    if (!c) this.scopes.set(scope, (c = { hits: 0, misses: 0, dropped: 0 }));
    return c;
  }

  hit(scope: string): void {
    this.of(scope).hits++;
    this.metrics?.increment(METRICS.hits, { scope });
  }
  miss(scope: string): void {
    this.of(scope).misses++;
    this.metrics?.increment(METRICS.misses, { scope });
  }
  drop(scope: string): void {
    this.of(scope).dropped++;
    this.metrics?.increment(METRICS.dropped, { scope });
  }

  /** `scopes` names only the scopes seen so far. */
  snapshot(): { total: ScopeCounts; scopes: Partial<Record<string, ScopeCounts>> } {
    const total: ScopeCounts = { hits: 0, misses: 0, dropped: 0 };
    const scopes: Record<string, ScopeCounts> = {};
    for (const [name, c] of this.scopes) {
      scopes[name] = { ...c };
      total.hits += c.hits;
      total.misses += c.misses;
      total.dropped += c.dropped;
    }
    return { total, scopes };
  }

  reset(): void {
    this.scopes.clear();
  }
}

export function isCoherent(cacher: unknown): cacher is PlatformCacher {
  const c = cacher as Partial<CoherentCacher> | null;
  return (
    !!c && typeof c.epochOf === "function" && typeof c.setIfEpoch === "function" && typeof c.invalidate === "function"
  );
}

/** The broker's cacher; null without one. Any other cacher is a configuration bug: it would serve stale grants. */
export function coherentCacherOf(broker: ServiceBroker): PlatformCacher | null {
  const cacher = broker.cacher;
  if (!cacher) return null;
  if (!isCoherent(cacher))
    throw new Error("The broker's cacher must be a coherent cacher (platform/coherent-cache.ts)");
  return cacher;
}

/**
 * get → on a miss: note the epoch, compute, store if the epoch held. `onHit` marks a Moleculer context
 * (ctx.cachedResult) the way the stock middleware does.
 */
export async function readThrough<T>(
  cacher: PlatformCacher,
  scope: string,
  key: string,
  ttlS: number | undefined,
  compute: () => Promise<T>,
  onHit?: () => void,
): Promise<T> {
  const missing: unknown = cacher.opts.missingResponse;
  const hit: unknown = await cacher.get(key);
  if (hit !== missing && hit !== undefined) {
    cacher.stats.hit(scope);
    onHit?.();
    return hit as T;
  }
  cacher.stats.miss(scope);
  // Before the database is read: a write committed after this point bumps the epoch past it.
  const epoch = await cacher.epochOf(scope);
  const result = await compute();
  // Awaited (the stock middleware does not): the answer is in the cache once the response leaves, which
  // costs one store round trip per miss and makes "the next read is a hit" hold.
  if (epoch !== null && !(await cacher.setIfEpoch(key, result, ttlS, scope, epoch))) cacher.stats.drop(scope);
  return result;
}

type Handler = (ctx: Context) => Promise<unknown>;
interface CachedAction {
  name: string;
  cache?: boolean | { enabled?: boolean | ((ctx: Context) => boolean); ttl?: number; keys?: string[]; lock?: unknown };
  service?: { fullName?: string };
}

/** The scope of an action's cached answers: its service (what that service's writes invalidate). */
function scopeOf(action: CachedAction): string {
  return action.service?.fullName ?? action.name.slice(0, action.name.lastIndexOf("."));
}

/** Replaces Moleculer's cacher middleware: same `cache:` options (keys, ttl, enabled, $cache), coherent fills. */
export function coherentMiddleware(cacher: PlatformCacher): Middleware {
  return {
    name: "Cacher",
    localAction(handler: Handler, action: CachedAction) {
      const cache = action.cache;
      if (!cache) return handler;
      const opts = typeof cache === "object" ? cache : { enabled: true };
      if (opts.enabled === false) return handler;
      // Locks would need the same epoch care; no action needs them, so asking for one is a mistake caught at boot.
      if (opts.lock)
        throw new Errors.ServiceSchemaError(
          `${action.name}: cache locks are not supported by this platform's cacher`,
          {},
        );
      const scope = scopeOf(action);
      const enabled = typeof opts.enabled === "function" ? opts.enabled : null;
      return function coherentCache(ctx: Context) {
        if (enabled && !enabled.call(ctx.service, ctx)) return handler(ctx);
        if ((ctx.meta as { $cache?: unknown }).$cache === false) return handler(ctx);
        // Redis known to be down: answer from the database without waiting on it.
        if (cacher.connected === false) return handler(ctx);
        const key = cacher.getCacheKey(action as unknown as string, opts, ctx);
        return readThrough(
          cacher,
          scope,
          key,
          opts.ttl,
          () => handler(ctx),
          () => (ctx.cachedResult = true),
        );
      };
    },
  } as Middleware;
}

/** The embedded mode's cacher: this process's memory, with epochs kept beside it. */
export class CoherentMemoryCacher extends Cachers.Memory implements CoherentCacher {
  readonly shared = false;
  readonly stats = new CacheStats();
  private readonly epochs = new Map<string, number>();

  override init(broker: ServiceBroker): void {
    super.init(broker);
    this.stats.bind(broker.metrics);
  }

  override middleware(): Middleware {
    return coherentMiddleware(this);
  }

  epochOf(scope: string): Promise<string> {
    return Promise.resolve(String(this.epochs.get(scope) ?? 0));
  }

  setIfEpoch(key: string, data: unknown, ttlS: number | undefined, scope: string, epoch: string): Promise<boolean> {
    // Check and set with no await between them: nothing can bump the epoch in between.
    if (String(this.epochs.get(scope) ?? 0) !== epoch) return Promise.resolve(false);
    void this.set(key, data, ttlS); // the Memory cacher stores synchronously; its promise cannot reject
    return Promise.resolve(true);
  }

  async invalidate(scope: string, patterns: readonly string[]): Promise<void> {
    this.epochs.set(scope, (this.epochs.get(scope) ?? 0) + 1);
    await this.clean([...patterns]);
  }
}
