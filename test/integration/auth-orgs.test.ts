/**
 * OIDC_ALLOWED_ORGS against a real provider: the embedded IdP grants every role through a partner
 * organisation only (EMBEDDED_IDP_ROLE_ORGS), as Zitadel does for a project granted to another org. A node
 * that allows only our organisation refuses those roles, for Bearer tokens and for the browser login alike,
 * and writes no user; a node that also allows the partner accepts the same tokens and logins.
 */
import { QueryTypes } from "sequelize";
import { DEV_CLIENT_SECRET } from "../../services/auth/auth.contract";
import { runCodeFlow } from "../../dev/oidc-code-flow";
import { TestBrowser, setCookieNamed } from "../support/browser";
import { startIdp, type TestIdp } from "../support/idp";
import { createTestDatabase, startNode, type PlatformNode, type TestDatabase } from "../support/platform";
import { ifAssigned } from "../support/cleanup";

const OUR_ORG = "300000000000000001";
const PARTNER_ORG = "300000000000000777";
// Both nodes sit behind the same public origin (the IdP knows one redirect URI); each browser's "proxy" picks one.
const PUBLIC = "http://api.orgs.test";
const FRONT = "http://app.orgs.test";
const API = `${PUBLIC}/api/v1`;

let db: TestDatabase;
let idp: TestIdp;
let ourOnly: PlatformNode;
let withPartner: PlatformNode;

beforeAll(async () => {
  [db, idp] = await Promise.all([
    createTestDatabase(),
    startIdp({
      env: { PUBLIC_URL: PUBLIC, FRONTEND_URL: FRONT, EMBEDDED_IDP_ROLE_ORGS: `${PARTNER_ORG}:partner.example` },
    }),
  ]);
  const env = {
    PUBLIC_URL: PUBLIC,
    FRONTEND_URL: FRONT,
    OIDC_ISSUER: idp.issuer,
    OIDC_CLIENT_SECRET: DEV_CLIENT_SECRET,
  };
  ourOnly = await startNode(db.url, { ...env, OIDC_ALLOWED_ORGS: OUR_ORG });
  withPartner = await startNode(db.url, { ...env, OIDC_ALLOWED_ORGS: `${OUR_ORG},${PARTNER_ORG}` });
});

afterAll(async () => {
  await Promise.allSettled([ifAssigned(ourOnly)?.stop(), ifAssigned(withPartner)?.stop()]);
  await Promise.allSettled([ifAssigned(db)?.drop(), ifAssigned(idp)?.stop()]);
});

async function userCount(): Promise<number> {
  const [row] = await ourOnly.sequelize.query<{ n: string }>("SELECT count(*) AS n FROM users", {
    type: QueryTypes.SELECT,
  });
  return Number(row.n);
}

const me = (node: PlatformNode, token: string) =>
  fetch(`${node.url}/api/v1/auth/me`, { headers: { authorization: `Bearer ${token}` } });

it("the provider grants the roles through the partner organisation only", async () => {
  const { accessToken } = await runCodeFlow({ issuer: idp.issuer, account: "admin" });
  const claims = JSON.parse(Buffer.from(accessToken.split(".")[1], "base64url").toString()) as Record<string, unknown>;
  expect(claims["urn:zitadel:iam:org:project:roles"]).toEqual({ admin: { [PARTNER_ORG]: "partner.example" } });
});

it("Bearer: a role granted by an organisation not allowed is no role (403, no user written)", async () => {
  const { accessToken } = await runCodeFlow({ issuer: idp.issuer, account: "admin" });
  const refused = await me(ourOnly, accessToken);
  expect(refused.status).toBe(403);
  expect(await refused.json()).toEqual({
    detail: "Your account has no AutoLabs role; ask an administrator to grant one",
  });
  expect(await userCount()).toBe(0);

  const accepted = await me(withPartner, accessToken);
  expect(accepted.status).toBe(200);
  expect(await accepted.json()).toMatchObject({ email: "admin@autolabs.local", role: "admin" });
});

it("browser login: the same rule, for the roles of the ID token (403, no session cookie)", async () => {
  const before = await userCount();
  const refusedBrowser = new TestBrowser({ frontendUrl: FRONT, proxy: { [PUBLIC]: ourOnly.url } });
  const callback = await refusedBrowser.loginUntilCallback(`${API}/auth/login`, "teacher");
  const refused = await refusedBrowser.request("GET", callback);
  expect(refused.status).toBe(403);
  expect(refused.json()).toEqual({ detail: "Your account has no AutoLabs role; ask an administrator to grant one" });
  expect(setCookieNamed(refused.headers.getSetCookie(), "autolabs_session")).toBeUndefined();
  expect(await userCount()).toBe(before);

  const browser = new TestBrowser({ frontendUrl: FRONT, proxy: { [PUBLIC]: withPartner.url } });
  const result = await browser.login(`${API}/auth/login`, "teacher");
  expect(setCookieNamed(result.callbackCookies, "autolabs_session")).toMatch(/^autolabs_session=[A-Za-z0-9_-]{43};/);
  const mine = await browser.api("GET", `${API}/auth/me`);
  expect(mine.status).toBe(200);
  expect(mine.json()).toMatchObject({ email: "teacher@autolabs.local", role: "teacher" });
});
