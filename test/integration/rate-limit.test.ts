/**
 * Rate limits over real HTTP (services/api-gateway/rate-limit.ts): token buckets in the real Redis shared by
 * gateway nodes, in memory without REDIS_URL; 429 with Retry-After and RateLimit-* headers; lab starts per
 * student; login per client address (X-Forwarded-For only behind TRUST_PROXY); 0 turns a limit off; a Redis
 * outage (a redis-server of this test's own) lets requests through. Also: the Lua script decides exactly
 * like takeAll(), its specification.
 */
import { randomBytes } from "node:crypto";
import { DEV_CLIENT_SECRET } from "../../services/auth/auth.contract";
import { RedisBuckets, type TimedTake } from "../../services/api-gateway/rate-limit";
import { takeAll, type BucketLimit, type BucketState } from "../../services/api-gateway/rate-limit.rules";
import { EXTRA_ACCOUNTS, tokenFor } from "../support/http-api";
import { REDIS_URL, startNode, startTestPlatform, type PlatformNode, type TestPlatform } from "../support/platform";
import { startOwnRedis, type OwnRedis } from "../support/redis-server";
import { ifAssigned } from "../support/cleanup";

const namespace = () => `rl-${randomBytes(4).toString("hex")}`;
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
/** Starts of a lab that does not exist: answered 404 by the action, so only the limiter can say 429. */
const NO_SUCH_START = { lab_id: 999_999, course_id: 999_999 };

let p: TestPlatform;
const nodes: PlatformNode[] = [];

/** Another node on the platform's database and IdP (all services, so it answers on its own). */
async function node(env: Record<string, string>): Promise<PlatformNode> {
  const n = await startNode(p.db.url, { OIDC_ISSUER: p.idp.issuer, OIDC_CLIENT_SECRET: DEV_CLIENT_SECRET, ...env });
  nodes.push(n);
  return n;
}

interface Answer {
  status: number;
  headers: Headers;
  body: unknown;
}

async function call(
  base: string,
  method: string,
  path: string,
  opts: { token?: string; body?: unknown; headers?: Record<string, string> } = {},
): Promise<Answer> {
  const res = await fetch(`${base}/api/v1${path}`, {
    method,
    redirect: "manual",
    headers: {
      ...(opts.token ? { authorization: `Bearer ${opts.token}` } : {}),
      ...(opts.body !== undefined ? { "content-type": "application/json" } : {}),
      ...opts.headers,
    },
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
  });
  const text = await res.text();
  return { status: res.status, headers: res.headers, body: text ? JSON.parse(text) : null };
}

const remaining = (a: Answer) => a.headers.get("ratelimit-remaining");

/** Waits (with another user's requests) until the node's limiter answers: a cold, busy node may still connect. */
async function untilEnforced(base: string, token: string): Promise<void> {
  while ((await call(base, "GET", "/auth/me", { token })).headers.get("ratelimit-limit") === null) await sleep(50);
}

function expectRefused(a: Answer, limit: number, maxRetryAfterS: number): number {
  expect(a.status).toBe(429);
  expect(a.body).toEqual({ detail: expect.stringMatching(/^Too many requests/) });
  expect(a.headers.get("ratelimit-limit")).toBe(String(limit));
  expect(a.headers.get("ratelimit-remaining")).toBe("0");
  expect(a.headers.get("x-request-id")).toBeTruthy();
  const retryAfter = Number(a.headers.get("retry-after"));
  expect(Number.isInteger(retryAfter)).toBe(true);
  expect(retryAfter).toBeGreaterThanOrEqual(1);
  expect(retryAfter).toBeLessThanOrEqual(maxRetryAfterS);
  return retryAfter;
}

beforeAll(async () => {
  // Per user 0.5 req/s, burst 3 (a token every 2 s); lab starts 2/min (one every 30 s); login 2/min.
  p = await startTestPlatform({
    REDIS_URL,
    NAMESPACE: namespace(),
    OIDC_CLIENT_SECRET: DEV_CLIENT_SECRET,
    RATE_LIMIT_RPS: "0.5",
    RATE_LIMIT_BURST: "3",
    RATE_LIMIT_LAB_STARTS_PER_MIN: "2",
    RATE_LIMIT_LOGIN_PER_MIN: "2",
  });
});

afterAll(async () => {
  for (const n of nodes) await n.stop();
  await ifAssigned(p)?.stop();
});

describe.each([
  ["Redis", () => p.url],
  ["memory (no REDIS_URL)", async () => (await node({ RATE_LIMIT_RPS: "0.5", RATE_LIMIT_BURST: "3" })).url],
])("per-user bucket in %s", (_store, baseOf) => {
  it("answers a burst past the limit 429 with RateLimit headers, Retry-After; then it passes", async () => {
    const base = await baseOf();
    await untilEnforced(base, await p.token("admin"));
    const token = await p.token("student");
    const passed: Answer[] = [];
    let refused: Answer | undefined;
    // Burst 3: the fourth quick request is refused (a few more allowed in case this machine stalls for seconds).
    for (let i = 0; i < 8 && !refused; i++) {
      const a = await call(base, "GET", "/courses", { token });
      if (a.status === 429) refused = a;
      else passed.push(a);
    }
    expect(passed.length).toBeGreaterThanOrEqual(3);
    expect(passed.every((a) => a.status === 200)).toBe(true);
    expect(passed.slice(0, 3).map(remaining)).toEqual(["2", "1", "0"]);
    for (const a of passed) {
      expect(a.headers.get("ratelimit-limit")).toBe("3");
      // Time to refill to 3 tokens at 0.5/s: 2 s per missing token.
      expect(Number(a.headers.get("ratelimit-reset"))).toBeLessThanOrEqual(6);
      expect(a.headers.get("retry-after")).toBeNull();
    }
    expect(refused).toBeDefined();
    // One token takes 2 s at 0.5/s.
    const retryAfter = expectRefused(refused as Answer, 3, 2);
    // Refused requests take nothing, so hammering does not prolong the wait.
    expect((await call(base, "GET", "/courses", { token })).status).toBe(429);
    await sleep(retryAfter * 1000);
    const after = await call(base, "GET", "/courses", { token });
    expect(after.status).toBe(200);
    // Another user has a budget of their own.
    expect((await call(base, "GET", "/courses", { token: await p.token("teacher") })).status).toBe(200);
  });
});

it("shares one budget between two gateway nodes on the same Redis", async () => {
  // A token every 100 s: nothing refills while the test runs.
  const env = { REDIS_URL, NAMESPACE: namespace(), RATE_LIMIT_RPS: "0.01", RATE_LIMIT_BURST: "4" };
  const [a, b] = [await node(env), await node(env)];
  for (const n of [a, b]) await untilEnforced(n.url, await p.token("admin"));
  const token = await p.token("student2");
  const answers: Answer[] = [];
  for (const n of [a, b, a, b]) answers.push(await call(n.url, "GET", "/courses", { token }));
  expect(answers.map((x) => x.status)).toEqual([200, 200, 200, 200]);
  // Each node sees what the other took.
  expect(answers.map(remaining)).toEqual(["3", "2", "1", "0"]);
  expectRefused(await call(a.url, "GET", "/courses", { token }), 4, 100);
  expectRefused(await call(b.url, "GET", "/courses", { token }), 4, 100);
});

it("limits lab starts per student, apart from the general budget", async () => {
  const token = await p.token("student2");
  const starts: Answer[] = [];
  for (let i = 0; i < 2; i++) starts.push(await call(p.url, "POST", "/lab-instances", { token, body: NO_SUCH_START }));
  expect(starts.map((s) => s.status)).toEqual([404, 404]);
  // 2 per minute: the next token in up to 30 s.
  const third = await call(p.url, "POST", "/lab-instances", { token, body: NO_SUCH_START });
  expect(expectRefused(third, 2, 30)).toBeGreaterThan(2);
  // The refused start took nothing from the general budget (burst 3): other requests still pass.
  expect((await call(p.url, "GET", "/lab-instances", { token })).status).toBe(200);
  // Another student starts as usual.
  const other = await tokenFor(p, EXTRA_ACCOUNTS.student3);
  expect((await call(p.url, "POST", "/lab-instances", { token: other, body: NO_SUCH_START })).status).toBe(404);
});

describe("login per client address", () => {
  it("counts /auth/login + /auth/callback per address; X-Forwarded-For ignored without TRUST_PROXY", async () => {
    const login = (forwardedFor: string) =>
      call(p.url, "GET", "/auth/login", { headers: { "x-forwarded-for": forwardedFor } });
    expect((await login("198.51.100.1")).status).toBe(302);
    expect((await login("198.51.100.2")).status).toBe(302);
    expectRefused(await login("198.51.100.3"), 2, 30);
    expectRefused(await call(p.url, "GET", "/auth/callback?state=s&code=c"), 2, 30);
  });

  it("behind TRUST_PROXY=1 keys by the address the proxy saw, never by the client's own entries", async () => {
    const n = await node({ REDIS_URL, NAMESPACE: namespace(), TRUST_PROXY: "1", RATE_LIMIT_LOGIN_PER_MIN: "1" });
    const login = (forwardedFor: string) =>
      call(n.url, "GET", "/auth/login", { headers: { "x-forwarded-for": forwardedFor } });
    expect((await login("203.0.113.7")).status).toBe(302);
    expectRefused(await login("203.0.113.7"), 1, 60);
    // A client behind the proxy prepends a forged entry: the proxy's entry (the real client) still counts.
    expectRefused(await login("203.0.113.99, 203.0.113.7"), 1, 60);
    expect((await login("203.0.113.8")).status).toBe(302);
  });
});

it("turns each limit off with 0", async () => {
  const n = await node({
    REDIS_URL,
    NAMESPACE: namespace(),
    RATE_LIMIT_RPS: "0",
    RATE_LIMIT_BURST: "1",
    RATE_LIMIT_LAB_STARTS_PER_MIN: "0",
    RATE_LIMIT_LOGIN_PER_MIN: "0",
  });
  const token = await p.token("admin");
  for (let i = 0; i < 5; i++) {
    const a = await call(n.url, "GET", "/courses", { token });
    expect(a.status).toBe(200);
    expect(a.headers.get("ratelimit-limit")).toBeNull();
  }
  const student = await tokenFor(p, EXTRA_ACCOUNTS.student3);
  for (let i = 0; i < 4; i++) {
    expect((await call(n.url, "POST", "/lab-instances", { token: student, body: NO_SUCH_START })).status).toBe(404);
  }
  for (let i = 0; i < 4; i++) expect((await call(n.url, "GET", "/auth/login")).status).toBe(302);
});

describe("Redis outage", () => {
  let redis: OwnRedis;
  afterAll(async () => {
    await ifAssigned(redis)?.kill();
  });

  it("lets requests through (2xx, logged once per outage), enforces the limits again once Redis is back", async () => {
    redis = await startOwnRedis();
    const n = await node({
      REDIS_URL: redis.url(),
      NAMESPACE: namespace(),
      RATE_LIMIT_RPS: "0.01",
      RATE_LIMIT_BURST: "2",
    });
    type Log = { warn(m: string): void; info(m: string): void };
    const gateway = n.broker.getLocalService("api-gateway") as { logger: Log };
    const warn = jest.spyOn(gateway.logger, "warn");
    const info = jest.spyOn(gateway.logger, "info");
    const outageReports = () => warn.mock.calls.filter(([m]) => /^Rate limits not enforced/.test(m)).length;
    const token = await p.token("teacher");
    const get = () => call(n.url, "GET", "/courses", { token });
    await untilEnforced(n.url, await p.token("admin"));

    expect((await get()).status).toBe(200);
    expect((await get()).status).toBe(200);
    expectRefused(await get(), 2, 100);

    redis.freeze(); // connected, but nothing answers
    for (let i = 0; i < 5; i++) {
      const a = await get();
      expect(a.status).toBe(200);
      expect(a.headers.get("ratelimit-limit")).toBeNull();
    }
    await redis.kill(); // gone
    for (let i = 0; i < 5; i++) expect((await get()).status).toBe(200);
    expect(outageReports()).toBe(1);

    await redis.start(); // back, empty: a full bucket
    let back: Answer;
    do {
      await sleep(100);
      back = await get();
      expect(back.status).toBe(200);
    } while (back.headers.get("ratelimit-limit") === null);
    expect(info.mock.calls.some(([m]) => /^Rate limits enforced again/.test(m))).toBe(true);
    let refused: Answer | undefined;
    for (let i = 0; i < 3 && !refused; i++) {
      const a = await get();
      if (a.status === 429) refused = a;
    }
    expect(refused).toBeDefined();
    expect(outageReports()).toBe(1);
  });
});

it("the Lua script decides exactly like takeAll(), its specification", async () => {
  const quiet = { warn: () => undefined, info: () => undefined };
  const store = new RedisBuckets(REDIS_URL, `ratelimit:${namespace()}:`, quiet);
  await store.connect();
  try {
    // Rates whose products and quotients are inexact in binary: both sides must round alike.
    const limits: BucketLimit[] = [
      { ratePerS: 7 / 3, burst: 3 },
      { ratePerS: 0.7, burst: 2 },
    ];
    const keys = ["{u:1}", "{u:1}:lab-starts"];
    let stored: (BucketState | undefined)[] = [undefined, undefined];
    let seed = 42;
    const random = () => (seed = (seed * 16807) % 2147483647) / 2147483647;
    let allowed = 0;
    let refused = 0;
    for (let i = 0; i < 40; i++) {
      const got = (await store.take(keys, limits)) as TimedTake;
      expect(got).toBeDefined();
      const expected = takeAll(stored, limits, got.nowMs);
      expect({ allowed: got.allowed, states: got.states }).toEqual(expected);
      if (got.allowed) {
        stored = got.states;
        allowed++;
      } else refused++;
      await sleep(Math.floor(random() * 250));
    }
    expect(allowed).toBeGreaterThan(0);
    expect(refused).toBeGreaterThan(0);
  } finally {
    store.close();
  }
});
