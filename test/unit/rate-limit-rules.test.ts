import {
  bucketsFor,
  clientAddress,
  perMinute,
  perSecond,
  rateLimitHeaders,
  refill,
  takeAll,
  verdictOf,
  type BucketLimit,
  type RateLimits,
} from "../../services/api-gateway/rate-limit.rules";
import { MemoryBuckets } from "../../services/api-gateway/rate-limit";

const TEN_PER_S: BucketLimit = { ratePerS: 10, burst: 5 };
const TWO_PER_MIN: BucketLimit = { ratePerS: 2 / 60, burst: 2 };

describe("refill", () => {
  it("starts full, adds rate × elapsed, never past the burst", () => {
    expect(refill(undefined, TEN_PER_S, 1000)).toEqual({ tokens: 5, atMs: 1000 });
    expect(refill({ tokens: 1, atMs: 1000 }, TEN_PER_S, 1200)).toEqual({ tokens: 3, atMs: 1200 });
    expect(refill({ tokens: 1, atMs: 1000 }, TEN_PER_S, 60_000)).toEqual({ tokens: 5, atMs: 60_000 });
  });

  it("adds nothing and keeps its time when the clock went back", () => {
    expect(refill({ tokens: 1.5, atMs: 5000 }, TEN_PER_S, 4000)).toEqual({ tokens: 1.5, atMs: 5000 });
  });
});

describe("takeAll", () => {
  it("allows a burst, refuses the next, and allows again once a token has refilled", () => {
    let states = [undefined] as ({ tokens: number; atMs: number } | undefined)[];
    for (let i = 0; i < 5; i++) {
      const t = takeAll(states, [TEN_PER_S], 0);
      expect(t.allowed).toBe(true);
      states = t.states;
    }
    expect(states[0]?.tokens).toBe(0);
    expect(takeAll(states, [TEN_PER_S], 99).allowed).toBe(false);
    const later = takeAll(states, [TEN_PER_S], 100);
    expect(later.allowed).toBe(true);
    expect(later.states[0]?.tokens).toBeCloseTo(0, 10);
  });

  it("takes from every bucket or from none", () => {
    const both = takeAll(
      [
        { tokens: 3, atMs: 0 },
        { tokens: 1, atMs: 0 },
      ],
      [TEN_PER_S, TWO_PER_MIN],
      0,
    );
    expect(both).toEqual({
      allowed: true,
      states: [
        { tokens: 2, atMs: 0 },
        { tokens: 0, atMs: 0 },
      ],
    });
    const refused = takeAll(both.states, [TEN_PER_S, TWO_PER_MIN], 0);
    expect(refused).toEqual({ allowed: false, states: both.states });
  });
});

describe("verdictOf and rateLimitHeaders", () => {
  it("describes the bucket closest to running out while requests pass", () => {
    const take = {
      allowed: true,
      states: [
        { tokens: 4, atMs: 0 },
        { tokens: 1.5, atMs: 0 },
      ],
    };
    const v = verdictOf(take, [TEN_PER_S, TWO_PER_MIN]);
    // 0.5 token missing at 2/min: 15 s until full.
    expect(v).toEqual({ allowed: true, limit: 2, remaining: 1, resetS: 15 });
    expect(rateLimitHeaders(v)).toEqual({
      "RateLimit-Limit": "2",
      "RateLimit-Remaining": "1",
      "RateLimit-Reset": "15",
    });
  });

  it("on a refusal: the bucket that keeps the client waiting longest, Retry-After rounded up", () => {
    const v = verdictOf(
      {
        allowed: false,
        states: [
          { tokens: 0.2, atMs: 0 },
          { tokens: 0.5, atMs: 0 },
        ],
      },
      [TEN_PER_S, TWO_PER_MIN],
    );
    // 0.5 token at 2/min = 15 s; the other bucket would need 0.08 s.
    expect(v).toEqual({ allowed: false, limit: 2, remaining: 0, resetS: 45, retryAfterS: 15 });
    expect(rateLimitHeaders(v)).toMatchObject({ "Retry-After": "15", "RateLimit-Remaining": "0" });
  });

  it("never says Retry-After: 0 (a sub-second wait is 1 s)", () => {
    const v = verdictOf({ allowed: false, states: [{ tokens: 0.99, atMs: 0 }] }, [TEN_PER_S]);
    expect(v.retryAfterS).toBe(1);
  });

  it("ignores a bucket that still has tokens when choosing what a refusal reports", () => {
    const take = {
      allowed: false,
      states: [
        { tokens: 0, atMs: 0 },
        { tokens: 2, atMs: 0 },
      ],
    };
    const v = verdictOf(take, [TEN_PER_S, TWO_PER_MIN]);
    expect(v).toMatchObject({ limit: 5, retryAfterS: 1 });
  });
});

describe("bucketsFor", () => {
  const limits: RateLimits = { user: TEN_PER_S, labStarts: TWO_PER_MIN, login: TWO_PER_MIN };

  it("draws a signed-in user's requests from their bucket, lab starts also from the lab-start bucket", () => {
    expect(bucketsFor({ action: "courses.list", userId: 7, client: "10.0.0.1" }, limits)).toEqual([
      { key: "{u:7}", limit: TEN_PER_S },
    ]);
    expect(bucketsFor({ action: "lab-instances.create", userId: 7, client: "10.0.0.1" }, limits)).toEqual([
      { key: "{u:7}", limit: TEN_PER_S },
      { key: "{u:7}:lab-starts", limit: TWO_PER_MIN },
    ]);
    // The event stream is a custom alias (no action): the user's bucket.
    expect(bucketsFor({ action: undefined, userId: 7, client: "10.0.0.1" }, limits)).toHaveLength(1);
  });

  it("limits the login per client address, and nothing else that is anonymous", () => {
    for (const action of ["auth.login", "auth.callback"]) {
      expect(bucketsFor({ action, userId: undefined, client: "10.0.0.1" }, limits)).toEqual([
        { key: "{ip:10.0.0.1}:login", limit: TWO_PER_MIN },
      ]);
    }
    expect(bucketsFor({ action: "api-gateway.health", userId: undefined, client: "10.0.0.1" }, limits)).toEqual([]);
    expect(bucketsFor({ action: "auth.logout", userId: undefined, client: "10.0.0.1" }, limits)).toEqual([]);
  });

  it("skips a limit that is off", () => {
    expect(bucketsFor({ action: "lab-instances.create", userId: 7, client: "x" }, {})).toEqual([]);
    expect(bucketsFor({ action: "auth.login", userId: undefined, client: "x" }, { user: TEN_PER_S })).toEqual([]);
  });

  it("turns 0 into off", () => {
    expect(perSecond(0, 100)).toBeUndefined();
    expect(perSecond(20, 0)).toBeUndefined();
    expect(perSecond(20, 100)).toEqual({ ratePerS: 20, burst: 100 });
    expect(perMinute(0)).toBeUndefined();
    expect(perMinute(10)).toEqual({ ratePerS: 10 / 60, burst: 10 });
  });
});

describe("clientAddress", () => {
  it("is the socket's peer when no proxy is trusted, whatever X-Forwarded-For claims", () => {
    expect(clientAddress("10.1.2.3", "198.51.100.7", 0)).toBe("10.1.2.3");
  });

  it("takes the entry the trusted proxies wrote, never the client's own entries", () => {
    // client → ingress (appends the client's address) → gateway
    expect(clientAddress("10.0.0.9", "198.51.100.7", 1)).toBe("198.51.100.7");
    expect(clientAddress("10.0.0.9", "6.6.6.6, 198.51.100.7", 1)).toBe("198.51.100.7");
    // client → CDN → ingress → gateway
    expect(clientAddress("10.0.0.9", "6.6.6.6, 198.51.100.7, 172.16.0.4", 2)).toBe("198.51.100.7");
    expect(clientAddress("10.0.0.9", ["6.6.6.6", "198.51.100.7"], 1)).toBe("198.51.100.7");
  });

  it("falls back to the leftmost entry when fewer proxies wrote than trusted, to the peer without a header", () => {
    expect(clientAddress("10.0.0.9", "198.51.100.7", 3)).toBe("198.51.100.7");
    expect(clientAddress("10.0.0.9", undefined, 1)).toBe("10.0.0.9");
  });

  it("keys IPv4-mapped addresses as IPv4 and IPv6 by their /64", () => {
    expect(clientAddress("::ffff:127.0.0.1", undefined, 0)).toBe("127.0.0.1");
    expect(clientAddress("2001:db8:1:2:aaaa::1", undefined, 0)).toBe("2001:db8:1:2::/64");
    expect(clientAddress("2001:DB8:1:2:bbbb:cccc:dddd:1", undefined, 0)).toBe("2001:db8:1:2::/64");
    expect(clientAddress("2001:db8::1", undefined, 0)).toBe("2001:db8:0:0::/64");
    expect(clientAddress("::1", undefined, 0)).toBe("0:0:0:0::/64");
    expect(clientAddress("10.0.0.9", "[2001:db8:1:2::5]", 1)).toBe("2001:db8:1:2::/64");
  });

  it("keeps something that is not an address apart and bounded", () => {
    expect(clientAddress("10.0.0.9", "unknown", 1)).toBe("other:unknown");
    expect(clientAddress("10.0.0.9", "x".repeat(500), 1)).toBe(`other:${"x".repeat(64)}`);
  });
});

describe("MemoryBuckets", () => {
  it("follows takeAll and stores nothing for a refused request", async () => {
    let now = 0;
    const store = new MemoryBuckets(10, () => now);
    for (let i = 0; i < 5; i++) expect((await store.take(["a"], [TEN_PER_S])).allowed).toBe(true);
    expect((await store.take(["a"], [TEN_PER_S])).allowed).toBe(false);
    now = 100;
    expect((await store.take(["a"], [TEN_PER_S])).allowed).toBe(true);
    expect((await store.take(["a"], [TEN_PER_S])).allowed).toBe(false);
  });

  it("stays within its size, forgetting the least recently used bucket first", async () => {
    const store = new MemoryBuckets(3, () => 0);
    for (const key of ["a", "b", "c"]) await store.take([key], [TWO_PER_MIN]);
    await store.take(["a"], [TWO_PER_MIN]); // a: now empty, and the most recently used
    await store.take(["d"], [TWO_PER_MIN]); // evicts b
    expect(store.size).toBe(3);
    expect((await store.take(["a"], [TWO_PER_MIN])).allowed).toBe(false); // a was kept
    expect((await store.take(["b"], [TWO_PER_MIN])).states[0].tokens).toBe(1); // b starts afresh
  });
});
