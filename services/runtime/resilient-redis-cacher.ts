/**
 * Moleculer's Redis cacher, made to degrade instead of fail: when Redis is slow or down, reads miss (the
 * action runs and answers from the database), writes are dropped, and requests never wait on Redis longer
 * than a short command timeout. An invalidation that could not reach Redis marks the cache dirty; the first
 * command that reaches Redis again empties this platform's whole cache first, so nothing cached before the
 * outage can be served after it.
 */
import { Cachers } from "moleculer";

const COMMAND_TIMEOUT_MS = 500;
const WARN_EVERY_MS = 10_000;

type RedisCacherOptions = ConstructorParameters<typeof Cachers.Redis>[0];

export class ResilientRedisCacher extends Cachers.Redis {
  private dirty = false;
  private lastWarning = 0;

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
    } as RedisCacherOptions);
  }

  override init(broker: Parameters<InstanceType<typeof Cachers.Redis>["init"]>[0]): void {
    super.init(broker);
    // The base logs every reconnect failure with a stack (every 2 s during an outage): one warning per window is enough.
    const client = (this as unknown as { client: { removeAllListeners(e: string): void; on(e: string, f: (err: Error) => void): void } }).client;
    client.removeAllListeners("error");
    client.on("error", (err) => {
      (this as unknown as { connected: boolean }).connected = false;
      this.degraded("connection", err);
    });
  }

  /** Stopping with Redis down is not an error worth a stack trace. */
  override async close(): Promise<void> {
    try {
      await super.close();
    } catch {
      // QUIT cannot reach a dead Redis; without this the client would go on reconnecting after the broker stopped.
      (this as unknown as { client: { disconnect(): void } }).client.disconnect();
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
