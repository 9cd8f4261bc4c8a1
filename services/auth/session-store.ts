/**
 * Where login states and sessions live: Redis (REDIS_URL) or, in embedded mode, this process's memory.
 *
 * Redis answers fast or not at all: no offline queue, one retry, a command timeout. Every failure is
 * thrown as SERVICE_UNAVAILABLE (503), so a cookie request while Redis is down is refused, never let
 * through as anonymous and never a 500. ioredis keeps reconnecting in the background.
 *
 * Keys are prefixed `<NAMESPACE>:auth:`; values are opaque strings (the caller's JSON); every key has a TTL.
 */
import Redis from "ioredis";
import { serviceUnavailable } from "../../platform/errors";

export interface AuthStore {
  readonly kind: "redis" | "memory";
  /** Stores `value` under `key` for `ttlS` seconds (replacing any earlier value). */
  put(key: string, value: string, ttlS: number): Promise<void>;
  get(key: string): Promise<string | null>;
  /** Reads and deletes in one atomic step: a one-time value can be taken once. */
  take(key: string): Promise<string | null>;
  del(key: string): Promise<void>;
  /** Connects (Redis); never throws: a store that is down answers 503 per call until it is back. */
  start(): Promise<void>;
  stop(): Promise<void>;
}

type Log = { warn(msg: string): void; info(msg: string): void };

export interface RedisStoreOptions {
  url: string;
  prefix: string;
  log: Log;
  /** Per command. Default 1000. */
  timeoutMs?: number;
}

export function createRedisStore(opts: RedisStoreOptions): AuthStore {
  const redis = new Redis(opts.url, {
    lazyConnect: true,
    enableOfflineQueue: false,
    maxRetriesPerRequest: 1,
    connectTimeout: opts.timeoutMs ?? 1000,
    commandTimeout: opts.timeoutMs ?? 1000,
    keyPrefix: opts.prefix,
    // Keep trying, at most every 2 s: sessions come back as soon as Redis does.
    retryStrategy: (times) => Math.min(times * 200, 2000),
  });
  let down = false;
  redis.on("error", (err: Error) => {
    if (!down)
      opts.log.warn(`session store (Redis) unavailable: ${err.message}; cookie sessions answer 503 until it is back`);
    down = true;
  });
  redis.on("ready", () => {
    if (down) opts.log.info("session store (Redis) is back");
    down = false;
  });

  const guard = async <T>(op: () => Promise<T>): Promise<T> => {
    try {
      return await op();
    } catch {
      throw serviceUnavailable("Session store unavailable, try again shortly");
    }
  };

  return {
    kind: "redis",
    put: (key, value, ttlS) =>
      guard(async () => {
        await redis.set(key, value, "EX", Math.max(1, Math.ceil(ttlS)));
      }),
    get: (key) => guard(() => redis.get(key)),
    take: (key) =>
      guard(async () => {
        // MULTI: GET and DEL run as one (works on every Redis version, unlike GETDEL before 6.2).
        const res = await redis.multi().get(key).del(key).exec();
        if (!res) throw new Error("transaction aborted");
        const [getErr, value] = res[0] ?? [];
        if (getErr) throw getErr;
        return (value as string | null) ?? null;
      }),
    del: (key) =>
      guard(async () => {
        await redis.del(key);
      }),
    async start() {
      await redis.connect().catch(() => undefined);
    },
    stop() {
      redis.disconnect();
      return Promise.resolve();
    },
  };
}

/**
 * Embedded mode (no REDIS_URL): a Map with expiry. Bounded, so a flood of /auth/login calls cannot
 * exhaust memory: past maxEntries the oldest entries go first. One process only: in a cluster with
 * several auth nodes, set REDIS_URL.
 */
export function createMemoryStore(opts: { maxEntries?: number; sweepMs?: number } = {}): AuthStore {
  const maxEntries = opts.maxEntries ?? 100_000;
  const entries = new Map<string, { value: string; until: number }>();
  let sweeper: NodeJS.Timeout | undefined;

  const live = (key: string) => {
    const e = entries.get(key);
    if (!e) return undefined;
    if (e.until <= Date.now()) {
      entries.delete(key);
      return undefined;
    }
    return e;
  };

  return {
    kind: "memory",
    // The same promise-returning interface as Redis; nothing here throws.
    put(key, value, ttlS) {
      entries.delete(key);
      entries.set(key, { value, until: Date.now() + ttlS * 1000 });
      // Map iteration is insertion order: the first keys are the oldest.
      for (const k of entries.keys()) {
        if (entries.size <= maxEntries) break;
        entries.delete(k);
      }
      return Promise.resolve();
    },
    get(key) {
      return Promise.resolve(live(key)?.value ?? null);
    },
    take(key) {
      const e = live(key);
      entries.delete(key);
      return Promise.resolve(e?.value ?? null);
    },
    del(key) {
      entries.delete(key);
      return Promise.resolve();
    },
    start() {
      sweeper = setInterval(() => {
        const now = Date.now();
        for (const [k, e] of entries) if (e.until <= now) entries.delete(k);
      }, opts.sweepMs ?? 60_000);
      sweeper.unref();
      return Promise.resolve();
    },
    stop() {
      if (sweeper) clearInterval(sweeper);
      entries.clear();
      return Promise.resolve();
    },
  };
}
