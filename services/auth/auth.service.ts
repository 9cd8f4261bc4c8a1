/**
 * Identity: validates Bearer access tokens against the IdP's keys, runs the browser login (OIDC
 * authorization code flow with PKCE, state and nonce) into cookie sessions, keeps the users table in step
 * with the IdP (upsert from the claims; the role is synced at every login), and answers who the caller is.
 *
 * Sessions: a random 256-bit id in an HttpOnly cookie; the store (Redis, or memory in embedded mode) keeps
 * only its SHA-256 with the user id. Expiry is FIXED, not sliding: a session ends SESSION_TTL_S (1 h) after
 * its login however busy it is, so the role is re-read from the IdP at least that often and a stolen
 * cookie is worth at most that long; no request pays a store write to extend it. The user behind a session
 * is re-read through the users cache (USERS_CACHE_TTL_S, 5 min, invalidated on every change), so a deleted
 * or re-roled user is never trusted longer than that.
 */
import { ANY_USER, STAFF, SYSTEM_ONLY } from "../../lib/access.rules";
import { timingSafeEqual, createHash } from "node:crypto";
import type { ServiceSchema } from "moleculer";
import { PUBLIC, principalOf, type Ctx } from "../../platform/access-gate";
import { DbMixin, listParams, parseListOrThrow, type DbMethods } from "../../platform/db.mixin";
import { platformOf } from "../../platform/platform";
import { badRequest, conflict, forbidden, notFound } from "../../platform/errors";
import { containsPattern, type ListSpec } from "../../lib/listing";
import { ID_PARAM, type IdParams } from "../../lib/params";
import type { Role, UserPrincipal } from "../../lib/principal";
import { claimsToIdentity, identityToStore, type ClaimsIdentity, type StoredIdentity } from "./auth.rules";
import { BACKEND_CALLBACK_PATH, DEV_CLIENT_SECRET } from "./auth.contract";
import { createOidcClient, type OidcClient } from "./oidc-client";
import { createMemoryStore, createRedisStore, type AuthStore } from "./session-store";
import { createTokenVerifier, type TokenVerifier } from "./token-verifier";
import type { UserRow } from "./users.rows";
import {
  LOGIN_STATE_TTL_S,
  SECRET_RE,
  cookiePolicy,
  digestOf,
  parseLoginState,
  parseSessionRecord,
  pkceChallenge,
  randomSecret,
  resolveRedirectTo,
  safeErrorCode,
  setCookie,
  type CookiePolicy,
  type LoginState,
  type SessionRecord,
} from "../../lib/web-session.rules";

interface TokenParams {
  token: string;
}
interface SessionParams {
  sid: string;
}
interface CallbackParams {
  state?: unknown;
  code?: unknown;
  iss?: unknown;
  error?: unknown;
}

type AuthMethods = {
  upsertUser(identity: ClaimsIdentity & { role: Role }): Promise<UserPrincipal>;
  /** Login: writes the user (role synced, last_login_at) unconditionally and invalidates its cache. */
  syncUserAtLogin(identity: ClaimsIdentity & { role: Role }): Promise<UserPrincipal>;
  /** Creates or updates the user of `identity` under its row lock; `changed`: cached copies are stale. */
  writeUser(identity: ClaimsIdentity & { role: Role }): Promise<{ id: number; role: Role; changed: boolean }>;
  verifyIdToken(idToken: string, nonce: string): Promise<Record<string, unknown>>;
  /** The users row through the users cache (null: no such user; cached as well). */
  cachedUser(id: number): Promise<UserRow | null>;
  invalidateUser(id: number): Promise<void>;
};
type AuthVars = {
  verifier: TokenVerifier;
  oidc: OidcClient;
  store: AuthStore;
  cookies: CookiePolicy;
  /** identity fingerprint → principal: a known, unchanged user costs no write per request. */
  knownUsers: Map<string, { principal: UserPrincipal; until: number }>;
};

const KNOWN_USERS_MAX = 10_000;
const USER_KEY = (id: number) => `auth.user:${id}`;
const USER_LIST_KEYS = "auth.users-list:**";
const stateKey = (state: string) => `state:${digestOf(state)}`;
const sessionKey = (sid: string) => `session:${digestOf(sid)}`;

/** A non-empty string of at most `max` characters, else undefined (query params may be arrays). */
const oneString = (v: unknown, max: number): string | undefined =>
  typeof v === "string" && v.length > 0 && v.length <= max ? v : undefined;

const sameDigest = (a: string, b: string): boolean => {
  const x = Buffer.from(a);
  const y = Buffer.from(b);
  return x.length === y.length && timingSafeEqual(x, y);
};

const USER_COLUMNS = "id, email, name, role, created_at, updated_at, last_login_at";
const USER_LIST: ListSpec<"created_at" | "name" | "email" | "id", { role: "enum:admin|teacher|student"; q: "string" }> =
  {
    sortable: ["created_at", "name", "email", "id"],
    defaultSort: "name",
    filters: { role: "enum:admin|teacher|student", q: "string" },
  };

/** The embedded IdP's issuer when OIDC_ISSUER is not set (dev/embedded-idp.ts). */
export function issuerOf(config: { oidc: { issuer?: string; embeddedPort: number } }): string {
  return config.oidc.issuer ?? `http://localhost:${config.oidc.embeddedPort}`;
}

const AuthService: ServiceSchema<{ rest: string }, AuthMethods & DbMethods, AuthVars> = {
  name: "auth",
  mixins: [DbMixin()],
  // Routes of two resources live here: /auth/* and /users/*.
  settings: { rest: "/" },

  actions: {
    /** Bearer token → principal. Called by the gateway for every request that carries one; not routed. */
    authenticate: {
      access: PUBLIC,
      params: { token: { type: "string", min: 10, max: 16384 } },
      async handler(ctx: Ctx<TokenParams>): Promise<UserPrincipal> {
        const payload = await this.verifier.verify(ctx.params.token);
        const { config } = platformOf(this.broker);
        const identity = claimsToIdentity(payload, config.oidc.rolesClaim, config.oidc.allowedOrgs);
        if (!identity.role) throw forbidden("Your account has no AutoLabs role; ask an administrator to grant one");
        return this.upsertUser({ ...identity, role: identity.role });
      },
    },

    /**
     * Session cookie → principal. Called by the gateway for every cookie-authenticated request; not routed.
     * null: no such session (unknown, expired, logged out, tampered, its user gone) → the caller is anonymous.
     * A store that cannot answer throws 503: never anonymous, never a 500.
     */
    resolveSession: {
      access: PUBLIC,
      params: { sid: { type: "string", max: 256 } },
      async handler(ctx: Ctx<SessionParams>): Promise<UserPrincipal | null> {
        const { sid } = ctx.params;
        if (!SECRET_RE.test(sid)) return null;
        const raw = await this.store.get(sessionKey(sid));
        const session = raw === null ? null : parseSessionRecord(raw);
        if (!session || session.exp <= Date.now()) return null;
        const user = await this.cachedUser(session.uid);
        if (!user) {
          await this.store.del(sessionKey(sid));
          return null;
        }
        return { kind: "user", id: user.id, role: user.role };
      },
    },

    /**
     * Starts the browser login: 302 to the IdP's authorization endpoint with PKCE (S256), a one-time
     * state and a nonce. Their server-side half is stored for LOGIN_STATE_TTL_S under the state, bound to
     * this browser by the login cookie. `redirect_to`: a page of FRONTEND_URL to land on afterwards.
     */
    login: {
      rest: ["GET /auth/login", "POST /auth/login"],
      access: PUBLIC,
      params: { redirect_to: { type: "any", optional: true } },
      async handler(ctx: Ctx<{ redirect_to?: unknown }>): Promise<null> {
        const { config } = platformOf(this.broker);
        const target = resolveRedirectTo(ctx.params.redirect_to, config.frontendUrl);
        if (!target.ok) throw badRequest(target.reason);
        const state = randomSecret();
        const nonce = randomSecret();
        const verifier = randomSecret();
        // One binding per browser, so logins started in two tabs both complete.
        const given = ctx.meta.authCookies?.login;
        const binding = given !== undefined && SECRET_RE.test(given) ? given : randomSecret();
        const location = await this.oidc.authorizationUrl({ state, nonce, codeChallenge: pkceChallenge(verifier) });
        const pending: LoginState = { v: verifier, nonce, to: target.url, bind: digestOf(binding), at: Date.now() };
        await this.store.put(stateKey(state), JSON.stringify(pending), LOGIN_STATE_TTL_S);
        ctx.meta.$statusCode = 302;
        ctx.meta.$location = location;
        ctx.meta.$responseHeaders = {
          "Set-Cookie": [setCookie(this.cookies, this.cookies.loginName, binding, LOGIN_STATE_TTL_S)],
          "Cache-Control": "no-store",
        };
        return null;
      },
    },

    /**
     * The IdP's redirect back: state (one use, this browser's), code exchange with the PKCE verifier, ID
     * token (signature, iss, aud, exp, nonce), user upsert with the role of the roles claim, a new session,
     * its cookie, 302 to where the login asked. Any failure is a 400 (503 when the IdP or the store is
     * down) and creates nothing.
     */
    callback: {
      rest: "GET /auth/callback",
      access: PUBLIC,
      // IdPs add their own parameters (session_state, scope, …): everything is checked by hand below.
      params: { $$strict: false },
      async handler(ctx: Ctx<CallbackParams>): Promise<null> {
        const { config } = platformOf(this.broker);
        const p = ctx.params;
        const state = oneString(p.state, 512);
        // Taken (read and deleted) before anything else: a state is good for one callback, whatever happens.
        const raw = state === undefined ? null : await this.store.take(stateKey(state));
        const pending = raw === null ? null : parseLoginState(raw);
        if (p.error !== undefined) throw badRequest(`Login failed at the identity provider: ${safeErrorCode(p.error)}`);
        if (state === undefined) throw badRequest("Login failed: the callback carries no state");
        if (!pending || Date.now() - pending.at > LOGIN_STATE_TTL_S * 1000) {
          throw badRequest("Login failed: unknown, expired or already used state; start the login again");
        }
        const binding = ctx.meta.authCookies?.login;
        if (binding === undefined || !sameDigest(digestOf(binding), pending.bind)) {
          throw badRequest("Login failed: this login was not started in this browser; start it again");
        }
        const meta = await this.oidc.metadata();
        const iss = oneString(p.iss, 2048);
        // RFC 9207 (mix-up defence): an IdP that announces `iss` must send it, and it must be ours.
        if (iss !== undefined ? iss !== meta.issuer : meta.authorization_response_iss_parameter_supported) {
          throw badRequest("Login failed: the authorization response is not from our identity provider");
        }
        const code = oneString(p.code, 4096);
        if (code === undefined) throw badRequest("Login failed: the callback carries no code");

        const tokens = await this.oidc.exchangeCode(code, pending.v);
        const claims = await this.verifyIdToken(tokens.idToken, pending.nonce);
        const rolesClaim = config.oidc.rolesClaim;
        let merged = claims;
        if (claims[rolesClaim] === undefined && tokens.accessToken !== undefined) {
          // Not every IdP puts roles into the ID token (Zitadel: "assert roles on authentication" off). The
          // access token then carries them, as Bearer authentication requires anyway: verified like any
          // Bearer token (our audience), and only if it is about the same subject.
          const access = await this.verifier.verify(tokens.accessToken).catch((err: unknown) => {
            if ((err as { code?: unknown } | null)?.code === 503) throw err;
            return null;
          });
          if (access && access.sub === claims.sub) merged = { ...claims, [rolesClaim]: access[rolesClaim] };
        }
        let identity: ClaimsIdentity;
        try {
          identity = claimsToIdentity(merged, rolesClaim, config.oidc.allowedOrgs);
        } catch {
          throw badRequest("Login failed: the ID token names no valid subject");
        }
        if (!identity.role) throw forbidden("Your account has no AutoLabs role; ask an administrator to grant one");
        const user = await this.syncUserAtLogin({ ...identity, role: identity.role });

        // A login always gets a new session id (no fixation); the browser's previous session ends here.
        const previous = ctx.meta.authCookies?.session;
        if (previous !== undefined && SECRET_RE.test(previous)) await this.store.del(sessionKey(previous));
        const sid = randomSecret();
        const now = Date.now();
        const session: SessionRecord = { uid: user.id, at: now, exp: now + config.sessionTtlS * 1000 };
        await this.store.put(sessionKey(sid), JSON.stringify(session), config.sessionTtlS);
        this.logger.info(
          `login: user ${user.id} (${user.role}) signed in; session until ${new Date(session.exp).toISOString()}`,
        );

        ctx.meta.$statusCode = 302;
        ctx.meta.$location = pending.to;
        ctx.meta.$responseHeaders = {
          "Set-Cookie": [setCookie(this.cookies, this.cookies.sessionName, sid, config.sessionTtlS)],
          "Cache-Control": "no-store",
        };
        return null;
      },
    },

    /** Ends the browser's session and clears its cookie: 204, whether or not there was one. */
    logout: {
      rest: "POST /auth/logout",
      access: PUBLIC,
      async handler(ctx: Ctx): Promise<null> {
        const sid = ctx.meta.authCookies?.session;
        if (sid !== undefined && SECRET_RE.test(sid)) await this.store.del(sessionKey(sid));
        ctx.meta.$statusCode = 204;
        ctx.meta.$responseHeaders = {
          "Set-Cookie": [setCookie(this.cookies, this.cookies.sessionName, "", 0)],
          "Cache-Control": "no-store",
        };
        return null;
      },
    },

    me: {
      rest: "GET /auth/me",
      access: { roles: ANY_USER },
      async handler(ctx: Ctx) {
        const p = principalOf(ctx);
        if (p.kind !== "user") throw notFound("User");
        const user = await this.cachedUser(p.id);
        if (!user) throw notFound("User");
        return user;
      },
    },

    listUsers: {
      rest: "GET /users",
      access: { roles: STAFF },
      params: listParams(Object.keys(USER_LIST.filters)),
      async handler(ctx: Ctx) {
        const q = parseListOrThrow(ctx.params, USER_LIST);
        const p = principalOf(ctx);
        const teacher = p.kind === "user" && p.role === "teacher";
        // A teacher looks up students to assign them; nobody else's accounts.
        if (teacher && q.filters.role && q.filters.role !== "student") {
          return { items: [], total: 0, offset: q.offset, limit: q.limit };
        }
        // The answer depends only on the caller's role and the query: cached under both, dropped on any user change.
        const key = `auth.users-list:${createHash("sha256")
          .update(JSON.stringify([teacher ? "teacher" : "all", q]))
          .digest("base64url")}`;
        return this.cached(key, platformOf(this.broker).config.usersCacheTtlS, () => {
          const where: string[] = [];
          const bind: Record<string, unknown> = {};
          const role = teacher ? "student" : q.filters.role;
          if (role) {
            where.push("role = $role");
            bind.role = role;
          }
          if (q.filters.q !== undefined) {
            where.push("(name ILIKE $q OR email ILIKE $q)");
            bind.q = containsPattern(q.filters.q);
          }
          return this.selectPage<UserRow>(
            USER_COLUMNS,
            `FROM users ${where.length ? "WHERE " + where.join(" AND ") : ""}`,
            bind,
            q,
          );
        });
      },
    },

    getUser: {
      rest: "GET /users/:id",
      access: { roles: ANY_USER },
      params: { id: ID_PARAM },
      async handler(ctx: Ctx<IdParams>) {
        const p = principalOf(ctx);
        const user = await this.cachedUser(ctx.params.id);
        if (!user) throw notFound("User");
        // Admin: anyone; self; a teacher: students of their own courses (checked live, never cached).
        // Anyone else is not there (404, no existence leak).
        if (p.kind === "system" || p.role === "admin" || p.id === user.id) return user;
        if (p.role === "teacher" && user.role === "student") {
          const mine = await this.selectOne<{ one: number }>(
            `SELECT 1 AS one FROM course_students cs JOIN courses c ON c.id = cs.course_id
              WHERE cs.student_id = $id AND c.owner_id = $caller LIMIT 1`,
            { id: user.id, caller: p.id },
          );
          if (mine) return user;
        }
        throw notFound("User");
      },
    },

    /** Operators (the REPL's `whois`): a user by id or e-mail (case-insensitive). System only. */
    findUser: {
      access: { roles: SYSTEM_ONLY },
      params: { query: { type: "string", min: 1, max: 320, trim: true } },
      async handler(ctx: Ctx<{ query: string }>): Promise<UserRow> {
        const q = ctx.params.query;
        const user = /^\d{1,9}$/.test(q)
          ? await this.cachedUser(Number(q))
          : await this.selectOne<UserRow>(
              `SELECT id, email, name, role, created_at, updated_at, last_login_at FROM users
                WHERE lower(email) = lower($email) ORDER BY id LIMIT 1`,
              { email: q },
            );
        if (!user) throw notFound("User");
        return user;
      },
    },
  },

  methods: {
    async upsertUser(identity: ClaimsIdentity & { role: Role }) {
      const fingerprint = JSON.stringify([identity.externalId, identity.email, identity.name, identity.role]);
      const known = this.knownUsers.get(fingerprint);
      if (known && known.until > Date.now()) return known.principal;
      const row = await this.writeUser(identity);
      // Only a new user or a new email, name or role stales the cache (last_login_at alone does not).
      if (row.changed) await this.invalidateUser(row.id);
      const principal: UserPrincipal = { kind: "user", id: row.id, role: row.role };
      if (this.knownUsers.size >= KNOWN_USERS_MAX) this.knownUsers.clear();
      this.knownUsers.set(fingerprint, {
        principal,
        until: Date.now() + platformOf(this.broker).config.usersCacheTtlS * 1000,
      });
      return principal;
    },

    async syncUserAtLogin(identity: ClaimsIdentity & { role: Role }) {
      const row = await this.writeUser(identity);
      // Always: last_login_at is part of the user's view of itself, and a login is rare enough.
      await this.invalidateUser(row.id);
      return { kind: "user", id: row.id, role: row.role };
    },

    async writeUser(identity: ClaimsIdentity & { role: Role }) {
      // The stored row is read under its lock, so what the merge keeps and what `changed` compares with is
      // what is there, not what a parallel sign-in of the same user is about to overwrite.
      return this.sequelize().transaction(async (transaction) => {
        // Two rounds at most: the second follows a parallel first sign-in that inserted the row first.
        for (let round = 0; round < 2; round++) {
          const stored = await this.selectOne<StoredIdentity & { id: number }>(
            "SELECT id, email, name, role FROM users WHERE external_id = $sub FOR UPDATE",
            { sub: identity.externalId },
            transaction,
          );
          const { next, changed } = identityToStore(stored, identity);
          if (stored) {
            await this.select(
              `UPDATE users SET email = $email, name = $name, role = $role, last_login_at = now() WHERE id = $id`,
              { ...next, id: stored.id },
              transaction,
            );
            return { id: stored.id, role: next.role, changed };
          }
          // DO NOTHING waits for a parallel insert of the same sub to commit; nothing back: read it, locked.
          const inserted = await this.select<{ id: number; role: Role }>(
            `INSERT INTO users (external_id, email, name, role, last_login_at)
             VALUES ($sub, $email, $name, $role, now())
             ON CONFLICT (external_id) DO NOTHING RETURNING id, role`,
            { sub: identity.externalId, ...next },
            transaction,
          );
          const created = inserted.at(0); // none when a parallel insert won
          if (created) return { ...created, changed };
        }
        // The row was inserted and deleted again between our statements.
        throw conflict("Your account changed meanwhile; try again");
      });
    },

    async verifyIdToken(idToken: string, nonce: string) {
      const { config } = platformOf(this.broker);
      let payload: Record<string, unknown>;
      try {
        payload = await this.verifier.verify(idToken, {
          audience: config.oidc.clientId,
          requiredClaims: ["sub", "exp", "iat", "nonce"],
        });
      } catch (err) {
        if ((err as { code?: unknown }).code === 503) throw err;
        throw badRequest("Login failed: the ID token is not valid");
      }
      const given = typeof payload.nonce === "string" ? payload.nonce : "";
      if (!sameDigest(digestOf(given), digestOf(nonce)))
        throw badRequest("Login failed: the ID token does not belong to this login (nonce)");
      // OIDC Core §3.1.3.7: with several audiences, or any azp, azp must be us.
      if ((Array.isArray(payload.aud) && payload.aud.length > 1) || payload.azp !== undefined) {
        if (payload.azp !== config.oidc.clientId)
          throw badRequest("Login failed: the ID token was issued to another client");
      }
      return payload;
    },

    async cachedUser(id: number) {
      // Wrapped: "no such user" is an answer worth caching too (a bare null would read as a miss).
      const hit = await this.cached(USER_KEY(id), platformOf(this.broker).config.usersCacheTtlS, async () => ({
        row: await this.selectOne<UserRow>(`SELECT ${USER_COLUMNS} FROM users WHERE id = $id`, { id }),
      }));
      return hit.row;
    },

    /**
     * On every node before returning (a node-local cache is asked by a call, not an event), and a fill of
     * this user's row computed before the change is refused (platform/coherent-cache.ts).
     */
    async invalidateUser(id: number) {
      await this.invalidateCache("auth", [USER_KEY(id), USER_LIST_KEYS]);
    },
  },

  created() {
    const { config } = platformOf(this.broker);
    this.knownUsers = new Map();
    this.cookies = cookiePolicy(config.publicUrl);
    const issuer = issuerOf(config);
    this.verifier = createTokenVerifier({
      issuer,
      audience: config.oidc.audience,
      algorithms: ["RS256", "ES256"],
      clockToleranceS: 30,
      jwksCooldownMs: config.oidc.jwksCooldownMs,
    });
    this.oidc = createOidcClient({
      issuer,
      clientId: config.oidc.clientId,
      // The embedded provider's client is confidential with a development secret.
      clientSecret: config.oidc.clientSecret ?? (config.oidc.issuer === undefined ? DEV_CLIENT_SECRET : undefined),
      redirectUri: `${config.publicUrl}${BACKEND_CALLBACK_PATH}`,
      scopes: config.oidc.scopes,
    });
    if (config.redisUrl) {
      this.store = createRedisStore({ url: config.redisUrl, prefix: `${config.namespace}:auth:`, log: this.logger });
    } else {
      this.store = createMemoryStore();
      if (config.mode === "cluster") {
        this.logger.warn(
          "REDIS_URL is not set: login states and sessions are kept in this process's memory (one auth node only; lost on restart)",
        );
      }
    }
  },

  async started() {
    await this.store.start();
  },

  async stopped() {
    await this.store.stop();
  },
};

export default AuthService;
