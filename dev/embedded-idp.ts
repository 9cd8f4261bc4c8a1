/**
 * Embedded OpenID Connect provider: the DEVELOPMENT stand-in for Zitadel, built on `oidc-provider`.
 * Never for production: demo accounts with well-known passwords, in-memory sessions.
 *
 * Run as a child process of the platform (oidc-provider is ESM-only and must stay out of the jest
 * process):  node dist/dev/embedded-idp.js [--port N] [--data-dir DIR]
 *
 * Settings (env, read through loadConfig; args win):
 *   EMBEDDED_IDP_PORT (default PORT+1 = 8001; `--port 0` picks a free port), DATA_DIR (signing key at
 *   <dataDir>/idp/jwks.json, created on first start so tokens survive restarts), PUBLIC_URL (backend
 *   redirect URI base), FRONTEND_URL (post-logout redirect), OIDC_CLIENT_ID / OIDC_CLIENT_SECRET
 *   (backend client; secret defaults to DEV_CLIENT_SECRET), OIDC_AUDIENCE (access token `aud`),
 *   OIDC_ROLES_CLAIM, EMBEDDED_IDP_ACCESS_TOKEN_TTL_S (test knob: access token lifetime, default 3600).
 * Knobs to make it look like another IdP (a second instance in tests, or a frontend developer's setup):
 *   EMBEDDED_IDP_HOST (issuer host, default localhost: issuer http://<host>:<port>),
 *   EMBEDDED_IDP_KEY_ALG (RS256 | ES256: the type of a NEWLY created signing key; an existing jwks.json is
 *   used as it is, and its first key's alg signs), EMBEDDED_IDP_ROLE_ORGS ("<orgId>:<domain>,…": the
 *   organisations granting every role in the roles claim), EMBEDDED_IDP_ROLES_IN_ID_TOKEN (false: the roles
 *   claim only in access tokens (and userinfo), as Zitadel without "assert roles on authentication"),
 *   EMBEDDED_IDP_ACCOUNTS_FILE (JSON `{"<login>": {"roles": ["teacher"], "name"?, "email"?, "sub"?}}`, re-read
 *   at every use: changes or adds accounts while the IdP runs, e.g. a role change before the next login).
 * Prints "embedded IdP listening on <issuer>" on stdout when ready; exits cleanly on SIGTERM/SIGINT.
 *
 * Demo accounts (password = account name): admin, teacher, student, student2 — see DEMO_ACCOUNTS.
 * Clients: <OIDC_CLIENT_ID> (confidential, client_secret_basic, PKCE) and `autolabs-cli` (public, PKCE).
 *
 * Importing this module has no side effects (constants for seeders/tests); oidc-provider is loaded
 * only when the provider starts.
 */
import { BACKEND_CALLBACK_PATH, DEV_CLIENT_SECRET } from "../services/auth/auth.contract";
import { createHash, generateKeyPairSync, randomBytes, timingSafeEqual, type JsonWebKey } from "node:crypto";
import { chmodSync, existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from "node:fs";
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import { join } from "node:path";
import { loadConfig, type Config } from "../platform/config";
import type { Role } from "../lib/principal";

// ---------------------------------------------------------------------------------------------------
// Demo data (exported: seeders and tests refer to the same accounts)

export interface DemoAccount {
  /** Login name; also the password. */
  login: string;
  /** Stable `sub`. Zitadel-like 18-digit string, so code that wrongly treats subs as numbers breaks in dev. */
  sub: string;
  email: string;
  name: string;
  givenName: string;
  familyName: string;
  role: Role;
}

const demo = (login: string, sub: string, role: Role, familyName: string): DemoAccount => ({
  login,
  sub,
  role,
  givenName: "Demo",
  familyName,
  name: `Demo ${familyName}`,
  email: `${login}@autolabs.local`,
});

export const DEMO_ACCOUNTS: readonly DemoAccount[] = [
  demo("admin", "310000000000000001", "admin", "Admin"),
  demo("teacher", "310000000000000002", "teacher", "Teacher"),
  demo("student", "310000000000000003", "student", "Student"),
  demo("student2", "310000000000000004", "student", "Student Two"),
];

/** The organisation that grants the demo roles, as Zitadel puts it in the roles claim. */
export const DEMO_ORG_ID = "300000000000000001";
export const DEMO_ORG_DOMAIN = "autolabs.local";

export const CLI_CLIENT_ID = "autolabs-cli";
export const CLI_REDIRECT_URI = "http://127.0.0.1/cli-callback";
export const READY_LINE_PREFIX = "embedded IdP listening on ";

/** Zitadel's shape: `{"<role>": {"<orgId>": "<org domain>"}}`. */
export function zitadelRolesClaim(role: Role): Record<string, Record<string, string>> {
  return { [role]: { [DEMO_ORG_ID]: DEMO_ORG_DOMAIN } };
}

export const findDemoAccount = (login: string): DemoAccount | undefined => DEMO_ACCOUNTS.find((a) => a.login === login);

/** An account as the running provider sees it: a demo account, possibly changed by the accounts file. */
export interface IdpAccount extends Omit<DemoAccount, "role"> {
  /** Role keys of the roles claim, as granted (unknown names and no role at all are possible). */
  roles: string[];
}

/** `{"<role>": {"<orgId>": "<domain>", …}}` for every role, granted by every one of `orgs`. */
export function rolesClaimOf(
  roles: readonly string[],
  orgs: Record<string, string>,
): Record<string, Record<string, string>> {
  return Object.fromEntries(roles.map((r) => [r, { ...orgs }]));
}

/** "<orgId>:<domain>,…" (EMBEDDED_IDP_ROLE_ORGS); default: the demo organisation. */
export function parseRoleOrgs(raw: string | undefined): Record<string, string> {
  if (raw === undefined || raw.trim() === "") return { [DEMO_ORG_ID]: DEMO_ORG_DOMAIN };
  const orgs: Record<string, string> = {};
  for (const item of raw.split(",")) {
    const m = /^\s*([0-9A-Za-z_-]{1,64}):([0-9A-Za-z.-]{1,253})\s*$/.exec(item);
    if (!m) throw new Error(`EMBEDDED_IDP_ROLE_ORGS must be "<orgId>:<domain>,…", got "${raw}"`);
    orgs[m[1]] = m[2];
  }
  return orgs;
}

const LOGIN_RE = /^[A-Za-z0-9._-]{1,64}$/;

/** A stable Zitadel-like sub for an account that only the accounts file defines. */
function derivedSub(login: string): string {
  const n = BigInt(`0x${createHash("sha256").update(login).digest("hex").slice(0, 15)}`) % 10n ** 16n;
  return `38${n.toString().padStart(16, "0")}`;
}

/**
 * The demo accounts merged with the accounts file (when given). A malformed file is reported and
 * ignored (the demo accounts still work); an entry with a bad login or roles list is skipped.
 */
export function loadAccounts(file: string | undefined, warn: (msg: string) => void = () => undefined): IdpAccount[] {
  const accounts = new Map<string, IdpAccount>(DEMO_ACCOUNTS.map((a) => [a.login, { ...a, roles: [a.role] }]));
  if (file === undefined) return [...accounts.values()];
  let parsed: unknown;
  try {
    parsed = existsSync(file) ? JSON.parse(readFileSync(file, "utf8")) : {};
  } catch (err) {
    warn(`accounts file ${file} ignored: ${(err as Error).message}`);
    return [...accounts.values()];
  }
  if (typeof parsed !== "object" || parsed === null || Array.isArray(parsed)) {
    warn(`accounts file ${file} ignored: not a JSON object`);
    return [...accounts.values()];
  }
  for (const [login, raw] of Object.entries(parsed as Record<string, unknown>)) {
    const o = (typeof raw === "object" && raw !== null ? raw : {}) as Record<string, unknown>;
    const roles = o.roles;
    if (!LOGIN_RE.test(login) || !Array.isArray(roles) || !roles.every((r) => typeof r === "string")) {
      warn(`accounts file ${file}: entry "${login}" skipped (needs a plain login and a "roles" list)`);
      continue;
    }
    const base = accounts.get(login);
    const name = typeof o.name === "string" ? o.name : (base?.name ?? login);
    accounts.set(login, {
      login,
      sub: typeof o.sub === "string" && /^[0-9A-Za-z-]{1,64}$/.test(o.sub) ? o.sub : (base?.sub ?? derivedSub(login)),
      email: typeof o.email === "string" ? o.email : (base?.email ?? `${login}@autolabs.local`),
      name,
      givenName: base?.givenName ?? name.split(" ")[0],
      familyName: base?.familyName ?? name.split(" ").slice(1).join(" "),
      roles: roles,
    });
  }
  return [...accounts.values()];
}

// ---------------------------------------------------------------------------------------------------
// Signing keys

export interface PrivateJwks {
  keys: (JsonWebKey & { kid: string; alg: string; use: string })[];
}

export type SigningAlg = "RS256" | "ES256";

/** RFC 7638 thumbprint: a stable, content-derived kid. */
function thumbprint(jwk: JsonWebKey): string {
  const canonical =
    jwk.kty === "EC"
      ? JSON.stringify({ crv: jwk.crv, kty: jwk.kty, x: jwk.x, y: jwk.y })
      : JSON.stringify({ e: jwk.e, kty: jwk.kty, n: jwk.n });
  return createHash("sha256").update(canonical).digest("base64url");
}

/** A new private signing key as a JWK: RSA 2048 for RS256, P-256 for ES256. */
export function generateSigningKey(alg: SigningAlg): PrivateJwks["keys"][number] {
  const { privateKey } =
    alg === "ES256"
      ? generateKeyPairSync("ec", { namedCurve: "P-256" })
      : generateKeyPairSync("rsa", { modulusLength: 2048 });
  const jwk = privateKey.export({ format: "jwk" });
  return { ...jwk, kid: thumbprint(jwk), alg, use: "sig" };
}

/**
 * Loads `<dataDir>/idp/jwks.json`, creating an RS256 key on first start. Persisted so tokens issued
 * before a restart still verify after it (the JWKS stays the same).
 */
export function loadOrCreateJwks(dataDir: string, alg: SigningAlg = "RS256"): PrivateJwks {
  const dir = join(dataDir, "idp");
  const file = join(dir, "jwks.json");
  if (existsSync(file)) {
    const parsed: unknown = JSON.parse(readFileSync(file, "utf8"));
    const keys = (parsed as { keys?: unknown }).keys;
    if (!Array.isArray(keys) || keys.length === 0 || !keys.every((k) => typeof k === "object" && k && "d" in k)) {
      throw new Error(`${file} is not a private JWK set; delete it to generate a new signing key`);
    }
    return parsed as PrivateJwks;
  }
  const jwks: PrivateJwks = { keys: [generateSigningKey(alg)] };
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  // Write-then-rename: a crash mid-write never leaves a truncated key file behind.
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, JSON.stringify(jwks, null, 2), { mode: 0o600 });
  chmodSync(tmp, 0o600);
  renameSync(tmp, file);
  return jwks;
}

// ---------------------------------------------------------------------------------------------------
// The slice of oidc-provider's API we use (the package ships no type declarations).

interface InteractionPromptDetails {
  missingOIDCScope?: string[];
  missingOIDCClaims?: string[];
  missingResourceScopes?: Record<string, string[]>;
}

interface InteractionDetails {
  uid: string;
  prompt: { name: string; reasons: string[]; details: InteractionPromptDetails };
  params: Record<string, unknown>;
  session?: { accountId?: string };
  grantId?: string;
}

interface InteractionResults {
  login?: { accountId: string; amr?: string[]; remember?: boolean };
  consent?: { grantId?: string };
  error?: string;
  error_description?: string;
}

interface GrantInstance {
  addOIDCScope(scope: string): void;
  addOIDCClaims(claims: string[]): void;
  addResourceScope(indicator: string, scope: string): void;
  save(): Promise<string>;
}

interface GrantStatic {
  new (props: { accountId: string; clientId: string }): GrantInstance;
  find(id: string): Promise<GrantInstance | undefined>;
}

interface ProviderInstance {
  callback(): (req: IncomingMessage, res: ServerResponse) => void;
  interactionDetails(req: IncomingMessage, res: ServerResponse): Promise<InteractionDetails>;
  interactionResult(
    req: IncomingMessage,
    res: ServerResponse,
    result: InteractionResults,
    options?: { mergeWithLastSubmission?: boolean },
  ): Promise<string>;
  Grant: GrantStatic;
  on(event: string, listener: (...args: unknown[]) => void): void;
}

interface OidcProviderModule {
  Provider: new (issuer: string, configuration: object) => ProviderInstance;
  errors: { InvalidTarget: new (description?: string) => Error; SessionNotFound: new (description?: string) => Error };
}

/** What the provider's helper functions receive that we read. */
interface TokenLike {
  accountId?: string;
  resourceServer?: { accessTokenTTL?: number };
}
interface KoaLikeContext {
  host: string;
  type: string;
  body: unknown;
}

// ---------------------------------------------------------------------------------------------------
// HTML (a minimal form flow usable from a browser and by a headless client)

const escapeHtml = (s: string): string =>
  s.replace(/[&<>"']/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c] ?? c);

function page(title: string, body: string): string {
  return `<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>${escapeHtml(title)}</title>
<meta name="viewport" content="width=device-width, initial-scale=1">
<style>body{font-family:system-ui,sans-serif;max-width:28rem;margin:3rem auto;padding:0 1rem}
.warn{background:#fff3cd;border:1px solid #e0c060;padding:.5rem .75rem;border-radius:4px;font-size:.9rem}
.err{background:#f8d7da;border:1px solid #d08080;padding:.5rem .75rem;border-radius:4px}
button{width:100%;padding:.5rem;margin:.25rem 0;cursor:pointer}input{width:100%;padding:.4rem;margin:.2rem 0;box-sizing:border-box}</style></head>
<body><p class="warn">Embedded <strong>development</strong> identity provider — demo accounts only, never for production.</p>
${body}</body></html>`;
}

function loginPage(uid: string, clientId: string, accountList: readonly IdpAccount[], error?: string): string {
  const action = `/interaction/${encodeURIComponent(uid)}/login`;
  const accounts = accountList
    .map(
      (a) => `<form method="post" action="${escapeHtml(action)}">
<input type="hidden" name="login" value="${escapeHtml(a.login)}"><input type="hidden" name="password" value="${escapeHtml(a.login)}">
<button type="submit">Sign in as <strong>${escapeHtml(a.login)}</strong> — ${escapeHtml(a.name)} (${escapeHtml(a.roles.join(", ") || "no role")})</button></form>`,
    )
    .join("\n");
  return page(
    "Sign in — AutoLabs (embedded IdP)",
    `<h1>Sign in</h1><p>to <code>${escapeHtml(clientId)}</code></p>
${error ? `<p class="err">${escapeHtml(error)}</p>` : ""}
${accounts}
<h2>Or type an account</h2>
<form id="login" method="post" action="${escapeHtml(action)}">
<label>Account <input name="login" autocomplete="username" required></label>
<label>Password (= account name) <input name="password" type="password" autocomplete="current-password" required></label>
<button type="submit">Sign in</button></form>
<p><a href="/interaction/${encodeURIComponent(uid)}/abort">Cancel</a></p>`,
  );
}

// ---------------------------------------------------------------------------------------------------
// Provider configuration

export interface EmbeddedIdpOptions {
  /** 0 picks a free port (tests). */
  port: number;
  dataDir: string;
  config: Config;
  accessTokenTtlS?: number;
  /** Issuer host (default localhost). */
  host?: string;
  /** Type of a newly created signing key (default RS256). */
  keyAlg?: SigningAlg;
  /** Organisations granting the roles (default: the demo organisation). */
  roleOrgs?: Record<string, string>;
  /** false: the roles claim is left out of ID tokens (userinfo and access tokens still carry it). */
  rolesInIdToken?: boolean;
  /** JSON file changing or adding accounts; re-read at every use. */
  accountsFile?: string;
  /** Where the ready line and warnings go. */
  log?: { info(msg: string): void; warn(msg: string): void };
}

export interface RunningIdp {
  issuer: string;
  port: number;
  close(): Promise<void>;
}

/** Resource indicators must be absolute URIs; Zitadel audiences (project ids) are not, hence a URN. */
function resourceIndicatorFor(audience: string): string {
  return /^[a-z][a-z0-9+.-]*:/i.test(audience) && URL.canParse(audience)
    ? audience
    : `urn:autolabs:resource:${audience}`;
}

const passwordMatches = (given: string, expected: string): boolean => {
  // Hash first so the comparison is constant-time regardless of length.
  const a = createHash("sha256").update(given).digest();
  const b = createHash("sha256").update(expected).digest();
  return timingSafeEqual(a, b);
};

function buildConfiguration(
  mod: OidcProviderModule,
  opts: EmbeddedIdpOptions,
  jwks: PrivateJwks,
  accounts: () => IdpAccount[],
): object {
  const { config } = opts;
  // The first key signs (a rotated-in key goes first, the old one stays listed for tokens already out).
  const signingAlg = jwks.keys[0].alg;
  const orgs = opts.roleOrgs ?? { [DEMO_ORG_ID]: DEMO_ORG_DOMAIN };
  const { audience, rolesClaim } = config.oidc;
  const resource = resourceIndicatorFor(audience);
  const accessTokenTTL = opts.accessTokenTtlS ?? 3600;
  const postLogout = [...new Set([config.frontendUrl, config.publicUrl])];

  return {
    jwks,
    // Random per start: sessions live in memory and die with the process anyway.
    cookies: { keys: [randomBytes(32).toString("base64url")] },
    clients: [
      {
        client_id: config.oidc.clientId,
        client_secret: config.oidc.clientSecret ?? DEV_CLIENT_SECRET,
        client_name: "AutoLabs backend",
        redirect_uris: [`${config.publicUrl}${BACKEND_CALLBACK_PATH}`],
        post_logout_redirect_uris: postLogout,
        grant_types: ["authorization_code", "refresh_token"],
        response_types: ["code"],
        token_endpoint_auth_method: "client_secret_basic",
        id_token_signed_response_alg: signingAlg,
      },
      {
        client_id: CLI_CLIENT_ID,
        client_name: "AutoLabs CLI",
        // native + loopback: RFC 8252 lets the redirect use any port on 127.0.0.1.
        application_type: "native",
        redirect_uris: [CLI_REDIRECT_URI],
        grant_types: ["authorization_code"],
        response_types: ["code"],
        token_endpoint_auth_method: "none",
        id_token_signed_response_alg: signingAlg,
      },
    ],
    // Authorization code only: no implicit/hybrid flows, tokens never travel in the URL.
    responseTypes: ["code"],
    // PKCE for every client, confidential ones too (the backend login uses S256).
    pkce: { required: () => true },
    claims: {
      // The roles claim rides on `openid` so every ID token carries it, as with Zitadel's roles scope.
      openid: ["sub", rolesClaim],
      email: ["email", "email_verified"],
      profile: ["name", "given_name", "family_name", "preferred_username"],
    },
    // Put scope claims (email, name) into the ID token too, not only at userinfo.
    conformIdTokenClaims: false,
    // oidc-provider awaits each of these hooks inside its own async code: plain returns and throws suffice.
    findAccount(_ctx: unknown, sub: string) {
      const account = accounts().find((a) => a.sub === sub);
      if (!account) return undefined;
      return {
        accountId: account.sub,
        claims(use: string) {
          const roles =
            use === "id_token" && opts.rolesInIdToken === false
              ? {}
              : { [rolesClaim]: rolesClaimOf(account.roles, orgs) };
          return {
            sub: account.sub,
            email: account.email,
            email_verified: true,
            name: account.name,
            given_name: account.givenName,
            family_name: account.familyName,
            preferred_username: account.login,
            ...roles,
          };
        },
      };
    },
    // Access tokens carry who and which role, so the backend needs no userinfo call (Zitadel does the
    // same with "user roles/info inside access token").
    extraTokenClaims(_ctx: unknown, token: TokenLike) {
      const account = token.accountId ? accounts().find((a) => a.sub === token.accountId) : undefined;
      if (!account) return undefined;
      return { email: account.email, name: account.name, [rolesClaim]: rolesClaimOf(account.roles, orgs) };
    },
    features: {
      devInteractions: { enabled: false },
      revocation: { enabled: true },
      rpInitiatedLogout: {
        enabled: true,
        logoutSource(ctx: KoaLikeContext, form: string) {
          ctx.body = page(
            "Sign out",
            `<h1>Sign out of ${escapeHtml(ctx.host)}?</h1>${form}
<button autofocus type="submit" form="op.logoutForm" value="yes" name="logout">Yes, sign me out</button>
<button type="submit" form="op.logoutForm">No, stay signed in</button>`,
          );
        },
        postLogoutSuccessSource(ctx: KoaLikeContext) {
          ctx.body = page("Signed out", "<h1>Signed out</h1>");
        },
      },
      resourceIndicators: {
        enabled: true,
        // Every authorization request is for our API unless it names another (which is refused).
        defaultResource: () => resource,
        // Without this, a request with scope=openid would get an opaque userinfo-only access token.
        useGrantedResource: () => true,
        getResourceServerInfo(_ctx: unknown, indicator: string) {
          if (indicator !== resource) throw new mod.errors.InvalidTarget("unknown resource indicator");
          return {
            scope: "",
            audience,
            accessTokenTTL,
            accessTokenFormat: "jwt",
            jwt: { sign: { alg: signingAlg } },
          };
        },
      },
    },
    ttl: {
      AccessToken: (_ctx: unknown, token: TokenLike) => token.resourceServer?.accessTokenTTL ?? accessTokenTTL,
      AuthorizationCode: 60,
      IdToken: 3600,
      Interaction: 600,
      Session: 8 * 3600,
      Grant: 8 * 3600,
      RefreshToken: 8 * 3600,
    },
    clientBasedCORS: () => false,
    renderError(ctx: KoaLikeContext, out: Record<string, unknown>) {
      ctx.type = "html";
      const rows = Object.entries(out)
        .map(([k, v]) => `<p><strong>${escapeHtml(k)}</strong>: ${escapeHtml(String(v))}</p>`)
        .join("");
      ctx.body = page("Error", `<h1>Something went wrong</h1>${rows}`);
    },
  };
}

// ---------------------------------------------------------------------------------------------------
// Interaction routes (login form; consent auto-granted: every registered client is ours)

const MAX_FORM_BYTES = 16 * 1024;

async function readForm(req: IncomingMessage): Promise<URLSearchParams> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of req) {
    const buf = chunk as Buffer;
    size += buf.length;
    if (size > MAX_FORM_BYTES) throw new Error("form too large");
    chunks.push(buf);
  }
  return new URLSearchParams(Buffer.concat(chunks).toString("utf8"));
}

function sendHtml(res: ServerResponse, status: number, html: string): void {
  res.writeHead(status, {
    "content-type": "text/html; charset=utf-8",
    "cache-control": "no-store",
    // No form-action: browsers apply it to the redirect chain back to the client's redirect_uri.
    "content-security-policy": "default-src 'none'; style-src 'unsafe-inline'; frame-ancestors 'none'",
    "x-content-type-options": "nosniff",
  });
  res.end(html);
}

function redirect(res: ServerResponse, location: string): void {
  res.writeHead(303, { location, "cache-control": "no-store", "content-length": "0" });
  res.end();
}

async function autoConsent(provider: ProviderInstance, details: InteractionDetails): Promise<InteractionResults> {
  const accountId = details.session?.accountId;
  const clientId = details.params.client_id;
  if (!accountId || typeof clientId !== "string") throw new Error("consent without a logged-in session");
  const grant =
    (details.grantId ? await provider.Grant.find(details.grantId) : undefined) ??
    new provider.Grant({ accountId, clientId });
  const d = details.prompt.details;
  if (d.missingOIDCScope) grant.addOIDCScope(d.missingOIDCScope.join(" "));
  if (d.missingOIDCClaims) grant.addOIDCClaims(d.missingOIDCClaims);
  for (const [indicator, scopes] of Object.entries(d.missingResourceScopes ?? {})) {
    grant.addResourceScope(indicator, scopes.join(" "));
  }
  const grantId = await grant.save();
  return { consent: details.grantId ? {} : { grantId } };
}

async function handleInteraction(
  provider: ProviderInstance,
  req: IncomingMessage,
  res: ServerResponse,
  path: string,
  accounts: () => IdpAccount[],
): Promise<void> {
  const m = /^\/interaction\/([A-Za-z0-9_-]+)(?:\/(login|abort))?$/.exec(path);
  if (!m) {
    sendHtml(res, 404, page("Not found", "<h1>Not found</h1>"));
    return;
  }
  const action = m.at(2); // an optional group: undefined when absent
  let details: InteractionDetails;
  try {
    details = await provider.interactionDetails(req, res);
  } catch {
    // Expired or foreign interaction (cookie missing): the user has to start the sign-in again.
    sendHtml(res, 400, page("Sign-in expired", "<h1>This sign-in has expired</h1><p>Go back and start again.</p>"));
    return;
  }
  if (details.uid !== m[1]) {
    sendHtml(res, 400, page("Error", "<h1>Interaction mismatch</h1>"));
    return;
  }
  const clientId = typeof details.params.client_id === "string" ? details.params.client_id : "unknown client";

  if (action === "abort" && req.method === "GET") {
    const to = await provider.interactionResult(req, res, {
      error: "access_denied",
      error_description: "End-User aborted interaction",
    });
    redirect(res, to);
    return;
  }

  if (action === "login" && req.method === "POST") {
    if (details.prompt.name !== "login") {
      sendHtml(res, 400, page("Error", "<h1>No sign-in pending</h1>"));
      return;
    }
    const form = await readForm(req);
    const list = accounts();
    const login = form.get("login")?.trim() ?? "";
    const account = list.find((a) => a.login === login);
    if (!account || !passwordMatches(form.get("password") ?? "", account.login)) {
      // 401 (not 200) so a headless client can tell a rejected login from the next page.
      sendHtml(res, 401, loginPage(details.uid, clientId, list, "Unknown account or wrong password."));
      return;
    }
    const to = await provider.interactionResult(
      req,
      res,
      { login: { accountId: account.sub, amr: ["pwd"] } },
      { mergeWithLastSubmission: false },
    );
    redirect(res, to);
    return;
  }

  if (action === undefined && req.method === "GET") {
    if (details.prompt.name === "login") {
      sendHtml(res, 200, loginPage(details.uid, clientId, accounts()));
      return;
    }
    if (details.prompt.name === "consent") {
      const to = await provider.interactionResult(req, res, await autoConsent(provider, details), {
        mergeWithLastSubmission: true,
      });
      redirect(res, to);
      return;
    }
    sendHtml(res, 400, page("Error", `<h1>Unsupported prompt ${escapeHtml(details.prompt.name)}</h1>`));
    return;
  }
  res.writeHead(405, { allow: action === "login" ? "POST" : "GET" });
  res.end();
}

// ---------------------------------------------------------------------------------------------------

const consoleLog = {
  info: (msg: string) => console.log(msg),
  warn: (msg: string) => console.warn(msg),
};

/** Starts the provider; resolves once it listens. */
export async function startEmbeddedIdp(opts: EmbeddedIdpOptions): Promise<RunningIdp> {
  const log = opts.log ?? consoleLog;
  log.warn(
    "WARNING: starting the EMBEDDED development OIDC provider (demo accounts with known passwords, " +
      "in-memory sessions). Never use it in production: set OIDC_ISSUER to your Zitadel instead.",
  );
  const jwks = loadOrCreateJwks(opts.dataDir, opts.keyAlg);
  const accounts = () => loadAccounts(opts.accountsFile, (msg) => log.warn(`embedded IdP: ${msg}`));
  // oidc-provider is ESM-only; Node >= 20.19 loads it through require(esm). Lazy: importing this module
  // for its constants must not load it.
  // eslint-disable-next-line @typescript-eslint/no-require-imports -- untyped ESM-only package, loaded lazily
  const mod = require("oidc-provider") as OidcProviderModule;

  // Listen first, then build the provider: with port 0 the issuer is known only once bound.
  let handler = (_req: IncomingMessage, res: ServerResponse): void => {
    res.writeHead(503).end();
  };
  const server: Server = createServer((req, res) => handler(req, res));
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(opts.port, () => resolve());
  });
  const port = (server.address() as AddressInfo).port;
  const issuer = `http://${opts.host ?? "localhost"}:${port}`;

  const provider = new mod.Provider(issuer, buildConfiguration(mod, opts, jwks, accounts));
  provider.on("server_error", (_ctx: unknown, err: unknown) => log.warn(`embedded IdP server error: ${String(err)}`));
  const providerCallback = provider.callback();

  handler = (req, res) => {
    const path = (req.url ?? "/").split("?")[0] ?? "/";
    if (path.startsWith("/interaction/")) {
      handleInteraction(provider, req, res, path, accounts).catch((err: unknown) => {
        log.warn(`embedded IdP interaction error: ${String(err)}`);
        if (!res.headersSent) sendHtml(res, 500, page("Error", "<h1>Something went wrong</h1>"));
        else res.end();
      });
      return;
    }
    providerCallback(req, res);
  };

  log.info(`${READY_LINE_PREFIX}${issuer}`);
  return {
    issuer,
    port,
    close: () =>
      new Promise<void>((resolve) => {
        server.close(() => resolve());
        // Keep-alive sockets would hold close() open.
        server.closeAllConnections();
      }),
  };
}

/** `--name value` or `--name=value`. */
function argValue(argv: readonly string[], name: string): string | undefined {
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i];
    if (a === `--${name}`) return argv[i + 1];
    if (a.startsWith(`--${name}=`)) return a.slice(name.length + 3);
  }
  return undefined;
}

function parsePort(raw: string | undefined, fallback: number): number {
  if (raw === undefined) return fallback;
  if (!/^\d+$/.test(raw) || Number(raw) > 65535) throw new Error(`--port must be 0..65535, got "${raw}"`);
  return Number(raw);
}

function parseTtl(raw: string | undefined): number | undefined {
  if (raw === undefined || raw.trim() === "") return undefined;
  if (!/^\d+$/.test(raw.trim()) || Number(raw) < 1) {
    throw new Error(`EMBEDDED_IDP_ACCESS_TOKEN_TTL_S must be a positive integer, got "${raw}"`);
  }
  return Number(raw);
}

/** The EMBEDDED_IDP_* knobs that make this provider look like another IdP (see the module doc). */
function envKnobs(
  env: NodeJS.ProcessEnv,
): Pick<EmbeddedIdpOptions, "host" | "keyAlg" | "roleOrgs" | "rolesInIdToken" | "accountsFile"> {
  const host = env.EMBEDDED_IDP_HOST?.trim() || undefined;
  if (host !== undefined && !/^[A-Za-z0-9.-]{1,253}$/.test(host))
    throw new Error(`EMBEDDED_IDP_HOST must be a host name, got "${host}"`);
  const alg = env.EMBEDDED_IDP_KEY_ALG?.trim().toUpperCase() || undefined;
  if (alg !== undefined && alg !== "RS256" && alg !== "ES256")
    throw new Error(`EMBEDDED_IDP_KEY_ALG must be RS256 or ES256, got "${alg}"`);
  const inIdToken = env.EMBEDDED_IDP_ROLES_IN_ID_TOKEN?.trim().toLowerCase();
  if (inIdToken !== undefined && inIdToken !== "" && inIdToken !== "true" && inIdToken !== "false") {
    throw new Error(`EMBEDDED_IDP_ROLES_IN_ID_TOKEN must be true or false, got "${inIdToken}"`);
  }
  return {
    host,
    keyAlg: alg,
    roleOrgs: parseRoleOrgs(env.EMBEDDED_IDP_ROLE_ORGS),
    rolesInIdToken: inIdToken !== "false",
    accountsFile: env.EMBEDDED_IDP_ACCOUNTS_FILE?.trim() || undefined,
  };
}

async function main(): Promise<void> {
  const config = loadConfig();
  const argv = process.argv.slice(2);
  const idp = await startEmbeddedIdp({
    config,
    port: parsePort(argValue(argv, "port"), config.oidc.embeddedPort),
    dataDir: argValue(argv, "data-dir") ?? config.dataDir,
    accessTokenTtlS: parseTtl(process.env.EMBEDDED_IDP_ACCESS_TOKEN_TTL_S),
    ...envKnobs(process.env),
  });
  let stopping = false;
  const stop = (signal: string) => {
    if (stopping) return;
    stopping = true;
    console.log(`embedded IdP stopping (${signal})`);
    // Hard deadline: a stuck socket must not keep the platform's shutdown waiting.
    setTimeout(() => process.exit(0), 3000).unref();
    idp.close().then(
      () => process.exit(0),
      () => process.exit(0),
    );
  };
  process.on("SIGTERM", () => stop("SIGTERM"));
  process.on("SIGINT", () => stop("SIGINT"));
}

if (require.main === module) {
  main().catch((err: unknown) => {
    console.error(`embedded IdP failed to start: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  });
}
