/**
 * Helpers for the HTTP integration tests (gateway, auth-tokens, courses, labs):
 *  - tokens forged with the embedded IdP's own private key, for accounts the IdP does not have
 *    (a second teacher, role combinations, no role) — valid in every respect, so the gateway accepts them;
 *  - `checkedApi`: the harness's `api()` plus the invariants every answer must keep
 *    (X-Request-Id present, JSON `{"detail"}` on errors, never a 500, never a stack trace).
 */
import { importJWK, SignJWT, type JWTPayload } from "jose";
import type { ApiResponse, TestPlatform } from "./platform";

export const ROLES_CLAIM = "urn:zitadel:iam:org:project:roles";
export const ORG_ID = "300000000000000001";
export const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

export type RoleName = "admin" | "teacher" | "student";

export interface ExtraAccount {
  sub: string;
  email: string;
  name: string;
  roles: string[];
}

/** Accounts the embedded IdP does not have; signed locally with its key. */
export const EXTRA_ACCOUNTS: Record<string, ExtraAccount> = {
  teacher2: {
    sub: "310000000000000102",
    email: "teacher2@autolabs.local",
    name: "Demo Teacher Two",
    roles: ["teacher"],
  },
  student3: {
    sub: "310000000000000103",
    email: "student3@autolabs.local",
    name: "Demo Student Three",
    roles: ["student"],
  },
};

export const now = (): number => Math.floor(Date.now() / 1000);

export function rolesClaim(roles: readonly string[]): Record<string, Record<string, string>> {
  return Object.fromEntries(roles.map((r) => [r, { [ORG_ID]: "autolabs.local" }]));
}

/** Claims the gateway accepts (issuer and audience of the test platform, fresh exp). */
export function validClaims(p: TestPlatform, over: JWTPayload = {}): JWTPayload {
  return {
    iss: p.idp.issuer,
    aud: p.config.oidc.audience,
    iat: now(),
    exp: now() + 600,
    client_id: "autolabs-cli",
    ...over,
  };
}

/** Signs `payload` with the IdP's real private key and kid (header overridable). */
export async function signWithIdpKey(
  p: TestPlatform,
  payload: JWTPayload,
  header: { kid?: string; typ?: string } = {},
): Promise<string> {
  const jwk = p.idp.privateJwks().keys.at(0);
  if (!jwk) throw new Error("the IdP has no signing key");
  const key = await importJWK(jwk, "RS256");
  return new SignJWT(payload)
    .setProtectedHeader({ alg: "RS256", kid: header.kid ?? jwk.kid, typ: header.typ ?? "at+jwt" })
    .sign(key);
}

export async function tokenFor(p: TestPlatform, account: ExtraAccount): Promise<string> {
  return signWithIdpKey(
    p,
    validClaims(p, {
      sub: account.sub,
      email: account.email,
      name: account.name,
      [ROLES_CLAIM]: rolesClaim(account.roles),
    }),
  );
}

/** Anything that looks like a stack trace or an internal error leaking into a body. */
const LEAK =
  /\n\s+at |\bat [\w.<>]+ \(|\.ts:\d+|\.js:\d+|node_modules|SequelizeDatabaseError|MoleculerServerError|TypeError|ReferenceError/;

export function expectNoLeak(res: ApiResponse): void {
  const text = typeof res.body === "string" ? res.body : JSON.stringify(res.body ?? "");
  if (LEAK.test(text)) throw new Error(`answer ${res.status} leaks internals: ${text.slice(0, 500)}`);
}

/** Invariants of every answer of the API. */
export function expectWellFormed(res: ApiResponse): void {
  expectNoLeak(res);
  const rid = res.headers.get("x-request-id");
  if (!rid) throw new Error(`answer ${res.status} has no X-Request-Id`);
  if (res.status >= 500 && res.status !== 503)
    throw new Error(`server error ${res.status}: ${JSON.stringify(res.body)}`);
  if (res.status >= 400) {
    const body = res.body as { detail?: unknown } | null;
    if (!body || typeof body !== "object" || !("detail" in body)) {
      throw new Error(`error ${res.status} without {"detail"}: ${JSON.stringify(res.body)}`);
    }
    if (res.status === 422) {
      const detail = body.detail as { loc?: unknown; msg?: unknown; type?: unknown }[];
      if (!Array.isArray(detail) || detail.length === 0)
        throw new Error(`422 detail is not a list: ${JSON.stringify(body)}`);
      for (const d of detail) {
        if (
          !Array.isArray(d.loc) ||
          !["body", "query", "path"].includes(String(d.loc[0])) ||
          typeof d.msg !== "string" ||
          typeof d.type !== "string"
        ) {
          throw new Error(`422 item is not FastAPI-shaped: ${JSON.stringify(d)}`);
        }
      }
    } else if (typeof body.detail !== "string") {
      throw new Error(`error ${res.status} detail is not a string: ${JSON.stringify(body)}`);
    }
  }
}

export type Api = (
  method: string,
  path: string,
  opts?: { as?: string; body?: unknown; headers?: Record<string, string> },
) => Promise<ApiResponse>;

/**
 * `api()` that also speaks for the extra (forged) accounts and checks the invariants of every answer.
 * `as` may be a demo account (real code-flow token) or a key of EXTRA_ACCOUNTS.
 */
export function checkedApi(p: TestPlatform): Api {
  const forged = new Map<string, string>();
  return async (method, path, opts = {}) => {
    let { as } = opts;
    const headers = { ...opts.headers };
    if (as && Object.hasOwn(EXTRA_ACCOUNTS, as)) {
      let t = forged.get(as);
      if (!t) {
        t = await tokenFor(p, EXTRA_ACCOUNTS[as]);
        forged.set(as, t);
      }
      headers.authorization = `Bearer ${t}`;
      as = undefined;
    }
    const res = await p.api(method, path, { ...opts, as, headers });
    expectWellFormed(res);
    return res;
  };
}

/** Ids of 422 problems, e.g. "body.name", for compact assertions. */
export function locs(res: ApiResponse): string[] {
  const detail = (res.body as { detail: { loc: (string | number)[] }[] }).detail;
  return detail.map((d) => d.loc.join("."));
}

/* ───────────────────────── fixtures over HTTP (and SQL where HTTP has no way yet) ───────────────────────── */

export interface Ids {
  admin: number;
  teacher: number;
  teacher2: number;
  student: number;
  student2: number;
  student3: number;
}

export const RESOURCES = { cpu: "500m", memory: "512Mi", storage: "1Gi" } as const;

export interface Fixtures {
  ids: Ids;
  /** POST /courses as `as` (admin passes owner_id); returns the new id. */
  course(as: string, name?: string, extra?: Record<string, unknown>): Promise<number>;
  /** POST /courses/{id}/students as admin. */
  assign(courseId: number, ...studentIds: number[]): Promise<void>;
  /** POST /labs as `as`: a draft. */
  lab(as: string, extra?: Record<string, unknown>): Promise<Record<string, unknown> & { id: number }>;
  /** A lab taken through submit and approve. */
  approvedLab(as: string, extra?: Record<string, unknown>): Promise<Record<string, unknown> & { id: number }>;
  /** POST /courses/{id}/labs as admin. */
  attach(courseId: number, labId: number): Promise<void>;
  /** An instance row written directly (the lab-instances service is not part of these tests). */
  instance(labId: number, courseId: number, studentId: number, status: string): Promise<number>;
  row(table: "courses" | "labs", id: number): Promise<Record<string, unknown> | undefined>;
  count(sql: string, bind?: Record<string, unknown>): Promise<number>;
}

let nameSeq = 0;
export const uniqueName = (prefix: string): string => `${prefix} ${Date.now().toString(36)}-${++nameSeq}`;

export async function fixtures(p: TestPlatform, api: Api): Promise<Fixtures> {
  const idOf = async (as: string) => {
    const me = await api("GET", "/auth/me", { as });
    if (me.status !== 200) throw new Error(`/auth/me as ${as}: ${me.status} ${JSON.stringify(me.body)}`);
    return (me.body as { id: number }).id;
  };
  const ids: Ids = {
    admin: await idOf("admin"),
    teacher: await idOf("teacher"),
    teacher2: await idOf("teacher2"),
    student: await idOf("student"),
    student2: await idOf("student2"),
    student3: await idOf("student3"),
  };
  const must = (what: string, res: ApiResponse, status: number) => {
    if (res.status !== status)
      throw new Error(`${what}: expected ${status}, got ${res.status} ${JSON.stringify(res.body)}`);
    return res;
  };
  const f: Fixtures = {
    ids,
    async course(as, name = uniqueName("Course"), extra = {}) {
      const owner = as === "admin" && extra.owner_id === undefined ? { owner_id: ids.teacher } : {};
      const res = must("create course", await api("POST", "/courses", { as, body: { name, ...owner, ...extra } }), 201);
      return (res.body as { id: number }).id;
    },
    async assign(courseId, ...studentIds) {
      must(
        "assign",
        await api("POST", `/courses/${courseId}/students`, { as: "admin", body: { student_ids: studentIds } }),
        200,
      );
    },
    async lab(as, extra = {}) {
      const body = {
        name: uniqueName("Lab"),
        docker_image: "registry.autolabs.local/labs/python:3.12",
        resources: { ...RESOURCES },
        ...extra,
      };
      const res = must("create lab", await api("POST", "/labs", { as, body }), 201);
      return res.body as Record<string, unknown> & { id: number };
    },
    async approvedLab(as, extra = {}) {
      const lab = await f.lab(as, extra);
      must("submit", await api("POST", `/labs/${lab.id}/submit`, { as }), 200);
      const res = must("approve", await api("POST", `/labs/${lab.id}/approve`, { as: "admin" }), 200);
      return res.body as Record<string, unknown> & { id: number };
    },
    async attach(courseId, labId) {
      const res = await api("POST", `/courses/${courseId}/labs`, { as: "admin", body: { lab_id: labId } });
      if (res.status !== 201 && res.status !== 200)
        throw new Error(`attach: ${res.status} ${JSON.stringify(res.body)}`);
    },
    async instance(labId, courseId, studentId, status) {
      const [rows] = await p.sequelize.query(
        "INSERT INTO lab_instances (lab_id, course_id, student_id, status) VALUES ($lab, $course, $student, $status) RETURNING id",
        { bind: { lab: labId, course: courseId, student: studentId, status } },
      );
      return (rows as { id: number }[])[0].id;
    },
    async row(table, id) {
      const [rows] = await p.sequelize.query(`SELECT * FROM ${table} WHERE id = $id`, { bind: { id } });
      return (rows as Record<string, unknown>[])[0];
    },
    async count(sql, bind = {}) {
      const [rows] = await p.sequelize.query(`SELECT count(*)::int AS n FROM ${sql}`, { bind });
      return (rows as { n: number }[])[0].n;
    },
  };
  return f;
}
