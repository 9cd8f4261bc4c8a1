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
import { Cachers, Errors, type Context, type Middleware, type ServiceBroker } from "moleculer";
import { METRIC, counter, type Counter } from "./metrics";

/** What this platform needs of its cacher beyond Moleculer's get/set/clean. */
export interface CoherentCacher {
  /** true: one store every node reads (Redis); false: this process's memory only. */
  readonly shared: boolean;
  /**
   * The cached entry (the cacher's missingResponse when absent) and the scope's epoch, read together: on a
   * miss the epoch is then known before the database is read, without a second round trip to the store.
   * The epoch is null when it cannot be known (then nothing is stored).
   */
  lookup(key: string, scope: string): Promise<{ data: unknown; epoch: string | null }>;
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

/**
 * Hit and miss counters per scope, in this process; also exported as the seed's metrics
 * (cache_hits_total / cache_misses_total{scope} on METRICS_PORT, platform/metrics.ts).
 */
export class CacheStats {
  private readonly scopes = new Map<string, ScopeCounts>();
  private broker: ServiceBroker | null = null;
  private counters: Record<keyof ScopeCounts, Counter> | null = null;

  /** Called by the cacher's init; the counters are resolved at the first use (the platform is attached by then). */
  bind(broker: ServiceBroker): void {
    this.broker = broker;
  }

  private count(kind: keyof ScopeCounts, scope: string): void {
    const broker = this.broker;
    if (!broker) return;
    this.counters ??= {
      hits: counter(broker, METRIC.cacheHits),
      misses: counter(broker, METRIC.cacheMisses),
      dropped: counter(broker, METRIC.cacheDropped),
    };
    this.counters[kind].increment({ scope });
  }

  private of(scope: string): ScopeCounts {
    let c = this.scopes.get(scope);
    if (!c) this.scopes.set(scope, (c = { hits: 0, misses: 0, dropped: 0 }));
    return c;
  }

  hit(scope: string): void {
    this.of(scope).hits++;
    this.count("hits", scope);
  }
  miss(scope: string): void {
    this.of(scope).misses++;
    this.count("misses", scope);
  }
  drop(scope: string): void {
    this.of(scope).dropped++;
    this.count("dropped", scope);
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
    !!c && typeof c.lookup === "function" && typeof c.setIfEpoch === "function" && typeof c.invalidate === "function"
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
  // The epoch comes with the entry, before the database is read: a write committed after this point bumps it.
  const { data: hit, epoch } = await cacher.lookup(key, scope);
  if (hit !== missing && hit !== undefined) {
    cacher.stats.hit(scope);
    onHit?.();
    return hit as T;
  }
  cacher.stats.miss(scope);
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
    this.stats.bind(broker);
  }

  override middleware(): Middleware {
    return coherentMiddleware(this);
  }

  async lookup(key: string, scope: string): Promise<{ data: unknown; epoch: string }> {
    // One synchronous step: the Memory cacher's get reads the entry when called, before anything can bump.
    const epoch = String(this.epochs.get(scope) ?? 0);
    return { data: await this.get(key), epoch };
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
