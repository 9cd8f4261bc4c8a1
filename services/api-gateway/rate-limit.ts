/**
 * Rate limits at the gateway (DESIGN "Rate limits"; the decisions are in rate-limit.rules.ts): token buckets
 * per signed-in user, per user for lab starts, per client address for the login. With REDIS_URL every gateway
 * node draws from the same buckets in Redis, one script call (one round trip) per request; without it each
 * node keeps its own in memory. Redis trouble lets requests through (fail open, logged once per outage):
 * a limiter must never be the reason the API is down.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import Redis from "ioredis";
import type { Config } from "../../platform/config";
import { tooManyRequests } from "../../platform/errors";
import type { Principal } from "../../lib/principal";
import {
  bucketsFor,
  clientAddress,
  perMinute,
  perSecond,
  rateLimitHeaders,
  takeAll,
  verdictOf,
  type BucketLimit,
  type BucketState,
  type RateLimits,
  type Take,
} from "./rate-limit.rules";

/** The service's logger (what the outage reports need of it). */
export interface OutageLog {
  warn(message: string): void;
  info(message: string): void;
}

/** Where buckets live. `undefined`: the store cannot answer now (the request passes). */
export interface BucketStore {
  take(keys: readonly string[], limits: readonly BucketLimit[]): Promise<Take | undefined>;
  connect?(): Promise<void>;
  close(): void;
}

/**
 * One node's buckets. A Map in recency order (a touched bucket moves to the end), so evicting the least
 * recently used is O(1). An idle bucket refills to full, which is what a missing one means, so eviction only
 * forgets something when more than `maxBuckets` clients are active at once.
 */
export class MemoryBuckets implements BucketStore {
  private readonly buckets = new Map<string, BucketState>();

  constructor(
    private readonly maxBuckets = 100_000,
    private readonly now: () => number = Date.now,
  ) {}

  get size(): number {
    return this.buckets.size;
  }

  take(keys: readonly string[], limits: readonly BucketLimit[]): Promise<Take> {
    const take = takeAll(
      keys.map((k) => this.buckets.get(k)),
      limits,
      this.now(),
    );
    if (take.allowed) {
      keys.forEach((key, i) => {
        this.buckets.delete(key);
        this.buckets.set(key, take.states[i]);
      });
      if (this.buckets.size > this.maxBuckets) {
        for (const oldest of this.buckets.keys()) {
          if (this.buckets.size <= this.maxBuckets) break;
          this.buckets.delete(oldest);
        }
      }
    }
    return Promise.resolve(take);
  }

  close(): void {
    this.buckets.clear();
  }
}

/**
 * takeAll() in Lua, operation for operation (the rules module is its specification), atomic in Redis.
 * Time is Redis's own (TIME), so gateway nodes with skewed clocks still agree. Numbers travel as %.17g
 * strings, which round-trip doubles exactly. A refused request writes nothing; a written bucket expires when
 * it would be full again (a missing bucket is a full one). Reply: allowed, now, then tokens and at per key.
 */
export const RATE_LIMIT_SCRIPT = `
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local tokens, at = {}, {}
local allowed = 1
for i = 1, #KEYS do
  local rate, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
  local s = redis.call('HMGET', KEYS[i], 'tokens', 'at')
  local tk, a = tonumber(s[1]), tonumber(s[2])
  if tk == nil or a == nil then
    tk, a = burst, now
  else
    tk = math.min(burst, tk + (math.max(0, now - a) * rate) / 1000)
    a = math.max(a, now)
  end
  if tk < 1 then allowed = 0 end
  tokens[i], at[i] = tk, a
end
local reply = {allowed, now}
for i = 1, #KEYS do
  if allowed == 1 then
    local rate, burst = tonumber(ARGV[2 * i - 1]), tonumber(ARGV[2 * i])
    tokens[i] = tokens[i] - 1
    redis.call('HSET', KEYS[i], 'tokens', string.format('%.17g', tokens[i]), 'at', string.format('%.17g', at[i]))
    redis.call('PEXPIRE', KEYS[i], math.ceil((burst - tokens[i]) * 1000 / rate) + 1000)
  end
  reply[#reply + 1] = string.format('%.17g', tokens[i])
  reply[#reply + 1] = at[i]
end
return reply
`;

/** The script's answer with the time it used, so a test can replay it through takeAll(). */
export interface TimedTake extends Take {
  nowMs: number;
}

type ScriptReply = (number | string)[];
type LimiterRedis = Redis & { rateLimitTake(numKeys: number, ...keysAndArgs: string[]): Promise<ScriptReply> };

/**
 * How long a request waits for Redis before passing. Only the request that meets a stalled Redis first, and
 * then one probe per BREAKER_OPEN_MS, pay it; it is well above a healthy round trip (well under 1 ms) so a
 * busy event loop does not switch the limits off.
 */
const COMMAND_TIMEOUT_MS = 500;
/** After a failure, requests skip Redis (and pass) this long; then a single request probes it. */
const BREAKER_OPEN_MS = 1000;

export class RedisBuckets implements BucketStore {
  private readonly redis: LimiterRedis;
  private skipUntil = 0;
  /** When the current outage began; undefined while Redis answers. */
  private failingSince: number | undefined;

  constructor(
    url: string,
    private readonly prefix: string,
    private readonly logger: OutageLog,
  ) {
    // ioredis defaults chosen against, for a check on every request: no offline queue (a disconnected client
    // would queue requests behind the reconnect: latency, then a burst of stale takes), no command timeout
    // (a stalled server would hang every request), 20 retries per command, and re-sending in-flight commands
    // after a reconnect (a take already given up on would spend a token twice).
    this.redis = new Redis(url, {
      lazyConnect: true,
      enableOfflineQueue: false,
      commandTimeout: COMMAND_TIMEOUT_MS,
      maxRetriesPerRequest: 0,
      autoResendUnfulfilledCommands: false,
      connectTimeout: 1000,
    }) as LimiterRedis;
    // EVALSHA, falling back to EVAL on NOSCRIPT (and EVAL once per new connection): ioredis's Script.
    this.redis.defineCommand("rateLimitTake", { lua: RATE_LIMIT_SCRIPT });
    this.redis.on("error", () => {
      /* reported once per outage by take() */
    });
  }

  async connect(): Promise<void> {
    await this.redis.connect().catch(() => undefined);
  }

  async take(keys: readonly string[], limits: readonly BucketLimit[]): Promise<TimedTake | undefined> {
    if (this.redis.status !== "ready") {
      this.unavailable(`connection ${this.redis.status}`);
      return;
    }
    const sentAt = Date.now();
    if (this.failingSince !== undefined) {
      if (sentAt < this.skipUntil) return undefined;
      this.skipUntil = sentAt + BREAKER_OPEN_MS; // this request probes, the others keep passing
    }
    const args = limits.flatMap((l) => [String(l.ratePerS), String(l.burst)]);
    let reply: ScriptReply;
    try {
      reply = await this.redis.rateLimitTake(keys.length, ...keys.map((k) => this.prefix + k), ...args);
    } catch (err) {
      this.unavailable((err as Error).message);
      return;
    }
    // Only an answer to a command sent after the outage began ends it (late answers to earlier ones do not).
    if (this.failingSince !== undefined && sentAt >= this.failingSince) {
      this.failingSince = undefined;
      this.logger.info("Rate limits enforced again: Redis answers");
    }
    const states: BucketState[] = keys.map((_, i) => ({
      tokens: Number(reply[2 + 2 * i]),
      atMs: Number(reply[3 + 2 * i]),
    }));
    return { allowed: Number(reply[0]) === 1, nowMs: Number(reply[1]), states };
  }

  private unavailable(why: string): undefined {
    if (this.failingSince === undefined) {
      this.failingSince = Date.now();
      this.logger.warn(`Rate limits not enforced (requests pass) while Redis is unavailable: ${why}`);
    }
    this.skipUntil = Date.now() + BREAKER_OPEN_MS;
    return undefined;
  }

  close(): void {
    this.redis.disconnect();
  }
}

export class RateLimiter {
  constructor(
    private readonly limits: RateLimits,
    private readonly store: BucketStore,
    private readonly trustedProxyHops: number,
  ) {}

  /**
   * Draws the request's tokens and puts RateLimit-* on the answer; over the limit throws 429 with
   * Retry-After. Runs after authentication (the user is known) and before the action.
   */
  async check(
    req: IncomingMessage,
    res: ServerResponse,
    principal: Principal | null | undefined,
    action: string | undefined,
  ): Promise<void> {
    const buckets = bucketsFor(
      {
        action,
        userId: principal?.kind === "user" ? principal.id : undefined,
        client: clientAddress(req.socket.remoteAddress, req.headers["x-forwarded-for"], this.trustedProxyHops),
      },
      this.limits,
    );
    if (buckets.length === 0) return;
    const limits = buckets.map((b) => b.limit);
    const take = await this.store.take(
      buckets.map((b) => b.key),
      limits,
    );
    if (take === undefined) return;
    const verdict = verdictOf(take, limits);
    for (const [name, value] of Object.entries(rateLimitHeaders(verdict))) res.setHeader(name, value);
    if (!verdict.allowed) throw tooManyRequests(`Too many requests: try again in ${verdict.retryAfterS} s`);
  }

  async start(): Promise<void> {
    await this.store.connect?.();
  }

  close(): void {
    this.store.close();
  }
}

export function rateLimitsOf(config: Config["rateLimit"]): RateLimits {
  return {
    user: perSecond(config.userRps, config.userBurst),
    labStarts: perMinute(config.labStartsPerMin),
    login: perMinute(config.loginPerMin),
  };
}

/** Redis when REDIS_URL is set (buckets shared by the gateway nodes), else this node's memory. */
export function createRateLimiter(config: Config, logger: OutageLog): RateLimiter {
  const limits = rateLimitsOf(config.rateLimit);
  const anyLimit = Object.values(limits).some((l) => l !== undefined);
  const prefix = `ratelimit:${config.namespace}:`;
  const redis = config.redisUrl && anyLimit ? new RedisBuckets(config.redisUrl, prefix, logger) : undefined;
  return new RateLimiter(limits, redis ?? new MemoryBuckets(), config.rateLimit.trustedProxyHops);
}
