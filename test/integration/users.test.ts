/**
 * GET /api/v1/users and /users/{id} over HTTP with real tokens of the embedded IdP (extra accounts from
 * its accounts file): who may list whom (admin all; teacher students only), filters and pagination, who
 * may read whom (admin; self; a teacher for students of their own courses; anyone else 404), and the
 * users cache: a caller-independent answer is never served to another role, a change at login shows at
 * once, a removal from a course at once.
 */
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startIdp, type TestIdp } from "../support/idp";
import { createTestDatabase, startNode, type PlatformNode, type TestDatabase } from "../support/platform";
import { ifAssigned } from "../support/cleanup";

let db: TestDatabase;
let idp: TestIdp;
let node: PlatformNode;
let dir: string;
let accountsFile: string;
const ids: Record<string, number> = {};

const EXTRA = {
  teacher2: { roles: ["teacher"], name: "Second Teacher" },
  student3: { roles: ["student"], name: "Third Student" },
};

async function call(account: string, method: string, path: string, body?: unknown) {
  const { accessToken } = await idp.getToken(account);
  const res = await fetch(`${node.url}/api/v1${path}`, {
    method,
    headers: {
      authorization: `Bearer ${accessToken}`,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await res.text();
  return { status: res.status, body: text ? JSON.parse(text) : null };
}
const get = (account: string, path: string) => call(account, "GET", path);

beforeAll(async () => {
  dir = mkdtempSync(join(tmpdir(), "autolabs-users-"));
  accountsFile = join(dir, "accounts.json");
  writeFileSync(accountsFile, JSON.stringify(EXTRA));
  [db, idp] = await Promise.all([
    createTestDatabase(),
    startIdp({ env: { EMBEDDED_IDP_ACCOUNTS_FILE: accountsFile } }),
  ]);
  node = await startNode(db.url, { OIDC_ISSUER: idp.issuer, SERVICES: "api-gateway,auth,courses,labs" });
  for (const a of ["admin", "teacher", "teacher2", "student", "student2", "student3"]) {
    const me = await get(a, "/auth/me");
    expect(me.status).toBe(200);
    ids[a] = me.body.id;
  }
  // teacher's course has student; teacher2's has student2; student3 is in no course.
  const c1 = await call("teacher", "POST", "/courses", { name: "Course of teacher" });
  const c2 = await call("teacher2", "POST", "/courses", { name: "Course of teacher2" });
  expect(
    (await call("teacher", "POST", `/courses/${c1.body.id}/students`, { student_ids: [ids.student] })).status,
  ).toBeLessThan(300);
  expect(
    (await call("teacher2", "POST", `/courses/${c2.body.id}/students`, { student_ids: [ids.student2] })).status,
  ).toBeLessThan(300);
  ids.course1 = c1.body.id;
});

afterAll(async () => {
  await ifAssigned(node)?.stop();
  await Promise.allSettled([ifAssigned(db)?.drop(), ifAssigned(idp)?.stop()]);
  rmSync(dir, { recursive: true, force: true });
});

const names = (page: { items: { name: string }[] }) => page.items.map((u) => u.name).sort();

describe("GET /users", () => {
  it("admin lists everyone, with the documented page shape and user fields", async () => {
    const res = await get("admin", "/users");
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ total: 6, offset: 0, limit: 50 });
    expect(res.body.items).toHaveLength(6);
    const u = res.body.items[0];
    for (const f of ["id", "email", "name", "role", "created_at", "last_login_at"]) expect(u).toHaveProperty(f);
    expect(u).not.toHaveProperty("external_id");
  });

  it("filters by role and by q (name or email, case-insensitive), paginates", async () => {
    expect(names((await get("admin", "/users?role=teacher")).body)).toEqual(["Demo Teacher", "Second Teacher"]);
    expect(names((await get("admin", "/users?q=THIRD")).body)).toEqual(["Third Student"]);
    expect(names((await get("admin", "/users?q=student2%40autolabs")).body)).toEqual(["Demo Student Two"]);
    // LIKE wildcards are literal.
    expect((await get("admin", "/users?q=%25")).body.total).toBe(0);
    const page = await get("admin", "/users?sort=name&limit=2&offset=2");
    expect(page.body).toMatchObject({ total: 6, offset: 2, limit: 2 });
    expect(page.body.items.map((u: { name: string }) => u.name)).toEqual(["Demo Student Two", "Demo Teacher"]);
    expect((await get("admin", "/users?limit=101")).status).toBe(422);
    expect((await get("admin", "/users?role=owner")).status).toBe(422);
  });

  it("a teacher lists students only (to assign them), whatever the filter asks", async () => {
    const res = await get("teacher", "/users");
    expect(res.status).toBe(200);
    expect(names(res.body)).toEqual(["Demo Student", "Demo Student Two", "Third Student"]);
    expect((await get("teacher", "/users?role=admin")).body).toMatchObject({ items: [], total: 0 });
    expect((await get("teacher", "/users?role=teacher")).body).toMatchObject({ items: [], total: 0 });
    expect(names((await get("teacher", "/users?q=third")).body)).toEqual(["Third Student"]);
  });

  it("answers cached for one role are never served to another", async () => {
    expect((await get("admin", "/users?limit=10")).body.total).toBe(6);
    expect((await get("teacher", "/users?limit=10")).body.total).toBe(3);
    expect((await get("admin", "/users?limit=10")).body.total).toBe(6);
  });

  it("students may not list users", async () => {
    expect((await get("student", "/users")).status).toBe(403);
  });
});

describe("GET /users/{id}", () => {
  it("admin reads anyone; everyone reads themselves", async () => {
    for (const a of Object.keys(EXTRA).concat(["teacher", "student"])) {
      expect((await get("admin", `/users/${ids[a]}`)).body).toMatchObject({ id: ids[a] });
      expect((await get(a, `/users/${ids[a]}`)).body).toMatchObject({ id: ids[a] });
    }
  });

  it("a teacher reads the students of their own courses, nobody else (404, not 403)", async () => {
    expect((await get("teacher", `/users/${ids.student}`)).status).toBe(200);
    for (const other of ["student2", "student3", "teacher2", "admin"]) {
      const res = await get("teacher", `/users/${ids[other]}`);
      expect([other, res.status]).toEqual([other, 404]);
    }
  });

  it("a student reads nobody else", async () => {
    for (const other of ["student2", "teacher", "admin"])
      expect((await get("student", `/users/${ids[other]}`)).status).toBe(404);
  });

  it("unknown ids are 404; out-of-range and malformed ones 422 (the shared path id rule)", async () => {
    expect((await get("admin", "/users/999999")).status).toBe(404);
    expect((await get("admin", "/users/99999999999")).status).toBe(422);
    expect((await get("admin", "/users/abc")).status).toBe(422);
  });

  it("leaving the course ends the teacher's access at once (decided live, not cached)", async () => {
    expect((await get("teacher", `/users/${ids.student}`)).status).toBe(200);
    expect((await call("teacher", "DELETE", `/courses/${ids.course1}/students/${ids.student}`)).status).toBeLessThan(
      300,
    );
    expect((await get("teacher", `/users/${ids.student}`)).status).toBe(404);
  });
});

describe("the users cache is invalidated on change", () => {
  it("a name or role changed at the IdP shows in lists and reads right after the user's next request", async () => {
    expect(names((await get("teacher", "/users?q=third")).body)).toEqual(["Third Student"]);
    expect((await get("admin", `/users/${ids.student3}`)).body.name).toBe("Third Student");
    writeFileSync(
      accountsFile,
      JSON.stringify({ ...EXTRA, student3: { roles: ["student"], name: "Third Student Renamed" } }),
    );
    expect((await get("student3", "/auth/me")).body.name).toBe("Third Student Renamed");
    expect(names((await get("teacher", "/users?q=third")).body)).toEqual(["Third Student Renamed"]);
    expect((await get("admin", `/users/${ids.student3}`)).body.name).toBe("Third Student Renamed");
    // Promoted: no longer among the students a teacher may list.
    writeFileSync(
      accountsFile,
      JSON.stringify({ ...EXTRA, student3: { roles: ["teacher"], name: "Third Student Renamed" } }),
    );
    expect((await get("student3", "/auth/me")).body.role).toBe("teacher");
    expect((await get("teacher", "/users?q=third")).body.total).toBe(0);
  });
});
