/**
 * Identity: validates Bearer access tokens against the IdP's keys, keeps the users table in step with the
 * IdP (upsert from the token's claims), and answers who the caller is.
 */
import type { Context, ServiceSchema } from "moleculer";
import { AccessMixin, principalOf } from "../../mixins/access.mixin";
import { DbMixin, listParams, parseListOrThrow, type DbMethods } from "../../mixins/db.mixin";
import { platformOf } from "../runtime/platform";
import { forbidden, notFound } from "../shared/errors";
import type { ListSpec } from "../shared/listing";
import type { RequestMeta, Role, UserPrincipal } from "../shared/principal";
import { claimsToIdentity, type ClaimsIdentity } from "./auth.rules";
import { createTokenVerifier, type TokenVerifier } from "./token-verifier";
import { defineUserModel, type UserModel, type UserRow } from "./users.model";

interface TokenParams {
  token: string;
}
interface IdParams {
  id: number;
}

type Ctx<P = Record<string, unknown>> = Context<P, RequestMeta>;

type AuthMethods = {
  upsertUser(identity: ClaimsIdentity & { role: Role }): Promise<UserPrincipal>;
};
type AuthVars = {
  model: UserModel;
  verifier: TokenVerifier;
  /** identity fingerprint → principal: a known, unchanged user costs no write per request. */
  knownUsers: Map<string, { principal: UserPrincipal; until: number }>;
};

/** Users cache TTL of DESIGN (5 min): a renamed or re-roled user is written at most this late. */
const USER_TTL_MS = 5 * 60_000;
const KNOWN_USERS_MAX = 10_000;

const ID = { type: "number", integer: true, positive: true, convert: true } as const;
const USER_COLUMNS = "id, email, name, role, created_at, updated_at, last_login_at";
const USER_LIST: ListSpec<"created_at" | "name" | "email" | "id", { role: "enum:admin|teacher|student"; q: "string" }> = {
  sortable: ["created_at", "name", "email", "id"],
  defaultSort: "name",
  filters: { role: "enum:admin|teacher|student", q: "string" },
};

/** The embedded IdP's issuer when OIDC_ISSUER is not set (services/auth/embedded-idp.ts). */
export function issuerOf(config: { oidc: { issuer?: string; embeddedPort: number } }): string {
  return config.oidc.issuer ?? `http://localhost:${config.oidc.embeddedPort}`;
}

const AuthService: ServiceSchema<{ rest: string }, AuthMethods & DbMethods, AuthVars> = {
  name: "auth",
  mixins: [DbMixin(defineUserModel), AccessMixin],
  // Routes of two resources live here: /auth/* and /users/*.
  settings: { rest: "/" },

  actions: {
    /** Bearer token → principal. Called by the gateway for every request that carries one; not routed. */
    authenticate: {
      access: { public: true, roles: [] },
      params: { token: { type: "string", min: 10, max: 16384 } },
      async handler(ctx: Ctx<TokenParams>): Promise<UserPrincipal> {
        const payload = await this.verifier.verify(ctx.params.token);
        const { config } = platformOf(this.broker);
        const identity = claimsToIdentity(payload, config.oidc.rolesClaim);
        if (!identity.role) throw forbidden("Your account has no AutoLabs role; ask an administrator to grant one");
        return this.upsertUser({ ...identity, role: identity.role });
      },
    },

    me: {
      rest: "GET /auth/me",
      access: { roles: ["admin", "teacher", "student"] },
      async handler(ctx: Ctx) {
        const p = principalOf(ctx);
        if (p.kind !== "user") throw notFound("User");
        const user = await this.selectOne<UserRow>(`SELECT ${USER_COLUMNS} FROM users WHERE id = $id`, { id: p.id });
        if (!user) throw notFound("User");
        return user;
      },
    },

    listUsers: {
      rest: "GET /users",
      access: { roles: ["admin", "teacher"] },
      params: listParams(Object.keys(USER_LIST.filters)),
      async handler(ctx: Ctx) {
        const q = parseListOrThrow(ctx.params, USER_LIST);
        const p = principalOf(ctx);
        const where: string[] = [];
        const bind: Record<string, unknown> = {};
        // A teacher looks up students to assign them; nobody else's accounts.
        const role = p.kind === "user" && p.role === "teacher" ? "student" : q.filters.role;
        if (p.kind === "user" && p.role === "teacher" && q.filters.role && q.filters.role !== "student") {
          return { items: [], total: 0, offset: q.offset, limit: q.limit };
        }
        if (role) {
          where.push("role = $role");
          bind.role = role;
        }
        if (q.filters.q !== undefined) {
          where.push("(name ILIKE $q OR email ILIKE $q)");
          bind.q = `%${q.filters.q.replace(/[\\%_]/g, "\\$&")}%`;
        }
        return this.selectPage<UserRow>(USER_COLUMNS, `FROM users ${where.length ? "WHERE " + where.join(" AND ") : ""}`, bind, q);
      },
    },

    getUser: {
      rest: "GET /users/:id",
      access: { roles: ["admin", "teacher", "student"] },
      params: { id: ID },
      async handler(ctx: Ctx<IdParams>) {
        const p = principalOf(ctx);
        const callerId = p.kind === "user" ? p.id : 0;
        // Admin: anyone; self; a teacher: students of their own courses. Anything else is not there.
        const user = await this.selectOne<UserRow>(
          `SELECT ${USER_COLUMNS} FROM users u WHERE u.id = $id AND (
              $admin OR u.id = $caller OR ($teacher AND EXISTS (
                SELECT 1 FROM course_students cs JOIN courses c ON c.id = cs.course_id
                 WHERE cs.student_id = u.id AND c.owner_id = $caller)))`,
          {
            id: ctx.params.id,
            caller: callerId,
            admin: p.kind === "system" || p.role === "admin",
            teacher: p.kind === "user" && p.role === "teacher",
          },
        );
        if (!user) throw notFound("User");
        return user;
      },
    },
  },

  methods: {
    async upsertUser(identity) {
      const fingerprint = JSON.stringify([identity.externalId, identity.email, identity.name, identity.role]);
      const known = this.knownUsers.get(fingerprint);
      if (known && known.until > Date.now()) return known.principal;
      const [row] = await this.select<{ id: number; role: Role }>(
        `INSERT INTO users (external_id, email, name, role, last_login_at)
         VALUES ($sub, $email, $name, $role, now())
         ON CONFLICT (external_id) DO UPDATE
           SET email = EXCLUDED.email, name = EXCLUDED.name, role = EXCLUDED.role, last_login_at = now()
         RETURNING id, role`,
        { sub: identity.externalId, email: identity.email, name: identity.name, role: identity.role },
      );
      const principal: UserPrincipal = { kind: "user", id: row.id, role: row.role };
      if (this.knownUsers.size >= KNOWN_USERS_MAX) this.knownUsers.clear();
      this.knownUsers.set(fingerprint, { principal, until: Date.now() + USER_TTL_MS });
      return principal;
    },
  },

  created() {
    const { config } = platformOf(this.broker);
    this.knownUsers = new Map();
    this.verifier = createTokenVerifier({
      issuer: issuerOf(config),
      audience: config.oidc.audience,
      algorithms: ["RS256", "ES256"],
      clockToleranceS: 30,
    });
  },
};

export default AuthService;
