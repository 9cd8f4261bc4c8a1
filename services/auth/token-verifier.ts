/**
 * Local validation of Bearer JWT access tokens against the IdP's JWKS (Zitadel or the embedded one).
 *
 * Outcomes, by error `code`:
 *  - UNAUTHORIZED (401): anything wrong with the token itself — format, algorithm outside the
 *    allow-list (so `none` and HS256-with-the-public-key never get near a key), signature, unknown
 *    kid, issuer, audience, exp/nbf, iat in the future. The detail stays short and never echoes token content.
 *  - SERVICE_UNAVAILABLE (503): we could not get the IdP's keys (discovery or JWKS unreachable with
 *    no usable cached keys). A client's token is not "wrong" because our IdP is down.
 *
 * Keys are cached by jose (refetched after cacheMaxAge; an unknown kid triggers at most one refetch
 * per cooldown, so random kids cannot hammer the IdP). If a refetch fails, the last good key set is
 * still used, so an IdP blip does not log everyone out; and for one cooldown after a failed fetch no
 * request tries again (an IdP that is down is asked at most once per cooldown, not once per request).
 *
 * Bearer tokens verified once are remembered (services/auth/verified-token-cache.ts) for as long as a fresh
 * verification would still accept them against the same, fresh key set: the signature check runs once per
 * token and key set. Stale keys (past max age, IdP down) bypass the cache, so refetch and outage behave as
 * without it. Checks with overrides (ID tokens at login) always run in full.
 */
import {
  createLocalJWKSet,
  createRemoteJWKSet,
  errors as joseErrors,
  jwksCache,
  jwtVerify,
  type JWKSCacheInput,
  type JSONWebKeySet,
  type JWTPayload,
  type JWTVerifyGetKey,
} from "jose";
import { serviceUnavailable, unauthorized } from "../../platform/errors";
import { createVerifiedTokenCache } from "./verified-token-cache";

export type VerifierAlgorithm = "RS256" | "ES256";

export interface TokenVerifierOptions {
  issuer: string;
  /** Accepted `aud` (the token's aud may be an array containing it). */
  audience: string;
  /** Skips discovery when given. */
  jwksUri?: string;
  algorithms: VerifierAlgorithm[];
  clockToleranceS: number;
  /** Per request to the IdP (discovery, JWKS). Default 5000. */
  httpTimeoutMs?: number;
  /** Minimum time between JWKS refetches caused by unknown kids. Default 30000. */
  jwksCooldownMs?: number;
  /** Age after which the cached JWKS is refetched. Default 600000. */
  jwksMaxAgeMs?: number;
  /** Verified Bearer tokens remembered (LRU). Default 10000 (about 10 MB); 0 turns the cache off. */
  verifiedTokenCacheSize?: number;
}

/** Per-call checks that differ from the Bearer defaults: ID tokens share the keys but not the audience. */
export interface VerifyOverrides {
  /** Accepted `aud` instead of the configured one (an ID token's is the client id). */
  audience?: string;
  /** Claims that must be present; default ["sub", "exp"]. */
  requiredClaims?: string[];
}

export interface TokenVerifier {
  /** Verified payload, or throws UNAUTHORIZED / SERVICE_UNAVAILABLE (see module doc). */
  verify(token: string, overrides?: VerifyOverrides): Promise<JWTPayload>;
  /** Resolves discovery and loads the keys now (e.g. at boot); throws SERVICE_UNAVAILABLE on failure. */
  warmUp(): Promise<void>;
}

/** Longer than any sane access token: refuse before parsing. */
const MAX_TOKEN_LENGTH = 16 * 1024;
/** After a failed discovery, fail fast for this long instead of stalling every request on a timeout. */
const DISCOVERY_RETRY_MS = 5000;

/** Key-selection failures caused by the token (its kid/alg), not by the IdP being unreachable. */
const TOKEN_KEY_ERRORS = new Set<string>([
  joseErrors.JWKSNoMatchingKey.code,
  joseErrors.JWKSMultipleMatchingKeys.code,
  joseErrors.JOSENotSupported.code,
  joseErrors.JWKInvalid.code,
  joseErrors.JOSEAlgNotAllowed.code,
]);

/** Each remembered token costs its payload plus a digest: ~1 KB; 10,000 covers a campus' active users. */
const DEFAULT_VERIFIED_TOKEN_CACHE_SIZE = 10_000;

/** Marks a failure to obtain keys, so verify() can answer 503 rather than 401. */
class IdpUnavailable extends Error {}

const errorCode = (err: unknown): string | undefined =>
  typeof err === "object" && err !== null && typeof (err as { code?: unknown }).code === "string"
    ? (err as { code: string }).code
    : undefined;

function toUnauthorized(err: unknown): Error {
  if (err instanceof joseErrors.JWTExpired) return unauthorized("Token expired");
  if (err instanceof joseErrors.JWTClaimValidationFailed) {
    if (err.claim === "nbf") return unauthorized("Token not yet valid");
    if (err.claim === "iss" || err.claim === "aud") return unauthorized("Token not issued for this service");
  }
  return unauthorized("Invalid token");
}

export function createTokenVerifier(opts: TokenVerifierOptions): TokenVerifier {
  const issuer = opts.issuer.replace(/\/+$/, "");
  const timeoutMs = opts.httpTimeoutMs ?? 5000;
  if (opts.algorithms.length === 0) throw new Error("createTokenVerifier: algorithms must not be empty");

  let remote: ReturnType<typeof createRemoteJWKSet> | undefined;
  let pendingDiscovery: Promise<URL> | undefined;
  let discoveryFailedAt = 0;
  let lastGoodKeys: JSONWebKeySet | undefined;
  let fetchFailedAt = 0;
  const cooldownMs = opts.jwksCooldownMs ?? 30_000;
  // jose writes every successfully fetched key set here: a new `jwks` object is a new key set.
  const fetched: JWKSCacheInput = {};
  const fetchedKeys = (): JSONWebKeySet | undefined => ("jwks" in fetched ? fetched.jwks : undefined);
  let keysSeen: JSONWebKeySet | undefined;
  let keyGeneration = 0;
  const cacheSize = opts.verifiedTokenCacheSize ?? DEFAULT_VERIFIED_TOKEN_CACHE_SIZE;
  const verified =
    cacheSize > 0
      ? createVerifiedTokenCache<JWTPayload>({ maxEntries: cacheSize, clockToleranceS: opts.clockToleranceS })
      : null;

  /** The generation of the key set jose holds now (bumped when it loaded another). */
  function currentGeneration(): number {
    const keys = fetchedKeys();
    if (keys !== keysSeen) {
      keysSeen = keys;
      keyGeneration++;
    }
    return keyGeneration;
  }

  async function discoverJwksUri(): Promise<URL> {
    const url = `${issuer}/.well-known/openid-configuration`;
    let doc: { issuer?: unknown; jwks_uri?: unknown };
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(timeoutMs), headers: { accept: "application/json" } });
      if (res.status !== 200) throw new Error(`status ${res.status}`);
      doc = (await res.json()) as typeof doc;
    } catch (err) {
      throw new IdpUnavailable(`discovery failed: ${(err as Error).message}`);
    }
    // OIDC Discovery §4.3: a document naming another issuer must not be used.
    if (doc.issuer !== issuer || typeof doc.jwks_uri !== "string" || !/^https?:\/\//.test(doc.jwks_uri)) {
      throw new IdpUnavailable("discovery document does not match the configured issuer");
    }
    return new URL(doc.jwks_uri);
  }

  async function remoteSet(): Promise<ReturnType<typeof createRemoteJWKSet>> {
    if (remote) return remote;
    let jwksUrl: URL;
    if (opts.jwksUri) {
      jwksUrl = new URL(opts.jwksUri);
    } else {
      if (Date.now() - discoveryFailedAt < DISCOVERY_RETRY_MS) throw new IdpUnavailable("discovery recently failed");
      // One discovery in flight for all concurrent callers.
      pendingDiscovery ??= discoverJwksUri().finally(() => {
        pendingDiscovery = undefined;
      });
      try {
        jwksUrl = await pendingDiscovery;
      } catch (err) {
        discoveryFailedAt = Date.now();
        throw err;
      }
    }
    remote ??= createRemoteJWKSet(jwksUrl, {
      timeoutDuration: timeoutMs,
      cooldownDuration: cooldownMs,
      cacheMaxAge: opts.jwksMaxAgeMs ?? 600_000,
      [jwksCache]: fetched,
    });
    return remote;
  }

  /** The last good keys while the IdP cannot be asked; a kid they lack stays unknowable → 503. */
  async function fromLastGood(
    header: Parameters<JWTVerifyGetKey>[0],
    token: Parameters<JWTVerifyGetKey>[1],
    why: string,
  ) {
    if (lastGoodKeys) {
      try {
        return await createLocalJWKSet(lastGoodKeys)(header, token);
      } catch (localErr) {
        if (errorCode(localErr) !== joseErrors.JWKSNoMatchingKey.code) throw localErr;
      }
    }
    throw new IdpUnavailable(`JWKS unavailable: ${why}`);
  }

  /** `onKeySet`: told the key set generation the key came from, when it came from the fresh remote set. */
  const keyResolver =
    (onKeySet?: (generation: number) => void): JWTVerifyGetKey =>
    async (header, token) => {
      const set = await remoteSet();
      if (lastGoodKeys && Date.now() - fetchFailedAt < cooldownMs) {
        return fromLastGood(header, token, "a recent fetch failed");
      }
      try {
        const before = currentGeneration();
        const key = await set(header, token);
        lastGoodKeys = fetchedKeys();
        // Unchanged across the lookup: the key is from that set (a reload meanwhile: not remembered).
        if (currentGeneration() === before) onKeySet?.(before);
        return key;
      } catch (err) {
        const code = errorCode(err);
        if (code !== undefined && TOKEN_KEY_ERRORS.has(code)) throw err;
        // The fetch failed: back off for one cooldown, serving the last good keys meanwhile.
        fetchFailedAt = Date.now();
        return fromLastGood(header, token, (err as Error).message);
      }
    };

  async function verify(token: string, overrides: VerifyOverrides = {}): Promise<JWTPayload> {
    if (typeof token !== "string" || token.length === 0 || token.length > MAX_TOKEN_LENGTH) {
      throw unauthorized("Invalid token");
    }
    const cacheable = verified !== null && overrides.audience === undefined && overrides.requiredClaims === undefined;
    if (cacheable && remote?.fresh) {
      const hit = verified.get(token, currentGeneration());
      if (hit !== undefined) return hit;
    }
    let generation: number | undefined;
    let payload: JWTPayload;
    try {
      ({ payload } = await jwtVerify(
        token,
        keyResolver((g) => (generation = g)),
        {
          issuer,
          audience: overrides.audience ?? opts.audience,
          algorithms: opts.algorithms,
          clockTolerance: opts.clockToleranceS,
          requiredClaims: overrides.requiredClaims ?? ["sub", "exp"],
        },
      ));
    } catch (err) {
      if (err instanceof IdpUnavailable) throw serviceUnavailable("Identity provider unavailable");
      throw toUnauthorized(err);
    }
    // jose checks that iat is a number, but compares it with the clock only under maxTokenAge (which would
    // also make iat required): a token "issued" in the future is refused here, with the same tolerance,
    // before it can be remembered.
    if (payload.iat !== undefined && payload.iat > Math.floor(Date.now() / 1000) + opts.clockToleranceS) {
      throw unauthorized("Token issued in the future");
    }
    if (cacheable && generation !== undefined && typeof payload.exp === "number") {
      // Frozen: every later caller of this token shares the object.
      verified.set(token, { exp: payload.exp, nbf: payload.nbf }, generation, Object.freeze(payload));
    }
    return payload;
  }

  return {
    verify,
    async warmUp() {
      try {
        const set = await remoteSet();
        await set.reload();
        lastGoodKeys = fetchedKeys();
      } catch (err) {
        if (err instanceof IdpUnavailable) throw serviceUnavailable("Identity provider unavailable");
        throw serviceUnavailable(`Identity provider unavailable: ${(err as Error).message}`);
      }
    },
  };
}
