/**
 * The verified-token cache answers only what a fresh verification would: jose's time rule on every hit
 * (exp, nbf, clock tolerance, whole seconds), the key set generation it was verified against, a bound.
 */
import { createVerifiedTokenCache } from "../../services/auth/verified-token-cache";

const T0 = Date.UTC(2026, 11, 2, 3, 0, 0);
let nowMs = T0;
const cacheOf = (maxEntries = 100, clockToleranceS = 30) =>
  createVerifiedTokenCache<string>({ maxEntries, clockToleranceS, now: () => nowMs });
const s = (ms: number) => Math.floor(ms / 1000);

beforeEach(() => {
  nowMs = T0;
});

it("a token is answered until exp + tolerance, exactly as jose counts (exp <= now - tolerance is expired)", () => {
  const cache = cacheOf(100, 30);
  const exp = s(T0) + 60;
  cache.set("tok", { exp }, 1, "payload");
  expect(cache.get("tok", 1)).toBe("payload");
  nowMs = (exp + 29) * 1000 + 999; // now - tolerance = exp - 1: still valid for jose
  expect(cache.get("tok", 1)).toBe("payload");
  nowMs = (exp + 30) * 1000; // exp <= now - tolerance: expired
  expect(cache.get("tok", 1)).toBeUndefined();
  // Refused once, gone: a clock stepping back does not bring it back (the full check decides again).
  nowMs = T0;
  expect(cache.get("tok", 1)).toBeUndefined();
});

it("without tolerance a token past exp is refused at once, even though it is cached", () => {
  const cache = cacheOf(100, 0);
  const exp = s(T0) + 1;
  cache.set("tok", { exp }, 1, "payload");
  nowMs = exp * 1000 - 1;
  expect(cache.get("tok", 1)).toBe("payload");
  nowMs = exp * 1000;
  expect(cache.get("tok", 1)).toBeUndefined();
});

it("nbf is checked on every hit (a clock stepping back makes a token not yet valid again)", () => {
  const cache = cacheOf(100, 30);
  const nbf = s(T0);
  cache.set("tok", { exp: nbf + 3600, nbf }, 1, "payload");
  nowMs = (nbf - 30) * 1000; // nbf <= now + tolerance
  expect(cache.get("tok", 1)).toBe("payload");
  nowMs = (nbf - 31) * 1000; // nbf > now + tolerance
  expect(cache.get("tok", 1)).toBeUndefined();
});

it("an entry verified against another key set generation misses (rotation, refetch)", () => {
  const cache = cacheOf();
  cache.set("tok", { exp: s(T0) + 600 }, 1, "payload");
  expect(cache.get("tok", 2)).toBeUndefined();
  // and is dropped, not revived by the old generation
  expect(cache.get("tok", 1)).toBeUndefined();
  expect(cache.size).toBe(0);
});

it("is bounded: the least recently used token goes first", () => {
  const cache = cacheOf(3);
  const exp = s(T0) + 600;
  for (const t of ["a", "b", "c"]) cache.set(t, { exp }, 1, t);
  expect(cache.get("a", 1)).toBe("a"); // a is now the most recent
  cache.set("d", { exp }, 1, "d");
  expect(cache.size).toBe(3);
  expect(cache.get("b", 1)).toBeUndefined();
  expect(["a", "c", "d"].map((t) => cache.get(t, 1))).toEqual(["a", "c", "d"]);
  for (let i = 0; i < 1000; i++) cache.set(`t${i}`, { exp }, 1, "x");
  expect(cache.size).toBe(3);
});

it("tokens are told apart by their full text", () => {
  const cache = cacheOf();
  cache.set("header.payload.sig1", { exp: s(T0) + 600 }, 1, "one");
  expect(cache.get("header.payload.sig2", 1)).toBeUndefined();
  expect(cache.get("header.payload.sig1", 1)).toBe("one");
});

it("refuses a size below one", () => {
  expect(() => cacheOf(0)).toThrow(/maxEntries/);
});
