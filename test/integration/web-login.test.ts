/**
 * The browser login end to end, over real HTTP: the platform (real PostgreSQL, sessions in the real Redis,
 * db 7), the embedded IdP as a child process, and a headless browser (cookie jars, redirects, the IdP's
 * HTML login form). login → IdP → callback → cookie → /auth/me → a state-changing call → logout → 401,
 * and every way the flow must refuse: state (missing, replayed, forged, from another browser), nonce, IdP
 * errors, open redirects, tampered/expired cookies, cross-site requests, role changes at the IdP.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Redis from "ioredis";
import { DEV_CLIENT_SECRET } from "../../services/auth/auth.contract";
import { digestOf } from "../../lib/web-session.rules";
import { TestBrowser, freePort, setCookieNamed } from "../support/browser";
import { startIdp, type TestIdp } from "../support/idp";
import { createTestDatabase, startNode, type PlatformNode, type TestDatabase } from "../support/platform";
import { ifAssigned } from "../support/cleanup";

const REDIS_URL = process.env.TEST_SESSION_REDIS_URL ?? "redis://127.0.0.1:6379/7";
const FRONT = "http://localhost:3000";
const NS = `wl${randomBytes(4).toString("hex")}`;
const USERS_CACHE_TTL_S = 2;

let db: TestDatabase;
let idp: TestIdp;
let node: PlatformNode;
let redis: Redis;
let dir: string;
let accountsFile: string;
let PUBLIC: string;
let API: string;
let LOGIN: string;

/** Accounts the IdP has besides the demo ones (rewritten by tests: the IdP re-reads the file at every use). */
function setAccounts(accounts: Record<string, { roles: string[]; name?: string }>): void {
  writeFileSync(accountsFile, JSON.stringify(accounts));
}

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "autolabs-weblogin-"));
  accountsFile = join(dir, "accounts.json");
  setAccounts({});
  const port = await freePort();
  PUBLIC = `http://localhost:${port}`;
  API = `${PUBLIC}/api/v1`;
  LOGIN = `${API}/auth/login`;
  [db, idp] = await Promise.all([
    createTestDatabase(),
    startIdp({ env: { PUBLIC_URL: PUBLIC, FRONTEND_URL: FRONT, EMBEDDED_IDP_ACCOUNTS_FILE: accountsFile } }),
  ]);
  node = await startNode(db.url, {
    PORT: String(port),
    PUBLIC_URL: PUBLIC,
    FRONTEND_URL: FRONT,
    OIDC_ISSUER: idp.issuer,
    OIDC_CLIENT_SECRET: DEV_CLIENT_SECRET,
    REDIS_URL,
    NAMESPACE: NS,
    USERS_CACHE_TTL_S: String(USERS_CACHE_TTL_S),
  });
  redis = new Redis(REDIS_URL, { lazyConnect: true });
  await redis.connect();
});

afterAll(async () => {
  if (ifAssigned(redis)) {
    const keys = await redis.keys(`${NS}:*`);
    if (keys.length) await redis.del(...keys);
    redis.disconnect();
  }
  await ifAssigned(node)?.stop();
  await Promise.allSettled([ifAssigned(db)?.drop(), ifAssigned(idp)?.stop()]);
  rmSync(dir, { recursive: true, force: true });
});

const newBrowser = () => new TestBrowser({ frontendUrl: FRONT });

async function count(sql: string, bind: Record<string, unknown> = {}): Promise<number> {
  const [rows] = await node.sequelize.query(`SELECT count(*)::int AS n FROM (${sql}) q`, { bind });
  return (rows as { n: number }[])[0].n;
}
const sessionKeys = () => redis.keys(`${NS}:auth:session:*`);
const stateKeys = () => redis.keys(`${NS}:auth:state:*`);

async function loggedIn(account: string): Promise<{ browser: TestBrowser; sid: string }> {
  const browser = newBrowser();
  await browser.login(LOGIN, account);
  const sid = browser.cookie(PUBLIC, "autolabs_session");
  if (!sid) throw new Error("no session cookie after login");
  return { browser, sid };
}

describe("the whole browser flow", () => {
  it("login → IdP → callback → cookie → /auth/me → a change → logout → 401", async () => {
    const browser = newBrowser();
    const before = await sessionKeys();
    const result = await browser.login(LOGIN, "teacher");

    // 1. /auth/login: 302 to the IdP's authorization endpoint with PKCE S256, state and nonce.
    const first = result.hops[0];
    expect(first).toMatchObject({ method: "GET", url: LOGIN, status: 302 });
    const authorize = new URL(first.location!);
    expect(authorize.origin).toBe(idp.issuer);
    const q = authorize.searchParams;
    expect(q.get("response_type")).toBe("code");
    expect(q.get("client_id")).toBe(node.config.oidc.clientId);
    expect(q.get("redirect_uri")).toBe(`${API}/auth/callback`);
    expect(q.get("scope")!.split(" ")).toContain("openid");
    expect(q.get("code_challenge_method")).toBe("S256");
    expect(q.get("code_challenge")).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(q.get("state")).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(q.get("nonce")).toMatch(/^[A-Za-z0-9_-]{43}$/);
    expect(q.get("nonce")).not.toBe(q.get("state"));
    // The login cookie binds the pending login to this browser.
    expect(setCookieNamed(first.setCookies, "autolabs_login")).toMatch(
      /^autolabs_login=[A-Za-z0-9_-]{43}; Path=\/; Max-Age=600; HttpOnly; SameSite=Lax$/,
    );

    // 2. The IdP's login page was shown and posted; the callback set the session cookie and sent us to FRONTEND_URL.
    expect(result.hops.some((h) => h.url.startsWith(`${idp.issuer}/interaction/`) && h.status === 200)).toBe(true);
    expect(result.landedAt).toBe(new URL(FRONT).href);
    const cookie = setCookieNamed(result.callbackCookies, "autolabs_session");
    expect(cookie).toMatch(/^autolabs_session=[A-Za-z0-9_-]{43}; Path=\/; Max-Age=3600; HttpOnly; SameSite=Lax$/);
    expect(cookie).not.toMatch(/Secure/); // PUBLIC_URL is http here (the https case: web-login-idp2.test.ts)

    // 3. The session is in Redis under the SHA-256 of its id (never the id itself), fixed 1 h TTL.
    const sid = browser.cookie(PUBLIC, "autolabs_session")!;
    const after = await sessionKeys();
    expect(after.length).toBe(before.length + 1);
    const key = `${NS}:auth:session:${digestOf(sid)}`;
    expect(after).toContain(key);
    expect(after.join(" ")).not.toContain(sid);
    const ttl = await redis.ttl(key);
    expect(ttl).toBeGreaterThan(3590);
    expect(ttl).toBeLessThanOrEqual(3600);
    expect(await redis.get(key)).not.toContain(sid);

    // 4. /auth/me with the cookie alone.
    const me = await browser.api("GET", `${API}/auth/me`);
    expect(me.status).toBe(200);
    const user = me.json<Record<string, unknown>>();
    expect(user).toMatchObject({ email: "teacher@autolabs.local", name: "Demo Teacher", role: "teacher" });
    for (const f of ["id", "email", "name", "role", "created_at", "last_login_at"]) expect(user).toHaveProperty(f);
    expect(Date.now() - Date.parse(String(user.last_login_at))).toBeLessThan(60_000);

    // 5. A state-changing call, authenticated by the cookie (JSON, from the frontend's origin).
    const created = await browser.api("POST", `${API}/courses`, { name: "Cookies 101" });
    expect(created.status).toBe(201);
    expect(created.json<{ owner_id: number }>().owner_id).toBe(user.id);

    // 6. Logout: 204, the cookie cleared, the session gone from Redis.
    const out = await browser.api("POST", `${API}/auth/logout`);
    expect(out.status).toBe(204);
    expect(out.headers.getSetCookie().join()).toMatch(/autolabs_session=; Path=\/; Max-Age=0;/);
    expect(await redis.exists(key)).toBe(0);
    expect(browser.cookie(PUBLIC, "autolabs_session")).toBeUndefined();

    // 7. Now anonymous: 401; the old cookie, sent again by hand, is dead too.
    expect((await browser.api("GET", `${API}/auth/me`)).status).toBe(401);
    const replay = newBrowser();
    replay.setCookie(PUBLIC, `autolabs_session=${sid}; Path=/`);
    expect((await replay.api("GET", `${API}/auth/me`)).status).toBe(401);

    // 8. Logout is idempotent (no cookie, a dead cookie): 204 each time.
    expect((await browser.api("POST", `${API}/auth/logout`)).status).toBe(204);
    expect((await replay.api("POST", `${API}/auth/logout`)).status).toBe(204);
  });

  it("POST /auth/login (a form's submit) works like GET, and lands on redirect_to", async () => {
    const browser = newBrowser();
    const cb = await browser.navigate(`${LOGIN}?redirect_to=${encodeURIComponent("/courses/7?tab=labs#top")}`, {
      method: "POST",
      headers: { "content-type": "application/x-www-form-urlencoded", origin: FRONT },
      stopBefore: (u) => u.origin === idp.issuer,
    });
    expect(cb.stoppedAt).toMatch(new RegExp(`^${idp.issuer}/auth\\?`));
    const done = await browser.login(cb.stoppedAt!, "student");
    expect(done.landedAt).toBe(`${FRONT}/courses/7?tab=labs#top`);
    expect((await browser.api("GET", `${API}/auth/me`)).json()).toMatchObject({ role: "student" });
  });

  it("a new login replaces the browser's previous session (no fixation)", async () => {
    const { browser, sid: first } = await loggedIn("student");
    await browser.login(LOGIN, "student"); // signed in at the IdP already: no form this time
    const second = browser.cookie(PUBLIC, "autolabs_session")!;
    expect(second).not.toBe(first);
    expect(await redis.exists(`${NS}:auth:session:${digestOf(first)}`)).toBe(0);
    const old = newBrowser();
    old.setCookie(PUBLIC, `autolabs_session=${first}; Path=/`);
    expect((await old.api("GET", `${API}/auth/me`)).status).toBe(401);
    expect((await browser.api("GET", `${API}/auth/me`)).status).toBe(200);
  });

  it("sessions expire at a fixed time: requests do not extend them", async () => {
    const { browser, sid } = await loggedIn("student2");
    const key = `${NS}:auth:session:${digestOf(sid)}`;
    const ttl0 = await redis.pttl(key);
    await new Promise((r) => setTimeout(r, 1100));
    for (let i = 0; i < 3; i++) expect((await browser.api("GET", `${API}/auth/me`)).status).toBe(200);
    expect(await redis.pttl(key)).toBeLessThan(ttl0 - 1000);
  });
});

describe("the login state", () => {
  it("missing state → 400, and the flow's real state still works afterwards", async () => {
    setAccounts({ nostate: { roles: ["student"] } });
    const browser = newBrowser();
    const cb = new URL(await browser.loginUntilCallback(LOGIN, "nostate"));
    const stripped = new URL(cb);
    stripped.searchParams.delete("state");
    const users = await count("SELECT 1 FROM users");
    const res = await browser.request("GET", stripped.href);
    expect(res.status).toBe(400);
    expect(res.json<{ detail: string }>().detail).toMatch(/no state/);
    expect(res.headers.get("set-cookie")).toBeNull();
    expect(await count("SELECT 1 FROM users")).toBe(users);
    // Nothing was consumed: the genuine callback completes.
    expect((await browser.request("GET", cb.href)).status).toBe(302);
  });

  it("a replayed callback → 400 (one use), with nothing created the second time", async () => {
    const browser = newBrowser();
    const cb = await browser.loginUntilCallback(LOGIN, "admin");
    expect((await browser.request("GET", cb)).status).toBe(302);
    const sessions = (await sessionKeys()).length;
    const replay = await browser.request("GET", cb);
    expect(replay.status).toBe(400);
    expect(replay.json<{ detail: string }>().detail).toMatch(/unknown, expired or already used state/);
    expect(replay.headers.get("set-cookie")).toBeNull();
    expect((await sessionKeys()).length).toBe(sessions);
  });

  it("a forged or expired state → 400; the stored state lives at most 10 minutes", async () => {
    const browser = newBrowser();
    const before = (await stateKeys()).length;
    const started = await browser.request("GET", LOGIN);
    const state = new URL(started.headers.get("location")!).searchParams.get("state")!;
    const key = `${NS}:auth:state:${digestOf(state)}`;
    expect((await stateKeys()).length).toBe(before + 1);
    const ttl = await redis.ttl(key);
    expect(ttl).toBeGreaterThan(590);
    expect(ttl).toBeLessThanOrEqual(600);
    const forged = await browser.request("GET", `${API}/auth/callback?code=abc&state=${state.slice(0, -1)}x`);
    expect(forged.status).toBe(400);
    // Expired: the store dropped it.
    await redis.del(key);
    const expired = await browser.request("GET", `${API}/auth/callback?code=abc&state=${state}`);
    expect(expired.status).toBe(400);
    expect(expired.json<{ detail: string }>().detail).toMatch(/expired/);
  });

  it("a callback opened in another browser (code injection / login CSRF) → 400, and the state is spent", async () => {
    setAccounts({ victim: { roles: ["student"] } });
    const attacker = newBrowser();
    const cb = await attacker.loginUntilCallback(LOGIN, "victim");
    const users = await count("SELECT 1 FROM users");
    const sessions = (await sessionKeys()).length;
    const other = newBrowser();
    const res = await other.request("GET", cb);
    expect(res.status).toBe(400);
    expect(res.json<{ detail: string }>().detail).toMatch(/not started in this browser/);
    // One use, even when refused: the right browser cannot complete it afterwards either.
    expect((await attacker.request("GET", cb)).status).toBe(400);
    expect(await count("SELECT 1 FROM users")).toBe(users);
    expect((await sessionKeys()).length).toBe(sessions);
  });

  it("an ID token whose nonce is not this login's → 400, nothing created", async () => {
    setAccounts({ nonceuser: { roles: ["teacher"] } });
    const browser = newBrowser();
    const cb = new URL(await browser.loginUntilCallback(LOGIN, "nonceuser"));
    // The IdP put the login's nonce into the ID token; change the one we expect.
    const key = `${NS}:auth:state:${digestOf(cb.searchParams.get("state")!)}`;
    const stored = JSON.parse((await redis.get(key))!) as { nonce: string };
    await redis.set(key, JSON.stringify({ ...stored, nonce: "A".repeat(43) }), "KEEPTTL");
    const users = await count("SELECT 1 FROM users");
    const res = await browser.request("GET", cb.href);
    expect(res.status).toBe(400);
    expect(res.json<{ detail: string }>().detail).toMatch(/nonce/);
    expect(res.headers.get("set-cookie")).toBeNull();
    expect(await count("SELECT 1 FROM users WHERE email = 'nonceuser@autolabs.local'")).toBe(0);
    expect(await count("SELECT 1 FROM users")).toBe(users);
  });

  it("a code that is not this login's (PKCE verifier mismatch) → 400 with the IdP's error code", async () => {
    const a = newBrowser();
    const cbA = new URL(await a.loginUntilCallback(LOGIN, "student"));
    const b = newBrowser();
    const cbB = new URL(await b.loginUntilCallback(LOGIN, "student"));
    // B's state (and browser) with A's code: the verifier of B's login does not match A's challenge.
    cbB.searchParams.set("code", cbA.searchParams.get("code")!);
    const res = await b.request("GET", cbB.href);
    expect(res.status).toBe(400);
    expect(res.json<{ detail: string }>().detail).toBe("Login failed at the identity provider: invalid_grant");
  });

  it("the user cancels at the IdP → 400 naming the IdP's error (access_denied), nothing created", async () => {
    setAccounts({ canceller: { roles: ["student"] } });
    const browser = newBrowser();
    const started = await browser.navigate(LOGIN);
    const page = started.response!;
    const abort = /href="(\/interaction\/[^"]+\/abort)"/.exec(page.text)![1];
    const users = await count("SELECT 1 FROM users");
    const done = await browser.navigate(new URL(abort, page.url).href);
    const res = done.response!;
    expect(new URL(res.url).pathname).toBe("/api/v1/auth/callback");
    expect(new URL(res.url).searchParams.get("error")).toBe("access_denied");
    expect(res.status).toBe(400);
    expect(res.json<{ detail: string }>().detail).toBe("Login failed at the identity provider: access_denied");
    expect(await count("SELECT 1 FROM users")).toBe(users);
  });
});

describe("redirect_to: no open redirect", () => {
  it.each([
    "https://evil.example/",
    "//evil.example/",
    "/\\evil.example",
    "http://localhost:3000@evil.example/",
    "http://localhost:3001/",
    `http://localhost:9/`,
    "javascript:alert(document.cookie)",
    "/x\r\nSet-Cookie: hijack=1",
    "evil.example",
  ])("%p → 400, no redirect, no state stored", async (target) => {
    const before = (await stateKeys()).length;
    const browser = newBrowser();
    const res = await browser.request("GET", `${LOGIN}?redirect_to=${encodeURIComponent(target)}`);
    expect(res.status).toBe(400);
    expect(res.headers.get("location")).toBeNull();
    expect(res.headers.get("set-cookie")).toBeNull();
    expect(typeof res.json<{ detail: string }>().detail).toBe("string");
    expect((await stateKeys()).length).toBe(before);
  });

  it("a repeated redirect_to → 400", async () => {
    const res = await newBrowser().request("GET", `${LOGIN}?redirect_to=/a&redirect_to=/b`);
    expect(res.status).toBe(400);
  });

  it("PUBLIC_URL pages are not FRONTEND_URL pages", async () => {
    const res = await newBrowser().request(
      "GET",
      `${LOGIN}?redirect_to=${encodeURIComponent(`${PUBLIC}/api/v1/auth/me`)}`,
    );
    expect(res.status).toBe(400);
  });
});

describe("session cookies", () => {
  it("tampered, truncated, extended, foreign or duplicated cookies are anonymous (401)", async () => {
    const { sid } = await loggedIn("student");
    const flip = (s: string, i: number) => s.slice(0, i) + (s[i] === "A" ? "B" : "A") + s.slice(i + 1);
    for (const value of [
      flip(sid, 0),
      flip(sid, 42),
      sid.slice(0, -1),
      `${sid}A`,
      "",
      "x",
      "%00",
      randomBytes(32).toString("base64url"),
    ]) {
      const b = newBrowser();
      b.setCookie(PUBLIC, `autolabs_session=${value}; Path=/`);
      const res = await b.api("GET", `${API}/auth/me`);
      expect([value, res.status]).toEqual([value, 401]);
    }
    // A planted cookie before the real one: the first of a name counts, and it is invalid.
    const res = await fetch(`${API}/auth/me`, {
      headers: { cookie: `autolabs_session=${flip(sid, 5)}; autolabs_session=${sid}` },
    });
    expect(res.status).toBe(401);
    // The real one, for contrast.
    expect((await fetch(`${API}/auth/me`, { headers: { cookie: `autolabs_session=${sid}` } })).status).toBe(200);
  });

  it("an expired session is anonymous: by its own expiry time, and once the store dropped it", async () => {
    const { browser, sid } = await loggedIn("student2");
    const key = `${NS}:auth:session:${digestOf(sid)}`;
    const record = JSON.parse((await redis.get(key))!) as { exp: number };
    expect(record.exp - Date.now()).toBeGreaterThan(3590_000);
    await redis.set(key, JSON.stringify({ ...record, exp: Date.now() - 1 }), "KEEPTTL");
    expect((await browser.api("GET", `${API}/auth/me`)).status).toBe(401);
    await redis.set(key, JSON.stringify(record), "KEEPTTL");
    expect((await browser.api("GET", `${API}/auth/me`)).status).toBe(200);
    await redis.pexpire(key, 1);
    await new Promise((r) => setTimeout(r, 20));
    expect((await browser.api("GET", `${API}/auth/me`)).status).toBe(401);
  });

  it("a session is not trusted beyond the users cache TTL: re-roled or deleted users are re-read", async () => {
    setAccounts({ ghost: { roles: ["teacher"] } });
    const { browser, sid } = await loggedIn("ghost");
    const me = (await browser.api("GET", `${API}/auth/me`)).json<{ id: number; role: string }>();
    expect(me.role).toBe("teacher");
    // Changed behind the platform's back (no invalidation): visible within the TTL.
    await node.sequelize.query("UPDATE users SET role = 'student' WHERE id = $id", { bind: { id: me.id } });
    await new Promise((r) => setTimeout(r, USERS_CACHE_TTL_S * 1000 + 200));
    expect((await browser.api("GET", `${API}/auth/me`)).json()).toMatchObject({ role: "student" });
    expect((await browser.api("POST", `${API}/courses`, { name: "not any more" })).status).toBe(403);
    await node.sequelize.query("DELETE FROM users WHERE id = $id", { bind: { id: me.id } });
    await new Promise((r) => setTimeout(r, USERS_CACHE_TTL_S * 1000 + 200));
    expect((await browser.api("GET", `${API}/auth/me`)).status).toBe(401);
    // And the session of a user who is gone is dropped from the store.
    expect(await redis.exists(`${NS}:auth:session:${digestOf(sid)}`)).toBe(0);
  });
});

describe("CSRF on cookie-authenticated changes", () => {
  let browser: TestBrowser;
  let sid: string;
  beforeAll(async () => {
    ({ browser, sid } = await loggedIn("teacher"));
  });
  const courses = () => count("SELECT 1 FROM courses");
  const post = (headers: Record<string, string>, body = JSON.stringify({ name: "csrf" })) =>
    fetch(`${API}/courses`, { method: "POST", headers: { cookie: `autolabs_session=${sid}`, ...headers }, body });

  // A foreign Origin is already refused by the gateway's CORS check (403 before any action); the CSRF
  // rule refuses it as well, and is what refuses a cross-site request that carries no Origin.
  it.each([
    ["a foreign Origin", { "content-type": "application/json", origin: "https://evil.example" }],
    ["Origin null", { "content-type": "application/json", origin: "null" }],
    ["a look-alike Origin", { "content-type": "application/json", origin: "http://localhost:3000.evil.example" }],
    ["no Origin, Sec-Fetch-Site cross-site", { "content-type": "application/json", "sec-fetch-site": "cross-site" }],
  ])("%s → 403, nothing created", async (_what, headers) => {
    const before = await courses();
    const res = await post(headers);
    expect(res.status).toBe(403);
    expect(typeof ((await res.json()) as { detail: string }).detail).toBe("string");
    expect(await courses()).toBe(before);
  });

  it("a form post (no JSON) is refused, with or without a body, even from our own origin", async () => {
    const before = await courses();
    const bodyless = await fetch(`${API}/courses`, {
      method: "POST",
      headers: {
        cookie: `autolabs_session=${sid}`,
        "content-type": "application/x-www-form-urlencoded",
        origin: FRONT,
      },
    });
    expect(bodyless.status).toBe(403);
    expect(((await bodyless.json()) as { detail: string }).detail).toMatch(/application\/json/);
    const plain = await post({ "content-type": "text/plain", origin: "https://evil.example" }, "name=csrf");
    expect([403, 415]).toContain(plain.status);
    expect(await courses()).toBe(before);
  });

  it("a cross-site DELETE and a cross-site logout are refused too", async () => {
    const mine = await browser.api("POST", `${API}/courses`, { name: "keep me" });
    expect(mine.status).toBe(201);
    const id = mine.json<{ id: number }>().id;
    const del = await fetch(`${API}/courses/${id}`, {
      method: "DELETE",
      headers: {
        cookie: `autolabs_session=${sid}`,
        "content-type": "application/json",
        origin: "https://evil.example",
      },
    });
    expect(del.status).toBe(403);
    expect((await browser.api("GET", `${API}/courses/${id}`)).status).toBe(200);
    const out = await fetch(`${API}/auth/logout`, {
      method: "POST",
      headers: {
        cookie: `autolabs_session=${sid}`,
        "content-type": "application/json",
        origin: "https://evil.example",
      },
    });
    expect(out.status).toBe(403);
    expect((await browser.api("GET", `${API}/auth/me`)).status).toBe(200);
  });

  it("our frontend, our own origin, and non-browser clients (no Origin, no fetch metadata) pass", async () => {
    expect((await post({ "content-type": "application/json", origin: FRONT })).status).toBe(201);
    expect((await post({ "content-type": "application/json", origin: PUBLIC })).status).toBe(201);
    expect(
      (await post({ "content-type": "application/json; charset=utf-8", "sec-fetch-site": "same-site" })).status,
    ).toBe(201);
    expect((await post({ "content-type": "application/json" })).status).toBe(201);
  });

  it("reads are not checked; Bearer requests are not affected at all", async () => {
    // A cross-site read (an <img>, a link): allowed, and the browser hides the answer from the other site anyway.
    const read = await fetch(`${API}/courses`, {
      headers: { cookie: `autolabs_session=${sid}`, "sec-fetch-site": "cross-site" },
    });
    expect(read.status).toBe(200);
    const { accessToken } = await idp.getToken("teacher");
    const bearer = { authorization: `Bearer ${accessToken}` };
    const lab = await fetch(`${API}/labs`, {
      method: "POST",
      headers: { ...bearer, "content-type": "application/json", "sec-fetch-site": "cross-site" },
      body: JSON.stringify({
        name: "CSRF lab",
        docker_image: "python:3.12-slim",
        resources: { cpu: "500m", memory: "512Mi", storage: "1Gi" },
      }),
    });
    expect(lab.status).toBe(201);
    const { id } = (await lab.json()) as { id: number };
    // A bodyless change without a JSON content type: refused with the cookie, fine with Bearer.
    const byCookie = await fetch(`${API}/labs/${id}/submit`, {
      method: "POST",
      headers: { cookie: `autolabs_session=${sid}` },
    });
    expect(byCookie.status).toBe(403);
    const byBearer = await fetch(`${API}/labs/${id}/submit`, {
      method: "POST",
      headers: { ...bearer, "sec-fetch-site": "cross-site" },
    });
    expect(byBearer.status).toBe(200);
    // Bearer wins over a cookie sent along: no CSRF check for it.
    const both = await fetch(`${API}/courses`, {
      method: "POST",
      headers: {
        ...bearer,
        cookie: `autolabs_session=${sid}`,
        "content-type": "application/json",
        "sec-fetch-site": "cross-site",
      },
      body: JSON.stringify({ name: "bearer wins" }),
    });
    expect(both.status).toBe(201);
  });
});

describe("roles are synced from the IdP at every login", () => {
  it("a role changed at the IdP applies at the next login; no role at all → 403 and no session", async () => {
    setAccounts({ flipper: { roles: ["student"], name: "Flip Per" } });
    const browser = newBrowser();
    await browser.login(LOGIN, "flipper");
    expect((await browser.api("GET", `${API}/auth/me`)).json()).toMatchObject({ role: "student", name: "Flip Per" });
    expect((await browser.api("POST", `${API}/courses`, { name: "nope" })).status).toBe(403);

    // Promoted (and renamed) at the IdP: the running session keeps what the last login said…
    setAccounts({ flipper: { roles: ["teacher", "student"], name: "Flip Per Teacher" } });
    expect((await browser.api("GET", `${API}/auth/me`)).json()).toMatchObject({ role: "student" });
    // …the next login (single sign-on at the IdP, no form) syncs it.
    await browser.login(LOGIN, "flipper");
    expect((await browser.api("GET", `${API}/auth/me`)).json()).toMatchObject({
      role: "teacher",
      name: "Flip Per Teacher",
    });
    expect((await browser.api("POST", `${API}/courses`, { name: "now yes" })).status).toBe(201);
    expect(await count("SELECT 1 FROM users WHERE email = 'flipper@autolabs.local'")).toBe(1);

    // All roles withdrawn: the login is refused and creates no session.
    setAccounts({ flipper: { roles: [] } });
    const fresh = newBrowser();
    const sessions = (await sessionKeys()).length;
    const cb = await fresh.loginUntilCallback(LOGIN, "flipper");
    const res = await fresh.request("GET", cb);
    expect(res.status).toBe(403);
    expect(res.json<{ detail: string }>().detail).toMatch(/no AutoLabs role/);
    expect(res.headers.get("set-cookie")).toBeNull();
    expect((await sessionKeys()).length).toBe(sessions);
  });

  it("an account with no AutoLabs role never gets a users row", async () => {
    setAccounts({ outsider: { roles: ["viewer"] } });
    const browser = newBrowser();
    const cb = await browser.loginUntilCallback(LOGIN, "outsider");
    expect((await browser.request("GET", cb)).status).toBe(403);
    expect(await count("SELECT 1 FROM users WHERE email = 'outsider@autolabs.local'")).toBe(0);
  });
});
