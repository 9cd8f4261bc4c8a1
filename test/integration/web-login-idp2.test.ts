/**
 * The same browser flow against a second, differently configured provider, configured only through env
 * (the IdP child's and the platform's): another issuer (127.0.0.1, not localhost), ES256 signing keys,
 * another client id and secret, a Zitadel project audience and the project-specific roles claim, roles
 * granted by two organisations, and roles NOT in the ID token (only in access tokens, as Zitadel with
 * "user roles inside access token" but without "assert roles on authentication").
 *
 * The platform sits behind https (PUBLIC_URL / FRONTEND_URL are https; the test browser maps them to the
 * gateway's plain-http port like a TLS-terminating proxy), so the session cookie is `__Host-…; Secure`.
 */
import { randomBytes } from "node:crypto";
import { decodeJwt, decodeProtectedHeader } from "jose";
import Redis from "ioredis";
import { TestBrowser, freePort, setCookieNamed } from "../support/browser";
import { startIdp, type TestIdp } from "../support/idp";
import { createTestDatabase, startNode, type PlatformNode, type TestDatabase } from "../support/platform";
import { runCodeFlow } from "../../dev/oidc-code-flow";
import { ifAssigned } from "../support/cleanup";

const REDIS_URL = process.env.TEST_SESSION_REDIS_URL ?? "redis://127.0.0.1:6379/7";
const NS = `wl2${randomBytes(4).toString("hex")}`;
const PUBLIC = "https://api.autolabs.test";
const FRONT = "https://app.autolabs.test";
const API = `${PUBLIC}/api/v1`;
const PROJECT = "275555555555555555";
const ROLES_CLAIM = `urn:zitadel:iam:org:project:${PROJECT}:roles`;
const ORGS = { "300000000000000001": "autolabs.local", "300000000000000777": "partner.example" };

/** Everything that makes this provider (and the platform's view of it) differ, as env. */
const OIDC_ENV = {
  OIDC_CLIENT_ID: "autolabs-web-2",
  OIDC_CLIENT_SECRET: randomBytes(24).toString("base64url"),
  OIDC_AUDIENCE: PROJECT,
  OIDC_ROLES_CLAIM: ROLES_CLAIM,
  PUBLIC_URL: PUBLIC,
  FRONTEND_URL: FRONT,
};

let db: TestDatabase;
let idp: TestIdp;
let node: PlatformNode;
let proxy: Record<string, string>;

beforeAll(async () => {
  const port = await freePort();
  [db, idp] = await Promise.all([
    createTestDatabase(),
    startIdp({
      env: {
        ...OIDC_ENV,
        EMBEDDED_IDP_HOST: "127.0.0.1",
        EMBEDDED_IDP_KEY_ALG: "ES256",
        EMBEDDED_IDP_ROLE_ORGS: Object.entries(ORGS)
          .map(([id, domain]) => `${id}:${domain}`)
          .join(","),
        EMBEDDED_IDP_ROLES_IN_ID_TOKEN: "false",
      },
    }),
  ]);
  node = await startNode(db.url, {
    ...OIDC_ENV,
    PORT: String(port),
    OIDC_ISSUER: idp.issuer,
    REDIS_URL,
    NAMESPACE: NS,
  });
  proxy = { [PUBLIC]: node.url };
});

afterAll(async () => {
  const redis = new Redis(REDIS_URL);
  const keys = await redis.keys(`${NS}:*`);
  if (keys.length) await redis.del(...keys);
  redis.disconnect();
  await ifAssigned(node)?.stop();
  await Promise.allSettled([ifAssigned(db)?.drop(), ifAssigned(idp)?.stop()]);
});

it("the provider really is different: 127.0.0.1 issuer, ES256 keys only, roles of two orgs, none in the ID token", async () => {
  expect(idp.issuer).toMatch(/^http:\/\/127\.0\.0\.1:\d+$/);
  const jwks = (await (await fetch(`${idp.issuer}/jwks`)).json()) as {
    keys: { kty: string; alg?: string; crv?: string }[];
  };
  expect(jwks.keys).toHaveLength(1);
  expect(jwks.keys[0]).toMatchObject({ kty: "EC", crv: "P-256", alg: "ES256" });
  const tokens = await runCodeFlow({ issuer: idp.issuer, account: "teacher" });
  expect(decodeProtectedHeader(tokens.idToken).alg).toBe("ES256");
  expect(decodeProtectedHeader(tokens.accessToken).alg).toBe("ES256");
  expect(decodeJwt(tokens.idToken)[ROLES_CLAIM]).toBeUndefined();
  expect(decodeJwt(tokens.accessToken)).toMatchObject({ aud: PROJECT, [ROLES_CLAIM]: { teacher: ORGS } });
});

it("login → IdP → callback → __Host- Secure cookie → /auth/me → a change → logout → 401", async () => {
  const browser = new TestBrowser({ frontendUrl: FRONT, proxy });
  const result = await browser.login(
    `${API}/auth/login?redirect_to=${encodeURIComponent(`${FRONT}/dashboard`)}`,
    "teacher",
  );
  const authorize = new URL(result.hops[0].location!);
  expect(authorize.origin).toBe(idp.issuer);
  expect(authorize.searchParams.get("client_id")).toBe("autolabs-web-2");
  expect(authorize.searchParams.get("redirect_uri")).toBe(`${API}/auth/callback`);
  expect(setCookieNamed(result.hops[0].setCookies, "__Host-autolabs_login")).toMatch(
    /; Path=\/; Max-Age=600; HttpOnly; SameSite=Lax; Secure$/,
  );
  expect(result.landedAt).toBe(`${FRONT}/dashboard`);
  expect(setCookieNamed(result.callbackCookies, "__Host-autolabs_session")).toMatch(
    /^__Host-autolabs_session=[A-Za-z0-9_-]{43}; Path=\/; Max-Age=3600; HttpOnly; SameSite=Lax; Secure$/,
  );
  expect(result.callbackCookies.join()).not.toMatch(/Domain=/i);

  // The role came from the (verified) access token, the ID token has none; granted by two orgs: one role, teacher.
  const me = await browser.api("GET", `${API}/auth/me`);
  expect(me.status).toBe(200);
  expect(me.json()).toMatchObject({ email: "teacher@autolabs.local", role: "teacher" });

  const created = await browser.api("POST", `${API}/courses`, { name: "Behind TLS" });
  expect(created.status).toBe(201);
  const cross = await browser.api("POST", `${API}/courses`, { name: "x" }, { origin: "https://evil.example" });
  expect(cross.status).toBe(403);

  const out = await browser.api("POST", `${API}/auth/logout`);
  expect(out.status).toBe(204);
  expect(out.headers.getSetCookie().join()).toMatch(/__Host-autolabs_session=; Path=\/; Max-Age=0;.*Secure/);
  expect((await browser.api("GET", `${API}/auth/me`)).status).toBe(401);
});

it("on https the un-prefixed cookie name is not a session (a sibling subdomain cannot plant one)", async () => {
  const browser = new TestBrowser({ frontendUrl: FRONT, proxy });
  await browser.login(`${API}/auth/login`, "student");
  const sid = browser.cookie(PUBLIC, "__Host-autolabs_session")!;
  const planted = await fetch(`${node.url}/api/v1/auth/me`, { headers: { cookie: `autolabs_session=${sid}` } });
  expect(planted.status).toBe(401);
  const real = await fetch(`${node.url}/api/v1/auth/me`, { headers: { cookie: `__Host-autolabs_session=${sid}` } });
  expect(real.status).toBe(200);
});

it("Bearer tokens of this provider (ES256, project audience, two-org roles claim) work alongside", async () => {
  const { accessToken } = await runCodeFlow({ issuer: idp.issuer, account: "student2" });
  const me = await fetch(`${node.url}/api/v1/auth/me`, { headers: { authorization: `Bearer ${accessToken}` } });
  expect(me.status).toBe(200);
  expect(await me.json()).toMatchObject({ email: "student2@autolabs.local", role: "student" });
});

it("a code this provider did not issue for this login → 400 naming the IdP's error", async () => {
  const browser = new TestBrowser({ frontendUrl: FRONT, proxy });
  const cb = new URL(await browser.loginUntilCallback(`${API}/auth/login`, "admin"));
  cb.searchParams.set("code", "not-a-code-of-ours");
  const res = await browser.request("GET", cb.href);
  expect(res.status).toBe(400);
  expect(res.json<{ detail: string }>().detail).toBe("Login failed at the identity provider: invalid_grant");
});
