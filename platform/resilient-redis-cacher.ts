/**
 * Moleculer's Redis cacher, made to degrade instead of fail: when Redis is slow or down, reads miss (the
 * action runs and answers from the database), writes are dropped, and requests never wait on Redis longer
 * than a short command timeout. An invalidation that could not reach Redis marks the cache dirty; the first
 * command that reaches Redis again empties this platform's whole cache first, so nothing cached before the
 * outage can be served after it.
 *
 * Coherent (platform/coherent-cache.ts): each scope's epoch is a Redis counter shared by every node,
 * and a fill is stored by a script only while that counter still holds the value read before the fill's
 * database read. The counters live beside the cached entries, not under their prefix, so emptying the cache
 * never resets an epoch to a value an in-flight fill has already seen.
 */
import { createHash } from "node:crypto";
import { Cachers, type Middleware } from "moleculer";
import { CacheStats, coherentMiddleware, type CoherentCacher } from "./coherent-cache";
import { rememberAnswerBytes } from "./answer-bytes";

const COMMAND_TIMEOUT_MS = 500;
const WARN_EVERY_MS = 10_000;

/** SET key only while the epoch counter still reads ARGV[2] (a missing counter reads "0"). */
const SET_IF_EPOCH = `
if (redis.call('GET', KEYS[2]) or '0') ~= ARGV[2] then return 0 end
if ARGV[3] == '0' then redis.call('SET', KEYS[1], ARGV[1]) else redis.call('SET', KEYS[1], ARGV[1], 'EX', ARGV[3]) end
return 1`;

/** The parts of ioredis and Moleculer's serializer used here (the base class types neither). */
interface RedisClient {
  mgetBuffer(...keys: string[]): Promise<(Buffer | null)[]>;
  evalsha(sha: string, numKeys: number, ...args: (string | Buffer | number)[]): Promise<unknown>;
  incr(key: string): Promise<number>;
  eval(script: string, numKeys: number, ...args: (string | Buffer | number)[]): Promise<unknown>;
}
interface Serializer {
  serialize(data: unknown): Buffer;
  deserialize(data: Buffer): unknown;
}
/** Moleculer's cacher metrics (node_modules/moleculer/src/metrics/constants.js), counted as its get() does. */
const GET_TOTAL = "moleculer.cacher.get.total";
const FOUND_TOTAL = "moleculer.cacher.found.total";
const SET_IF_EPOCH_SHA = createHash("sha1").update(SET_IF_EPOCH).digest("hex");

export class ResilientRedisCacher extends Cachers.Redis implements CoherentCacher {
  readonly shared = true;
  readonly stats = new CacheStats();
  private dirty = false;
  private lastWarning = 0;
  private readonly epochPrefix: string;
  /** Scopes whose epoch bump failed during an outage; bumped on recovery. */
  private readonly missedBumps = new Set<string>();

  constructor(opts: { prefix: string; ttl: number; url: string }) {
    super({
      prefix: opts.prefix,
      ttl: opts.ttl,
      // A URL string would drop these client options: ioredis takes them beside the URL's own.
      redis: {
        ...redisOptionsFromUrl(opts.url),
        enableOfflineQueue: false,
        maxRetriesPerRequest: 0,
        commandTimeout: COMMAND_TIMEOUT_MS,
        connectTimeout: 2000,
        retryStrategy: (times: number) => Math.min(times * 200, 2000),
      },
    });
    // Entries are "<prefix>-<key>"; "<prefix>:epoch:<scope>" is outside every clean pattern.
    this.epochPrefix = `${opts.prefix}:epoch:`;
  }

  override middleware(): Middleware {
    return coherentMiddleware(this);
  }

  private get redis(): RedisClient {
    return (this as { client: RedisClient }).client;
  }

  /**
   * The entry and the scope's epoch in one MGET (one round trip instead of a GET for each): on a miss the
   * epoch was read in the same atomic step, so before the database read, as readThrough requires.
   */
  async lookup(key: string, scope: string): Promise<{ data: unknown; epoch: string | null }> {
    try {
      if (!(await this.recover())) return { data: this.miss, epoch: null };
      const [entry, epoch] = await this.redis.mgetBuffer((this.prefix ?? "") + key, this.epochPrefix + scope);
      this.broker.metrics.increment(GET_TOTAL);
      if (entry === null) return { data: this.miss, epoch: epoch?.toString() ?? "0" };
      this.broker.metrics.increment(FOUND_TOTAL);
      const data = (this as unknown as { serializer: Serializer }).serializer.deserialize(entry);
      rememberAnswerBytes(data, entry, key);
      return { data, epoch: null };
    } catch (err) {
      this.degraded("get", err);
      return { data: this.miss, epoch: null };
    }
  }

  async setIfEpoch(
    key: string,
    data: unknown,
    ttlS: number | undefined,
    scope: string,
    epoch: string,
  ): Promise<boolean> {
    if (this.dirty) return false;
    try {
      const serialized = (this as unknown as { serializer: Serializer }).serializer.serialize(data);
      rememberAnswerBytes(data, serialized, key);
      const ttl = ttlS ?? this.opts.ttl ?? 0;
      const keysAndArgs = [(this.prefix ?? "") + key, this.epochPrefix + scope, serialized, epoch, ttl] as const;
      // EVALSHA: the script's 250 bytes are sent (and hashed by Redis) once per Redis restart, not per fill.
      const stored = await this.redis.evalsha(SET_IF_EPOCH_SHA, 2, ...keysAndArgs).catch((err: unknown) => {
        if (!(err instanceof Error && err.message.startsWith("NOSCRIPT"))) throw err;
        return this.redis.eval(SET_IF_EPOCH, 2, ...keysAndArgs);
      });
      return stored === 1;
    } catch (err) {
      this.degraded("set", err);
      return false;
    }
  }

  /** Bump first, then clean: a fill that read the old epoch is refused even if it lands after the clean. */
  async invalidate(scope: string, patterns: readonly string[]): Promise<void> {
    try {
      await this.redis.incr(this.epochPrefix + scope);
    } catch (err) {
      // The bump is lost: redo it and empty the whole cache as soon as Redis answers (store nothing till then).
      this.missedBumps.add(scope);
      this.dirty = true;
      this.degraded("incr", err);
    }
    // A plain key is one DEL; a pattern is a SCAN over the keyspace.
    const exact = patterns.filter((p) => !/[*?[\]\\]/.test(p));
    const wild = patterns.filter((p) => !exact.includes(p));
    if (exact.length > 0) await this.del(exact);
    if (wild.length > 0) await this.clean(wild);
  }

  override init(broker: Parameters<InstanceType<typeof Cachers.Redis>["init"]>[0]): void {
    super.init(broker);
    this.stats.bind(broker);
    // The base logs every reconnect failure with a stack (every 2 s during an outage): one warning per window is enough.
    const client = (
      this as {
        client: { removeAllListeners(e: string): void; on(e: string, f: (err: Error) => void): void };
      }
    ).client;
    client.removeAllListeners("error");
    client.on("error", (err) => {
      (this as { connected: boolean }).connected = false;
      this.degraded("connection", err);
    });
  }

  /** Stopping with Redis down is not an error worth a stack trace. */
  override async close(): Promise<void> {
    try {
      await super.close();
    } catch {
      // QUIT cannot reach a dead Redis; without this the client would go on reconnecting after the broker stopped.
      (this as { client: { disconnect(): void } }).client.disconnect();
    }
  }

  private degraded(op: string, err: unknown): void {
    const now = Date.now();
    if (now - this.lastWarning > WARN_EVERY_MS) {
      this.lastWarning = now;
      this.logger.warn(`Redis cacher unavailable (${op}: ${(err as Error).message}); serving without cache`);
    }
  }

  /** Empties the cache once Redis answers again after a missed invalidation. True when it is clean. */
  private async recover(): Promise<boolean> {
    if (!this.dirty) return true;
    try {
      // Epochs first: a fill another node started before the outage must not land after the emptying.
      for (const scope of this.missedBumps) await this.redis.incr(this.epochPrefix + scope);
      this.missedBumps.clear();
      await super.clean("*");
      this.dirty = false;
      this.logger.info("Redis cacher back: cache emptied after invalidations missed during the outage");
      return true;
    } catch (err) {
      this.degraded("clean", err);
      return false;
    }
  }

  private get miss(): Record<string, unknown> | null {
    return this.opts.missingResponse as Record<string, unknown> | null;
  }

  override async get(key: string): Promise<Record<string, unknown> | null> {
    try {
      if (!(await this.recover())) return this.miss;
      return await super.get(key);
    } catch (err) {
      this.degraded("get", err);
      return this.miss;
    }
  }

  override async getWithTTL(key: string): Promise<Record<string, unknown> | null> {
    try {
      if (!(await this.recover())) return { data: this.miss, ttl: null };
      return await super.getWithTTL(key);
    } catch (err) {
      this.degraded("get", err);
      return { data: this.miss, ttl: null };
    }
  }

  override async set(key: string, data: unknown, ttl?: number): Promise<void> {
    // While dirty, Redis may hold entries we failed to invalidate: don't add to it until it is emptied.
    if (this.dirty) return;
    try {
      await super.set(key, data, ttl);
    } catch (err) {
      this.degraded("set", err);
    }
  }

  override async del(keys: string | string[]): Promise<void> {
    try {
      await super.del(keys);
    } catch (err) {
      this.dirty = true;
      this.degraded("del", err);
    }
  }

  override async clean(match: string | string[] = "*"): Promise<void> {
    try {
      await super.clean(match);
    } catch (err) {
      this.dirty = true;
      this.degraded("clean", err);
    }
  }
}

function redisOptionsFromUrl(url: string): Record<string, unknown> {
  const u = new URL(url);
  return {
    host: u.hostname,
    port: u.port ? Number(u.port) : 6379,
    db: u.pathname.length > 1 ? Number(u.pathname.slice(1)) : 0,
    ...(u.username ? { username: decodeURIComponent(u.username) } : {}),
    ...(u.password ? { password: decodeURIComponent(u.password) } : {}),
    ...(u.protocol === "rediss:" ? { tls: {} } : {}),
  };
}
