/**
 * Rules of the browser login (OIDC code flow) and of cookie sessions, shared by the gateway and the auth
 * service. Pure: no framework imports, no I/O (node:crypto only), so every rule is unit-tested on its own.
 *
 *  - Secrets (session ids, login states, nonces, PKCE verifiers) are 256-bit random, base64url.
 *  - The session store never sees a session id, only its SHA-256: a dump of Redis yields no usable cookie.
 *  - Cookies: HttpOnly, SameSite=Lax, Path=/; Secure and the `__Host-` prefix when PUBLIC_URL is https
 *    (the prefix makes the browser refuse a cookie set by a sibling subdomain or over http).
 *  - `redirect_to` must name a page of FRONTEND_URL: same origin, under its path; anything else is refused.
 *  - CSRF, for requests authenticated by the session cookie only: a state-changing method must carry
 *    `Content-Type: application/json` (a cross-site form cannot send it, and a cross-site fetch with it
 *    needs a CORS preflight we refuse) and, when the browser says where it comes from, come from
 *    FRONTEND_URL or PUBLIC_URL (Origin; else Sec-Fetch-Site).
 */
import { createHash, randomBytes } from "node:crypto";

/** One-time login state (state, nonce, PKCE verifier) is kept at most this long (issue: ≤ 10 min). */
export const LOGIN_STATE_TTL_S = 600;

/** 32 random bytes in base64url without padding. */
export const SECRET_RE = /^[A-Za-z0-9_-]{43}$/;

export const randomSecret = (): string => randomBytes(32).toString("base64url");

/** PKCE S256 (RFC 7636 §4.2). */
export const pkceChallenge = (verifier: string): string => createHash("sha256").update(verifier).digest("base64url");

/** What the store keeps instead of a secret that the browser holds (session id, login binding). */
export const digestOf = (secret: string): string => createHash("sha256").update(secret).digest("base64url");

// ---------------------------------------------------------------------------------------------------
// Cookies

export interface CookiePolicy {
  /** PUBLIC_URL is https: Secure attribute and `__Host-` names. */
  secure: boolean;
  sessionName: string;
  /** Binds a pending login to the browser that started it (login CSRF / code injection). */
  loginName: string;
}

export function cookiePolicy(publicUrl: string): CookiePolicy {
  const secure = new URL(publicUrl).protocol === "https:";
  const prefix = secure ? "__Host-" : "";
  return { secure, sessionName: `${prefix}autolabs_session`, loginName: `${prefix}autolabs_login` };
}

/** A Set-Cookie value with our fixed attributes; maxAgeS 0 deletes the cookie. */
export function setCookie(policy: CookiePolicy, name: string, value: string, maxAgeS: number): string {
  const parts = [`${name}=${value}`, "Path=/", `Max-Age=${Math.max(0, Math.floor(maxAgeS))}`];
  if (maxAgeS <= 0) parts.push("Expires=Thu, 01 Jan 1970 00:00:00 GMT");
  parts.push("HttpOnly", "SameSite=Lax");
  if (policy.secure) parts.push("Secure");
  return parts.join("; ");
}

/**
 * Our two cookies from a Cookie header. The first occurrence of a name wins (the most specific path comes
 * first, RFC 6265 §5.4); values that are not of our secret format are ignored rather than passed on.
 */
export function readAuthCookies(
  header: string | string[] | undefined,
  policy: CookiePolicy,
): { session?: string; login?: string } {
  const out: { session?: string; login?: string } = {};
  if (header === undefined) return out;
  const text = Array.isArray(header) ? header.join("; ") : header;
  if (text.length > 16 * 1024) return out;
  for (const part of text.split(";")) {
    const eq = part.indexOf("=");
    if (eq < 0) continue;
    const name = part.slice(0, eq).trim();
    const value = part.slice(eq + 1).trim();
    const key = name === policy.sessionName ? "session" : name === policy.loginName ? "login" : undefined;
    if (key === undefined || out[key] !== undefined) continue;
    // A present but malformed cookie is still "present" (so a tampered one cannot fall back to a later one).
    out[key] = value;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------------
// redirect_to

export type RedirectCheck = { ok: true; url: string } | { ok: false; reason: string };

/**
 * Where the browser goes after login: `redirect_to` if it is a page of FRONTEND_URL, FRONTEND_URL when
 * absent. Accepts a path ("/courses/3?tab=labs#x") or an absolute URL on FRONTEND_URL's origin; refuses
 * other origins, protocol-relative ("//evil"), backslash and control-character tricks, userinfo, and
 * paths outside FRONTEND_URL's own path. The answer is always absolute on FRONTEND_URL's origin.
 */
export function resolveRedirectTo(raw: unknown, frontendUrl: string): RedirectCheck {
  if (raw === undefined || raw === null || raw === "") return { ok: true, url: frontendUrl };
  if (typeof raw !== "string") return { ok: false, reason: "redirect_to must be a single value" };
  if (raw.length > 2048) return { ok: false, reason: "redirect_to is too long" };
  // Browsers strip tabs/newlines and treat "\" as "/": "/\evil.com" would leave our origin.
  // eslint-disable-next-line no-control-regex -- matching control characters is the point of this check
  if (/[\u0000-\u0020\u007f\\]/.test(raw))
    return { ok: false, reason: "redirect_to contains characters a URL must not" };
  const front = new URL(frontendUrl);
  let target: URL;
  try {
    if (raw.startsWith("/") && !raw.startsWith("//")) target = new URL(raw, front.origin);
    else if (/^https?:\/\//i.test(raw)) target = new URL(raw);
    else return { ok: false, reason: "redirect_to must be a path on the frontend" };
  } catch {
    return { ok: false, reason: "redirect_to is not a URL" };
  }
  if (target.origin !== front.origin || target.username !== "" || target.password !== "") {
    return { ok: false, reason: "redirect_to must stay on the frontend (FRONTEND_URL)" };
  }
  if (target.pathname.startsWith("//")) return { ok: false, reason: "redirect_to must be a path on the frontend" };
  const base = front.pathname.replace(/\/+$/, "");
  if (base !== "" && target.pathname !== base && !target.pathname.startsWith(`${base}/`)) {
    return { ok: false, reason: "redirect_to must stay on the frontend (FRONTEND_URL)" };
  }
  return { ok: true, url: target.href };
}

// ---------------------------------------------------------------------------------------------------
// CSRF

const SAFE_METHODS = new Set(["GET", "HEAD", "OPTIONS"]);

export interface CsrfRequest {
  method: string;
  contentType?: string;
  origin?: string;
  secFetchSite?: string;
}

export type CsrfVerdict = { ok: true } | { ok: false; reason: string };

/** Origins a cookie-authenticated change may come from: FRONTEND_URL's and PUBLIC_URL's. */
export function trustedOrigins(frontendUrl: string, publicUrl: string): string[] {
  return [...new Set([new URL(frontendUrl).origin, new URL(publicUrl).origin])];
}

export function checkCsrf(req: CsrfRequest, origins: readonly string[]): CsrfVerdict {
  if (SAFE_METHODS.has(req.method.toUpperCase())) return { ok: true };
  const type = (req.contentType ?? "").split(";")[0].trim().toLowerCase();
  if (type !== "application/json") {
    return { ok: false, reason: "Cookie-authenticated changes must be sent with Content-Type: application/json" };
  }
  if (req.origin !== undefined) {
    // "null" (sandboxed frames, some redirects) is never one of ours.
    if (!origins.includes(req.origin)) return { ok: false, reason: "Cross-site request refused" };
    return { ok: true };
  }
  // Browsers send Origin on every non-GET request; without it, trust only what the fetch metadata says.
  const site = req.secFetchSite?.trim().toLowerCase();
  if (site !== undefined && site !== "same-origin" && site !== "same-site" && site !== "none") {
    return { ok: false, reason: "Cross-site request refused" };
  }
  return { ok: true };
}

// ---------------------------------------------------------------------------------------------------
// Stored records

/** The server-side half of a pending login, under its `state` for LOGIN_STATE_TTL_S, taken once. */
export interface LoginState {
  /** PKCE verifier. */
  v: string;
  nonce: string;
  /** Absolute URL on FRONTEND_URL. */
  to: string;
  /** digestOf(login-binding cookie). */
  bind: string;
  /** Created, epoch ms. */
  at: number;
}

/** A session: which user, since when, until when (fixed: never extended). */
export interface SessionRecord {
  uid: number;
  /** Created, epoch ms. */
  at: number;
  /** Expires, epoch ms (the store's TTL ends it too). */
  exp: number;
}

function parseJsonObject(raw: string): Record<string, unknown> | null {
  try {
    const v: unknown = JSON.parse(raw);
    return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

export function parseLoginState(raw: string): LoginState | null {
  const o = parseJsonObject(raw);
  if (!o) return null;
  const { v, nonce, to, bind, at } = o;
  if (
    typeof v !== "string" ||
    typeof nonce !== "string" ||
    typeof to !== "string" ||
    typeof bind !== "string" ||
    typeof at !== "number"
  ) {
    return null;
  }
  return { v, nonce, to, bind, at };
}

export function parseSessionRecord(raw: string): SessionRecord | null {
  const o = parseJsonObject(raw);
  if (!o) return null;
  const { uid, at, exp } = o;
  if (!Number.isSafeInteger(uid) || (uid as number) <= 0 || typeof at !== "number" || typeof exp !== "number")
    return null;
  return { uid: uid as number, at, exp };
}

/** An OAuth error code from the IdP, safe to echo (RFC 6749 §4.1.2.1 charset, bounded). */
export function safeErrorCode(raw: unknown): string {
  return typeof raw === "string" && /^[\x20-\x21\x23-\x5B\x5D-\x7E]{1,64}$/.test(raw) ? raw : "invalid_response";
}
