/**
 * JWKS handling of the token verifier against a real HTTP key server that counts its requests:
 * keys cached; an unknown kid refetches at most once per cooldown (however many arrive, concurrently or
 * not); rotated keys are picked up; an IdP that is down is survived on a warm cache (and asked at most
 * once per cooldown), while a cold cache answers 503.
 */
import { createServer, type Server } from "node:http";
import type { AddressInfo } from "node:net";
import { exportJWK, generateKeyPair, SignJWT, type CryptoKey, type JWK } from "jose";
import { createTokenVerifier, type TokenVerifierOptions } from "../../services/auth/token-verifier";

const AUD = "autolabs-api";
const COOLDOWN_MS = 600;

interface Key {
  kid: string;
  alg: "RS256" | "ES256";
  priv: CryptoKey;
  pub: JWK;
}

async function newKey(kid: string, alg: "RS256" | "ES256" = "RS256"): Promise<Key> {
  const { privateKey, publicKey } = await generateKeyPair(alg, { extractable: true });
  return { kid, alg, priv: privateKey, pub: { ...(await exportJWK(publicKey)), kid, alg, use: "sig" } };
}

/** The key server: discovery + JWKS; `published` and `status` are changed by the tests. */
class KeyServer {
  published: Key[] = [];
  status = 200;
  jwksHits = 0;
  private server!: Server;
  issuer = "";

  async start(): Promise<void> {
    this.server = createServer((req, res) => {
      if (req.url === "/.well-known/openid-configuration") {
        res.writeHead(200, { "content-type": "application/json" });
        res.end(JSON.stringify({ issuer: this.issuer, jwks_uri: `${this.issuer}/jwks` }));
        return;
      }
      if (req.url === "/jwks") {
        this.jwksHits++;
        res.writeHead(this.status, { "content-type": "application/json" });
        res.end(this.status === 200 ? JSON.stringify({ keys: this.published.map((k) => k.pub) }) : "{}");
        return;
      }
      res.writeHead(404).end();
    });
    await new Promise<void>((r) => this.server.listen(0, "127.0.0.1", () => r()));
    this.issuer = `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  async stop(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

let ks: KeyServer;
beforeEach(async () => {
  ks = new KeyServer();
  await ks.start();
});
afterEach(async () => {
  await ks.stop().catch(() => undefined);
});

const verifierFor = (over: Partial<TokenVerifierOptions> = {}) =>
  createTokenVerifier({
    issuer: ks.issuer,
    audience: AUD,
    algorithms: ["RS256", "ES256"],
    clockToleranceS: 30,
    jwksCooldownMs: COOLDOWN_MS,
    ...over,
  });

const tokenBy = (key: Key, sub = "310000000000000002") =>
  new SignJWT({ sub })
    .setProtectedHeader({ alg: key.alg, kid: key.kid })
    .setIssuer(ks.issuer)
    .setAudience(AUD)
    .setIssuedAt()
    .setExpirationTime("10m")
    .sign(key.priv);

const outcome = (p: Promise<unknown>) =>
  p.then(
    () => 200,
    (e: unknown) => (e as { code?: number }).code ?? 500,
  );
const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

it("caches keys: many verifications, one fetch", async () => {
  const k1 = await newKey("k1");
  ks.published = [k1];
  const v = verifierFor();
  for (let i = 0; i < 20; i++) expect(await outcome(v.verify(await tokenBy(k1)))).toBe(200);
  expect(ks.jwksHits).toBe(1);
});

it("unknown kids refetch at most once per cooldown, however many arrive", async () => {
  const k1 = await newKey("k1");
  ks.published = [k1];
  // Keys first: RSA key generation takes longer than the cooldown.
  const strangers = await Promise.all(Array.from({ length: 10 }, (_, i) => newKey(`stranger-${i}`, "ES256")));
  const forged = await Promise.all(strangers.map((k) => tokenBy(k)));
  const v = verifierFor();
  await v.verify(await tokenBy(k1));
  expect(ks.jwksHits).toBe(1);
  // Within the cooldown of the last fetch: no refetch at all.
  expect(await Promise.all(forged.map((t) => outcome(v.verify(t))))).toEqual(forged.map(() => 401));
  expect(ks.jwksHits).toBe(1);
  // After it: a burst (concurrent and sequential) costs one refetch.
  await sleep(COOLDOWN_MS + 50);
  expect(await Promise.all(forged.map((t) => outcome(v.verify(t))))).toEqual(forged.map(() => 401));
  for (const t of forged) expect(await outcome(v.verify(t))).toBe(401);
  expect(ks.jwksHits).toBe(2);
});

it("rotation: a new signing key is picked up (after the cooldown), the old one keeps working while published", async () => {
  const k1 = await newKey("k1");
  ks.published = [k1];
  const v = verifierFor();
  const old = await tokenBy(k1);
  expect(await outcome(v.verify(old))).toBe(200);
  const k2 = await newKey("k2", "ES256");
  ks.published = [k2, k1];
  await sleep(COOLDOWN_MS + 50);
  expect(await outcome(v.verify(await tokenBy(k2)))).toBe(200);
  expect(ks.jwksHits).toBe(2);
  expect(await outcome(v.verify(old))).toBe(200);
  expect(ks.jwksHits).toBe(2);
});

it("IdP down: a warm cache keeps verifying (asking the IdP at most once per cooldown); a cold cache → 503", async () => {
  const k1 = await newKey("k1");
  ks.published = [k1];
  // A short max age, so the cache is stale and every verification would want to refetch.
  const warm = verifierFor({ jwksMaxAgeMs: 100 });
  expect(await outcome(warm.verify(await tokenBy(k1)))).toBe(200);
  ks.status = 503;
  await sleep(150);
  const hitsBefore = ks.jwksHits;
  for (let i = 0; i < 10; i++) expect(await outcome(warm.verify(await tokenBy(k1)))).toBe(200);
  expect(ks.jwksHits - hitsBefore).toBe(1);
  // A kid the last good keys lack cannot be judged while the IdP is down: 503, not 401.
  expect(await outcome(warm.verify(await tokenBy(await newKey("k-new", "ES256"))))).toBe(503);
  // Entirely unreachable.
  await ks.stop();
  await sleep(COOLDOWN_MS + 50);
  expect(await outcome(warm.verify(await tokenBy(k1)))).toBe(200);
  expect(await outcome(verifierFor().verify(await tokenBy(k1)))).toBe(503);
});

it("the IdP coming back is noticed after the cooldown", async () => {
  const k1 = await newKey("k1");
  ks.published = [k1];
  const k2 = await newKey("k2");
  const v = verifierFor({ jwksMaxAgeMs: 100 });
  expect(await outcome(v.verify(await tokenBy(k1)))).toBe(200);
  ks.status = 500;
  await sleep(150);
  expect(await outcome(v.verify(await tokenBy(k1)))).toBe(200);
  ks.published = [k2, k1];
  ks.status = 200;
  // Still backing off: the new key is not known yet.
  expect(await outcome(v.verify(await tokenBy(k2)))).toBe(503);
  await sleep(COOLDOWN_MS + 50);
  expect(await outcome(v.verify(await tokenBy(k2)))).toBe(200);
});

describe("verified tokens are remembered, never beyond what a fresh check would accept", () => {
  const signatureChecks = () => jest.spyOn(globalThis.crypto.subtle, "verify");
  afterEach(() => jest.restoreAllMocks());

  it("the signature of a token is checked once per key set, not once per request", async () => {
    const k1 = await newKey("k1");
    ks.published = [k1];
    const v = verifierFor();
    // Keys loaded first: a token checked while its key set loads is not remembered (it could be the old set).
    expect(await outcome(v.verify(await tokenBy(k1, "310000000000000004")))).toBe(200);
    const token = await tokenBy(k1);
    const checks = signatureChecks();
    for (let i = 0; i < 5; i++) expect(await outcome(v.verify(token))).toBe(200);
    expect(checks).toHaveBeenCalledTimes(1);
    // Another token is checked on its own; a tampered copy of the first never matches it.
    expect(await outcome(v.verify(await tokenBy(k1, "310000000000000003")))).toBe(200);
    expect(await outcome(v.verify(`${token.slice(0, -4)}AAAA`))).toBe(401);
    expect(checks).toHaveBeenCalledTimes(3);
  });

  it("a cached token past exp is refused", async () => {
    const k1 = await newKey("k1");
    ks.published = [k1];
    const v = verifierFor({ clockToleranceS: 0 });
    const exp = Math.floor(Date.now() / 1000) + 2;
    const token = await new SignJWT({ sub: "310000000000000002" })
      .setProtectedHeader({ alg: "RS256", kid: "k1" })
      .setIssuer(ks.issuer)
      .setAudience(AUD)
      .setExpirationTime(exp)
      .sign(k1.priv);
    expect(await outcome(v.verify(token))).toBe(200);
    expect(await outcome(v.verify(token))).toBe(200);
    while (Date.now() < exp * 1000) await sleep(100);
    await expect(v.verify(token)).rejects.toMatchObject({ code: 401, message: "Token expired" });
  });

  it("a cached token of a key rotated out is refused once a key set without it is loaded (max age)", async () => {
    const k1 = await newKey("k1");
    const k2 = await newKey("k2");
    ks.published = [k1];
    const v = verifierFor({ jwksMaxAgeMs: 300 });
    const old = await tokenBy(k1);
    expect(await outcome(v.verify(old))).toBe(200);
    expect(await outcome(v.verify(old))).toBe(200);
    ks.published = [k2];
    await sleep(350);
    expect(await outcome(v.verify(old))).toBe(401);
    expect(await outcome(v.verify(await tokenBy(k2)))).toBe(200);
  });

  it("a cached token of a key rotated out is refused once a new kid made the verifier refetch", async () => {
    const k1 = await newKey("k1");
    const k2 = await newKey("k2");
    ks.published = [k1];
    const v = verifierFor();
    const old = await tokenBy(k1);
    expect(await outcome(v.verify(old))).toBe(200);
    ks.published = [k2];
    await sleep(COOLDOWN_MS + 50);
    expect(await outcome(v.verify(await tokenBy(k2)))).toBe(200);
    expect(ks.jwksHits).toBe(2);
    expect(await outcome(v.verify(old))).toBe(401);
  });

  it("ID token checks (other audience) are never answered from the cache", async () => {
    const k1 = await newKey("k1");
    ks.published = [k1];
    const v = verifierFor();
    const token = await tokenBy(k1);
    expect(await outcome(v.verify(token))).toBe(200);
    expect(await outcome(v.verify(token, { audience: "autolabs-cli" }))).toBe(401);
  });
});
