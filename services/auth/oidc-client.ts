/**
 * The backend as an OpenID Connect relying party (authorization code flow with PKCE): discovery, the
 * authorization URL and the code exchange. Plain `fetch`; ID token signatures are checked by
 * the token verifier (same JWKS cache as Bearer tokens), not here.
 *
 * Failures, by error `code`:
 *  - 400 BAD_REQUEST: the IdP refused (its OAuth error code is in the detail: invalid_grant, …).
 *  - 503 SERVICE_UNAVAILABLE: the IdP is unreachable, answers 5xx, or its discovery document is unusable.
 */
import { badRequest, serviceUnavailable } from "../../platform/errors";
import { safeErrorCode } from "../../lib/web-session.rules";

export interface OidcClientOptions {
  issuer: string;
  clientId: string;
  /** Confidential client (client_secret_basic); without it the client is public and relies on PKCE alone. */
  clientSecret?: string;
  redirectUri: string;
  scopes: string;
  /** Per request to the IdP. Default 5000. */
  timeoutMs?: number;
}

export interface ProviderMetadata {
  issuer: string;
  authorization_endpoint: string;
  token_endpoint: string;
  /** RFC 9207: the IdP adds `iss` to its authorization responses, so the callback must check it. */
  authorization_response_iss_parameter_supported?: boolean;
}

export interface TokenResponse {
  idToken: string;
  accessToken?: string;
}

export interface OidcClient {
  metadata(): Promise<ProviderMetadata>;
  authorizationUrl(p: { state: string; nonce: string; codeChallenge: string }): Promise<string>;
  exchangeCode(code: string, codeVerifier: string): Promise<TokenResponse>;
}

/** Discovery is refetched after this long (endpoints rarely move), and retried this soon after a failure. */
const METADATA_MAX_AGE_MS = 3600_000;
const METADATA_RETRY_MS = 5000;
const MAX_RESPONSE_BYTES = 256 * 1024;

const idpDown = () => serviceUnavailable("Identity provider unavailable, try again shortly");
const isHttpUrl = (v: unknown): v is string => typeof v === "string" && /^https?:\/\//i.test(v) && URL.canParse(v);

async function readJson(res: Response): Promise<Record<string, unknown> | null> {
  const text = await res.text();
  if (text.length > MAX_RESPONSE_BYTES) return null;
  try {
    const v: unknown = JSON.parse(text);
    return typeof v === "object" && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : null;
  } catch {
    return null;
  }
}

export function createOidcClient(opts: OidcClientOptions): OidcClient {
  const issuer = opts.issuer.replace(/\/+$/, "");
  const timeoutMs = opts.timeoutMs ?? 5000;
  let cached: { meta: ProviderMetadata; at: number } | undefined;
  let pending: Promise<ProviderMetadata> | undefined;
  let failedAt = 0;

  async function call(url: string, init: RequestInit): Promise<Response> {
    try {
      return await fetch(url, { ...init, redirect: "manual", signal: AbortSignal.timeout(timeoutMs) });
    } catch {
      throw idpDown();
    }
  }

  async function discover(): Promise<ProviderMetadata> {
    const res = await call(`${issuer}/.well-known/openid-configuration`, { headers: { accept: "application/json" } });
    const doc = res.status === 200 ? await readJson(res) : null;
    // OIDC Discovery §4.3: the document must name the issuer we asked for.
    if (!doc || doc.issuer !== issuer || !isHttpUrl(doc.authorization_endpoint) || !isHttpUrl(doc.token_endpoint)) {
      throw idpDown();
    }
    return {
      issuer,
      authorization_endpoint: doc.authorization_endpoint,
      token_endpoint: doc.token_endpoint,
      authorization_response_iss_parameter_supported: doc.authorization_response_iss_parameter_supported === true,
    };
  }

  async function metadata(): Promise<ProviderMetadata> {
    if (cached && Date.now() - cached.at < METADATA_MAX_AGE_MS) return cached.meta;
    if (Date.now() - failedAt < METADATA_RETRY_MS) {
      // A stale document beats none while the IdP blips.
      if (cached) return cached.meta;
      throw idpDown();
    }
    pending ??= discover()
      .then((meta) => {
        cached = { meta, at: Date.now() };
        return meta;
      })
      .catch((err: unknown) => {
        failedAt = Date.now();
        if (cached) return cached.meta;
        throw err;
      })
      .finally(() => {
        pending = undefined;
      });
    return pending;
  }

  const clientAuth = (): { headers: Record<string, string>; body: Record<string, string> } =>
    opts.clientSecret === undefined
      ? { headers: {}, body: { client_id: opts.clientId } }
      : {
          // RFC 6749 §2.3.1: id and secret are form-encoded before base64.
          headers: {
            authorization: `Basic ${Buffer.from(`${encodeURIComponent(opts.clientId)}:${encodeURIComponent(opts.clientSecret)}`).toString("base64")}`,
          },
          body: {},
        };

  return {
    metadata,

    async authorizationUrl({ state, nonce, codeChallenge }) {
      const meta = await metadata();
      const url = new URL(meta.authorization_endpoint);
      url.search = new URLSearchParams({
        response_type: "code",
        client_id: opts.clientId,
        redirect_uri: opts.redirectUri,
        scope: opts.scopes,
        state,
        nonce,
        code_challenge: codeChallenge,
        code_challenge_method: "S256",
      }).toString();
      return url.href;
    },

    async exchangeCode(code, codeVerifier) {
      const meta = await metadata();
      const auth = clientAuth();
      const res = await call(meta.token_endpoint, {
        method: "POST",
        headers: { "content-type": "application/x-www-form-urlencoded", accept: "application/json", ...auth.headers },
        body: new URLSearchParams({
          grant_type: "authorization_code",
          code,
          redirect_uri: opts.redirectUri,
          code_verifier: codeVerifier,
          ...auth.body,
        }).toString(),
      });
      if (res.status >= 500) throw idpDown();
      const body = await readJson(res);
      if (res.status !== 200) {
        throw badRequest(`Login failed at the identity provider: ${safeErrorCode(body?.error)}`);
      }
      if (!body || typeof body.id_token !== "string") {
        throw badRequest("Login failed: the identity provider returned no ID token");
      }
      return {
        idToken: body.id_token,
        accessToken: typeof body.access_token === "string" ? body.access_token : undefined,
      };
    },
  };
}
