/**
 * Rate limits (OWASP API4) as pure decisions: which token buckets a request draws from, the bucket
 * arithmetic, the answer's RateLimit headers, and the client address behind trusted proxies.
 *
 * The arithmetic here is the specification of the Redis script in rate-limit.ts (RATE_LIMIT_SCRIPT): the same
 * operations in the same order on doubles, so both stores decide alike (an integration test replays the
 * script's answers through takeAll). Pure: no moleculer, no ioredis.
 */
import { LAB_INSTANCES_ACTIONS } from "../lab-instances/lab-instances.contract";
import { isIPv4, isIPv6 } from "node:net";

export interface BucketLimit {
  /** Tokens added per second. */
  ratePerS: number;
  /** Capacity: the most requests allowed at once. */
  burst: number;
}

/** A bucket as stored: its tokens at `atMs`. No state means a full bucket. */
export interface BucketState {
  tokens: number;
  atMs: number;
}

export interface Take {
  allowed: boolean;
  /** Each bucket refilled to now, minus the request's token when allowed. */
  states: BucketState[];
}

/** The bucket refilled up to `nowMs`. A clock that went back (another node's) adds nothing and moves nothing back. */
export function refill(state: BucketState | undefined, limit: BucketLimit, nowMs: number): BucketState {
  if (state === undefined) return { tokens: limit.burst, atMs: nowMs };
  const elapsedMs = Math.max(0, nowMs - state.atMs);
  return {
    tokens: Math.min(limit.burst, state.tokens + (elapsedMs * limit.ratePerS) / 1000),
    atMs: Math.max(state.atMs, nowMs),
  };
}

/**
 * One request against all its buckets, all or nothing: it passes when every bucket holds a whole token, and
 * then takes one from each; a refused request takes nothing (so hammering while refused does not prolong
 * the wait, and a refused lab start does not also spend the general budget).
 */
export function takeAll(
  states: readonly (BucketState | undefined)[],
  limits: readonly BucketLimit[],
  nowMs: number,
): Take {
  const refilled = limits.map((limit, i) => refill(states[i], limit, nowMs));
  const allowed = refilled.every((s) => s.tokens >= 1);
  return { allowed, states: allowed ? refilled.map((s) => ({ tokens: s.tokens - 1, atMs: s.atMs })) : refilled };
}

/** What the answer says about the limit (IETF draft-ietf-httpapi-ratelimit-headers, delta-seconds). */
export interface Verdict {
  allowed: boolean;
  limit: number;
  remaining: number;
  /** Seconds until the bucket is full again. */
  resetS: number;
  /** Seconds until the request would pass (refused requests only), at least 1. */
  retryAfterS?: number;
}

/** Whole seconds, rounded up; the microsecond of slack keeps a rate like 2/60 from rounding 15 s up to 16. */
const secondsUntil = (tokensNeeded: number, limit: BucketLimit) =>
  tokensNeeded <= 0 ? 0 : Math.ceil(tokensNeeded / limit.ratePerS - 1e-6);

/**
 * The bucket the headers describe: on a refusal the one that keeps the client waiting longest, else the one
 * closest to running out (the draft asks for the policy with the least quota left).
 */
export function verdictOf(take: Take, limits: readonly BucketLimit[]): Verdict {
  const views = take.states.map((s, i) => ({
    limit: limits[i].burst,
    remaining: Math.max(0, Math.floor(s.tokens)),
    resetS: secondsUntil(limits[i].burst - s.tokens, limits[i]),
    waitS: Math.max(1, secondsUntil(1 - s.tokens, limits[i])),
    short: s.tokens < 1,
  }));
  if (!take.allowed) {
    const worst = views.filter((v) => v.short).reduce((a, b) => (b.waitS > a.waitS ? b : a));
    return { allowed: false, limit: worst.limit, remaining: 0, resetS: worst.resetS, retryAfterS: worst.waitS };
  }
  const tightest = views.reduce((a, b) =>
    b.remaining < a.remaining || (b.remaining === a.remaining && b.resetS > a.resetS) ? b : a,
  );
  return { allowed: true, limit: tightest.limit, remaining: tightest.remaining, resetS: tightest.resetS };
}

export function rateLimitHeaders(v: Verdict): Record<string, string> {
  const headers: Record<string, string> = {
    "RateLimit-Limit": String(v.limit),
    "RateLimit-Remaining": String(v.remaining),
    "RateLimit-Reset": String(v.resetS),
  };
  if (v.retryAfterS !== undefined) headers["Retry-After"] = String(v.retryAfterS);
  return headers;
}

/* ───────────────────────── which buckets a request draws from ───────────────────────── */

export interface RateLimits {
  /** Per signed-in user, every API request; undefined: off. */
  user?: BucketLimit;
  /** Per user, lab starts (POST /lab-instances) on top of `user`; undefined: off. */
  labStarts?: BucketLimit;
  /** Per client address, /auth/login and /auth/callback; undefined: off. */
  login?: BucketLimit;
}

/** `n` per minute as a bucket: a minute's worth at once, refilled evenly. 0: off. */
export const perMinute = (n: number): BucketLimit | undefined => (n > 0 ? { ratePerS: n / 60, burst: n } : undefined);
/** 0 in either: off. */
export const perSecond = (rps: number, burst: number): BucketLimit | undefined =>
  rps > 0 && burst > 0 ? { ratePerS: rps, burst } : undefined;

export const LOGIN_LIMITED_ACTIONS: ReadonlySet<string> = new Set(["auth.login", "auth.callback"]);
export const LAB_START_ACTION = LAB_INSTANCES_ACTIONS.create;

export interface RequestFacts {
  /** The routed action (undefined for custom aliases such as the event stream). */
  action: string | undefined;
  /** The signed-in user's id; undefined when anonymous. */
  userId: number | undefined;
  /** The client address as clientAddress() derives it. */
  client: string;
}

export interface Bucket {
  /** Without the deployment's prefix. The user's keys share a hash tag: one Redis Cluster slot, one script. */
  key: string;
  limit: BucketLimit;
}

/**
 * Anonymous requests other than the login draw from no bucket: a class behind one NAT opens the site in the
 * same minute, so a per-address budget small enough to matter would refuse students; what anonymous
 * callers reach (health, the OpenAPI document, a 401) costs little, and a flood of them (or of invalid
 * tokens, refused before anyone is known) is the ingress's job. The login is limited per address because it
 * stores state and calls the IdP.
 */
export function bucketsFor(req: RequestFacts, limits: RateLimits): Bucket[] {
  const buckets: Bucket[] = [];
  if (req.action !== undefined && LOGIN_LIMITED_ACTIONS.has(req.action)) {
    if (limits.login) buckets.push({ key: `{ip:${req.client}}:login`, limit: limits.login });
    return buckets;
  }
  if (req.userId === undefined) return buckets;
  if (limits.user) buckets.push({ key: `{u:${req.userId}}`, limit: limits.user });
  if (req.action === LAB_START_ACTION && limits.labStarts) {
    buckets.push({ key: `{u:${req.userId}}:lab-starts`, limit: limits.labStarts });
  }
  return buckets;
}

/* ───────────────────────── client address ───────────────────────── */

/**
 * The client's address: the socket's peer, unless `trustedHops` proxies (ingress, load balancer) stand in
 * front, each appending the address it saw to X-Forwarded-For. Then the client is the entry `trustedHops`
 * places left of the peer; entries further left are the client's own claims and never trusted (so a
 * forged header cannot pick someone else's budget). With no trusted proxy the header is ignored.
 * IPv6 clients are keyed by their /64: one host usually holds a whole /64.
 */
export function clientAddress(
  peer: string | undefined,
  forwardedFor: string | string[] | undefined,
  trustedHops: number,
): string {
  let address = peer ?? "unknown";
  if (trustedHops > 0 && forwardedFor !== undefined) {
    const chain = (Array.isArray(forwardedFor) ? forwardedFor.join(",") : forwardedFor)
      .split(",")
      .map((s) => s.trim())
      .filter(Boolean);
    chain.push(address);
    address = chain[Math.max(0, chain.length - 1 - trustedHops)];
  }
  return addressKey(address);
}

function addressKey(raw: string): string {
  const address = raw.replace(/^\[|\]$/g, "").toLowerCase();
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/.exec(address);
  if (mapped) return mapped[1];
  if (isIPv4(address)) return address;
  if (isIPv6(address)) return `${expandIPv6(address).slice(0, 4).join(":")}::/64`;
  // Not an address (a proxy wrote something else): keyed as given, bounded so it cannot bloat a key.
  return `other:${address.slice(0, 64)}`;
}

function expandIPv6(address: string): string[] {
  const halves = address.split("%")[0].split("::");
  const head = halves[0];
  const tail = halves.at(1); // undefined without "::"
  const left = head ? head.split(":") : [];
  const right = tail ? tail.split(":") : [];
  // An embedded IPv4 tail (::1.2.3.4) stands for two groups; only the first four groups matter here.
  const missing = 8 - left.length - right.length - (right.some((g) => g.includes(".")) ? 1 : 0);
  const groups = tail === undefined ? left : [...left, ...Array<string>(Math.max(0, missing)).fill("0"), ...right];
  return groups.map((g) => (g.includes(".") ? g : parseInt(g || "0", 16).toString(16)));
}
