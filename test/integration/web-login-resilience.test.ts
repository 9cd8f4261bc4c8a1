/**
 * Outages and rotation, through the platform over HTTP:
 *  - Redis (a dedicated redis-server this test starts on its own port, never the machine's shared one):
 *    paused or killed → cookie requests answer 503 (never anonymous, never a 500) while Bearer requests
 *    keep working; back → sessions work again.
 *  - The IdP down: Bearer tokens and cookie sessions keep working on the warm key cache; a login cannot
 *    complete (its code exchange answers 503).
 *  - The IdP rotates its signing key (restart with a new first key): the next login and new Bearer tokens
 *    verify (unknown kid → one refetch), tokens of the old key still verify while it is published.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { decodeProtectedHeader } from "jose";
import { DEV_CLIENT_SECRET } from "../../services/auth/auth.contract";
import { generateSigningKey } from "../../dev/embedded-idp";
import { TestBrowser, freePort } from "../support/browser";
import { startOwnRedis, type OwnRedis } from "../support/redis-server";
import { startIdp, type TestIdp } from "../support/idp";
import { createTestDatabase, startNode, type PlatformNode, type TestDatabase } from "../support/platform";
import { ifAssigned } from "../support/cleanup";

const FRONT = "http://localhost:3000";
const COOLDOWN_MS = 1000;

let db: TestDatabase;
let idp: TestIdp;
let idpPort: number;
let idpDir: string;
let node: PlatformNode;
let PUBLIC: string;
let API: string;

let redis: OwnRedis;

beforeAll(async () => {
  redis = await startOwnRedis();
  idpDir = mkdtempSync(join(tmpdir(), "autolabs-idp-rot-"));
  const port = await freePort();
  idpPort = await freePort();
  PUBLIC = `http://localhost:${port}`;
  API = `${PUBLIC}/api/v1`;
  [db, idp] = await Promise.all([
    createTestDatabase(),
    startIdp({ port: idpPort, dataDir: idpDir, env: { PUBLIC_URL: PUBLIC, FRONTEND_URL: FRONT } }),
  ]);
  node = await startNode(db.url, {
    PORT: String(port),
    PUBLIC_URL: PUBLIC,
    FRONTEND_URL: FRONT,
    OIDC_ISSUER: idp.issuer,
    OIDC_CLIENT_SECRET: DEV_CLIENT_SECRET,
    OIDC_JWKS_COOLDOWN_MS: String(COOLDOWN_MS),
    REDIS_URL: redis.url(),
  });
});

afterAll(async () => {
  await ifAssigned(node)?.stop();
  await ifAssigned(redis)?.kill();
  await Promise.allSettled([ifAssigned(db)?.drop(), ifAssigned(idp)?.stop()]);
  rmSync(idpDir, { recursive: true, force: true });
});

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const browser = () => new TestBrowser({ frontendUrl: FRONT });
const me = (b: TestBrowser) => b.api("GET", `${API}/auth/me`);
const bearerMe = (token: string) => fetch(`${API}/auth/me`, { headers: { authorization: `Bearer ${token}` } });

describe("Redis down: cookie sessions 503, Bearer unaffected", () => {
  it("paused Redis (commands time out) → 503; resumed → the same session works again", async () => {
    const b = browser();
    await b.login(`${API}/auth/login`, "teacher");
    const { accessToken } = await idp.getToken("teacher");
    expect((await me(b)).status).toBe(200);

    redis.freeze();
    try {
      const res = await me(b);
      expect(res.status).toBe(503);
      expect(res.json<{ detail: string }>().detail).toMatch(/Session store unavailable/);
      // A cookie-authenticated change is refused the same way (not let through anonymously, not a 500).
      expect((await b.api("POST", `${API}/courses`, { name: "while paused" })).status).toBe(503);
      expect((await bearerMe(accessToken)).status).toBe(200);
    } finally {
      redis.resume();
    }
    await sleep(200);
    expect((await me(b)).status).toBe(200);
  });

  it("killed Redis → 503 for cookies (also login and logout), Bearer works; back (empty) → cookies anonymous, login works", async () => {
    const b = browser();
    await b.login(`${API}/auth/login`, "student");
    const { accessToken } = await idp.getToken("student");
    await redis.kill();

    const res = await me(b);
    expect(res.status).toBe(503);
    expect((await b.api("POST", `${API}/auth/logout`)).status).toBe(503);
    const login = await b.request("GET", `${API}/auth/login`);
    expect(login.status).toBe(503);
    expect(login.headers.get("location")).toBeNull();
    const bearer = await bearerMe(accessToken);
    expect(bearer.status).toBe(200);
    expect(await bearer.json()).toMatchObject({ role: "student" });
    // Reads and writes by Bearer too.
    expect((await fetch(`${API}/courses`, { headers: { authorization: `Bearer ${accessToken}` } })).status).toBe(200);

    // Redis back, without the data (no persistence): the old cookie is simply not a session any more.
    await redis.start();
    let status = 0;
    for (let i = 0; i < 30 && status !== 401; i++) {
      status = (await me(b)).status;
      if (status !== 401) await sleep(200);
    }
    expect(status).toBe(401);
    await b.login(`${API}/auth/login`, "student");
    expect((await me(b)).status).toBe(200);
  });
});

describe("the IdP down, then rotating its key", () => {
  it("warm caches keep Bearer tokens and sessions working while the IdP is down", async () => {
    const b = browser();
    await b.login(`${API}/auth/login`, "teacher");
    const { accessToken } = await idp.getToken("teacher");
    expect((await bearerMe(accessToken)).status).toBe(200);
    await idp.stop();
    try {
      await sleep(COOLDOWN_MS + 100);
      expect((await bearerMe(accessToken)).status).toBe(200);
      expect((await me(b)).status).toBe(200);
      expect((await b.api("POST", `${API}/courses`, { name: "IdP down, still working" })).status).toBe(201);
    } finally {
      idp = await startIdp({ port: idpPort, dataDir: idpDir, env: { PUBLIC_URL: PUBLIC, FRONTEND_URL: FRONT } });
    }
  });

  it("a code exchange while the IdP is down → 503, nothing created", async () => {
    const b = browser();
    const cb = await b.loginUntilCallback(`${API}/auth/login`, "student2");
    await idp.stop();
    try {
      const res = await b.request("GET", cb);
      expect(res.status).toBe(503);
      expect(res.headers.get("set-cookie")).toBeNull();
    } finally {
      idp = await startIdp({ port: idpPort, dataDir: idpDir, env: { PUBLIC_URL: PUBLIC, FRONTEND_URL: FRONT } });
    }
  });

  it("key rotation: the next login and new tokens verify under the new kid; old tokens while the old key is published", async () => {
    const { accessToken: oldToken } = await idp.getToken("teacher");
    const oldKid = decodeProtectedHeader(oldToken).kid;
    expect((await bearerMe(oldToken)).status).toBe(200);

    // Rotate: a new key goes first (it signs), the old one stays published.
    await idp.stop();
    const jwks = idp.privateJwks();
    const fresh = generateSigningKey("RS256");
    writeFileSync(join(idpDir, "idp", "jwks.json"), JSON.stringify({ keys: [fresh, ...jwks.keys] }));
    idp = await startIdp({ port: idpPort, dataDir: idpDir, env: { PUBLIC_URL: PUBLIC, FRONTEND_URL: FRONT } });
    await sleep(COOLDOWN_MS + 100);

    const { accessToken: newToken } = await idp.getToken("teacher");
    expect(decodeProtectedHeader(newToken).kid).toBe(fresh.kid);
    expect(fresh.kid).not.toBe(oldKid);
    expect((await bearerMe(newToken)).status).toBe(200);
    expect((await bearerMe(oldToken)).status).toBe(200);

    // The browser login's ID token is signed with the new key too.
    const b = browser();
    await b.login(`${API}/auth/login`, "teacher");
    expect((await me(b)).json()).toMatchObject({ role: "teacher" });
  });
});
