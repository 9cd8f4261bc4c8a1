/**
 * Headless OIDC authorization-code + PKCE (S256) flow against the embedded provider's HTML login
 * form, with plain `fetch` and a hand-rolled cookie jar. No ESM dependencies, so it runs in jest as
 * well as in the token CLI.
 *
 * The flow: discovery → authorize → (303s, cookies) → login page → POST the form → auto-consent →
 * 303 to the redirect URI, whose code we capture without following it → token endpoint.
 */
import { createHash, randomBytes } from "node:crypto";

export interface CodeFlowOptions {
  issuer: string;
  account: string;
  /** Defaults to the account name (the embedded provider's demo convention). */
  password?: string;
  clientId?: string;
  /** Confidential clients (e.g. the backend's): sent as client_secret_basic. */
  clientSecret?: string;
  redirectUri?: string;
  scope?: string;
  /** Per HTTP request. */
  timeoutMs?: number;
}

export interface CodeFlowTokens {
  accessToken: string;
  idToken: string;
  /** Seconds, as the token endpoint reported. */
  expiresIn: number;
}

export type CodeFlowErrorKind =
  /** Network failure, timeout or a 5xx: the provider is not (properly) reachable. */
  | "UNREACHABLE"
  /** The login form refused the account/password. */
  | "LOGIN_REJECTED"
  /** Anything else: an unexpected page, an OAuth error, a malformed response. */
  | "PROTOCOL";

export class CodeFlowError extends Error {
  constructor(
    readonly kind: CodeFlowErrorKind,
    message: string,
  ) {
    super(message);
    this.name = "CodeFlowError";
  }
}

const DEFAULT_CLIENT_ID = "autolabs-cli";
const DEFAULT_REDIRECT_URI = "http://127.0.0.1/cli-callback";
const MAX_HOPS = 15;

interface StoredCookie {
  name: string;
  value: string;
  path: string;
  expiresAt: number | null;
}

/**
 * Minimal RFC 6265 jar for one host: honours Path, Max-Age/Expires and deletion. Domain/Secure are
 * ignored because the flow talks to a single http origin.
 */
export class CookieJar {
  private readonly cookies = new Map<string, StoredCookie>();

  store(setCookieHeaders: readonly string[], requestUrl: URL): void {
    for (const header of setCookieHeaders) {
      const [pair, ...attrs] = header.split(";");
      const eq = pair.indexOf("=");
      if (eq <= 0) continue;
      const name = pair.slice(0, eq).trim();
      const value = pair.slice(eq + 1).trim();
      // Default path: the request path's "directory" (RFC 6265 §5.1.4).
      const lastSlash = requestUrl.pathname.lastIndexOf("/");
      let path = lastSlash > 0 ? requestUrl.pathname.slice(0, lastSlash) : "/";
      let expiresAt: number | null = null;
      for (const attr of attrs) {
        const i = attr.indexOf("=");
        const key = (i < 0 ? attr : attr.slice(0, i)).trim().toLowerCase();
        const val = i < 0 ? "" : attr.slice(i + 1).trim();
        if (key === "path" && val.startsWith("/")) path = val;
        else if (key === "max-age" && /^-?\d+$/.test(val)) expiresAt = Date.now() + Number(val) * 1000;
        else if (key === "expires" && expiresAt === null) {
          const t = Date.parse(val);
          if (!Number.isNaN(t)) expiresAt = t;
        }
      }
      const key = `${name};${path}`;
      if (expiresAt !== null && expiresAt <= Date.now()) this.cookies.delete(key);
      else this.cookies.set(key, { name, value, path, expiresAt });
    }
  }

  header(url: URL): string | undefined {
    const now = Date.now();
    const matching = [...this.cookies.values()]
      .filter((c) => (c.expiresAt === null || c.expiresAt > now) && pathMatches(url.pathname, c.path))
      // Longer paths first, as browsers send them.
      .sort((a, b) => b.path.length - a.path.length);
    return matching.length ? matching.map((c) => `${c.name}=${c.value}`).join("; ") : undefined;
  }
}

function pathMatches(requestPath: string, cookiePath: string): boolean {
  if (requestPath === cookiePath) return true;
  if (!requestPath.startsWith(cookiePath)) return false;
  return cookiePath.endsWith("/") || requestPath.charAt(cookiePath.length) === "/";
}

const b64url = (buf: Buffer): string => buf.toString("base64url");

async function request(
  url: URL,
  init: { method?: string; body?: string; headers?: Record<string, string> },
  jar: CookieJar,
  timeoutMs: number,
): Promise<Response> {
  const headers: Record<string, string> = { ...init.headers };
  const cookie = jar.header(url);
  if (cookie) headers.cookie = cookie;
  let res: Response;
  try {
    res = await fetch(url, {
      method: init.method ?? "GET",
      body: init.body,
      headers,
      redirect: "manual",
      signal: AbortSignal.timeout(timeoutMs),
    });
  } catch (err) {
    const cause = err instanceof Error && err.cause instanceof Error ? `: ${err.cause.message}` : "";
    throw new CodeFlowError("UNREACHABLE", `cannot reach ${url.origin} (${(err as Error).message}${cause})`);
  }
  jar.store(res.headers.getSetCookie(), url);
  if (res.status >= 500) {
    throw new CodeFlowError("UNREACHABLE", `${url.origin} answered ${res.status} for ${url.pathname}`);
  }
  return res;
}

function isRedirectTarget(location: URL, redirectUri: URL): boolean {
  // Loopback redirects may carry any port (RFC 8252); compare the rest.
  return (
    location.protocol === redirectUri.protocol &&
    location.hostname === redirectUri.hostname &&
    location.pathname === redirectUri.pathname
  );
}

interface Discovery {
  issuer: string;
  authorization_endpoint: string;
  token_endpoint: string;
}

async function discover(issuer: string, jar: CookieJar, timeoutMs: number): Promise<Discovery> {
  const url = new URL(`${issuer.replace(/\/+$/, "")}/.well-known/openid-configuration`);
  const res = await request(url, { headers: { accept: "application/json" } }, jar, timeoutMs);
  if (res.status !== 200) throw new CodeFlowError("PROTOCOL", `discovery at ${url.href} answered ${res.status}`);
  const doc = (await res.json().catch(() => null)) as Partial<Discovery> | null;
  if (!doc || typeof doc.authorization_endpoint !== "string" || typeof doc.token_endpoint !== "string") {
    throw new CodeFlowError("PROTOCOL", `discovery at ${url.href} is not an OpenID configuration`);
  }
  // OIDC Discovery §4.3: the document must name the issuer we asked.
  if (doc.issuer !== issuer.replace(/\/+$/, "")) {
    throw new CodeFlowError("PROTOCOL", `discovery names issuer ${String(doc.issuer)}, expected ${issuer}`);
  }
  return doc as Discovery;
}

/** Runs the whole flow for one account; throws CodeFlowError with a kind the caller can report. */
export async function runCodeFlow(opts: CodeFlowOptions): Promise<CodeFlowTokens> {
  const timeoutMs = opts.timeoutMs ?? 10_000;
  const clientId = opts.clientId ?? DEFAULT_CLIENT_ID;
  const redirectUri = new URL(opts.redirectUri ?? DEFAULT_REDIRECT_URI);
  const jar = new CookieJar();
  const meta = await discover(opts.issuer, jar, timeoutMs);

  const verifier = b64url(randomBytes(32));
  const challenge = b64url(createHash("sha256").update(verifier).digest());
  const state = b64url(randomBytes(16));
  const nonce = b64url(randomBytes(16));

  let url = new URL(meta.authorization_endpoint);
  url.search = new URLSearchParams({
    client_id: clientId,
    redirect_uri: redirectUri.href,
    response_type: "code",
    scope: opts.scope ?? "openid profile email",
    state,
    nonce,
    code_challenge: challenge,
    code_challenge_method: "S256",
  }).toString();

  let res = await request(url, {}, jar, timeoutMs);
  let loggedIn = false;
  let code: string | undefined;
  for (let hop = 0; hop < MAX_HOPS && code === undefined; hop++) {
    if (res.status >= 300 && res.status < 400) {
      const location = res.headers.get("location");
      if (!location) throw new CodeFlowError("PROTOCOL", `redirect without Location from ${url.pathname}`);
      const next = new URL(location, url);
      if (isRedirectTarget(next, redirectUri)) {
        // Our redirect URI: read the code, never follow it (nothing listens there).
        const p = next.searchParams;
        if (p.get("error")) {
          throw new CodeFlowError(
            "PROTOCOL",
            `authorization failed: ${p.get("error")} ${p.get("error_description") ?? ""}`.trim(),
          );
        }
        if (p.get("state") !== state)
          throw new CodeFlowError("PROTOCOL", "state mismatch in the authorization response");
        const iss = p.get("iss");
        if (iss !== null && iss !== meta.issuer)
          throw new CodeFlowError("PROTOCOL", "iss mismatch in the authorization response");
        code = p.get("code") ?? undefined;
        if (!code) throw new CodeFlowError("PROTOCOL", "authorization response carries no code");
        break;
      }
      url = next;
      res = await request(url, {}, jar, timeoutMs);
      continue;
    }
    if (res.status === 200 && /^\/interaction\/[^/]+$/.test(url.pathname) && !loggedIn) {
      // The login page: post the same form a person would.
      await res.body?.cancel();
      loggedIn = true;
      const loginUrl = new URL(`${url.pathname}/login`, url);
      res = await request(
        loginUrl,
        {
          method: "POST",
          body: new URLSearchParams({ login: opts.account, password: opts.password ?? opts.account }).toString(),
          headers: { "content-type": "application/x-www-form-urlencoded" },
        },
        jar,
        timeoutMs,
      );
      if (res.status === 401) {
        await res.body?.cancel();
        throw new CodeFlowError("LOGIN_REJECTED", `the provider rejected the login of account "${opts.account}"`);
      }
      url = loginUrl;
      continue;
    }
    const text = await res.text().catch(() => "");
    const snippet = text
      .replace(/<[^>]*>/g, " ")
      .replace(/\s+/g, " ")
      .trim()
      .slice(0, 200);
    throw new CodeFlowError("PROTOCOL", `unexpected ${res.status} at ${url.pathname}${snippet ? `: ${snippet}` : ""}`);
  }
  if (code === undefined) throw new CodeFlowError("PROTOCOL", "too many redirects before the authorization code");

  const tokenRes = await request(
    new URL(meta.token_endpoint),
    {
      method: "POST",
      body: new URLSearchParams({
        grant_type: "authorization_code",
        code,
        redirect_uri: redirectUri.href,
        code_verifier: verifier,
        // Public clients identify themselves in the body; confidential ones through Basic auth.
        ...(opts.clientSecret === undefined ? { client_id: clientId } : {}),
      }).toString(),
      headers: {
        "content-type": "application/x-www-form-urlencoded",
        accept: "application/json",
        ...(opts.clientSecret === undefined
          ? {}
          : {
              // RFC 6749 §2.3.1: id and secret are form-encoded before base64.
              authorization: `Basic ${Buffer.from(
                `${encodeURIComponent(clientId)}:${encodeURIComponent(opts.clientSecret)}`,
              ).toString("base64")}`,
            }),
      },
    },
    jar,
    timeoutMs,
  );
  const body = (await tokenRes.json().catch(() => null)) as Record<string, unknown> | null;
  if (tokenRes.status !== 200 || !body) {
    const err =
      body && typeof body.error === "string"
        ? `${body.error} ${typeof body.error_description === "string" ? body.error_description : ""}`
        : "";
    throw new CodeFlowError("PROTOCOL", `token endpoint answered ${tokenRes.status} ${err}`.trim());
  }
  const { access_token: accessToken, id_token: idToken, expires_in: expiresIn } = body;
  if (typeof accessToken !== "string" || typeof idToken !== "string" || typeof expiresIn !== "number") {
    throw new CodeFlowError("PROTOCOL", "token response lacks access_token, id_token or expires_in");
  }
  return { accessToken, idToken, expiresIn };
}
