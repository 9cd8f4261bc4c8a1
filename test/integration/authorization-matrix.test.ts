/**
 * The authorization matrix: every route of /api/v1 (read from the gateway's own alias list), called by each
 * kind of caller (anonymous, admin, owner teacher, other teacher, assigned student, unassigned student) with
 * the ids of authorization-matrix.table.ts, expecting the exact status. Also, for every call:
 *  - a refused call (4xx) changed nothing: row counts and a hash of every row of the domain tables are equal
 *    before and after (users without last_login_at/updated_at, which every authenticated request may touch);
 *  - an allowed write did change something (so the fresh object really was the one tried);
 *  - a 2xx list answer holds exactly the rows DESIGN's visibility rules give the caller (ground truth in SQL
 *    here, independent of the services' queries), so an id in the query leaks nothing.
 *
 * One platform for the file, without the tasks service: no relay drains the outbox and no runner moves
 * instances while the tables are compared.
 */
import { QueryTypes } from "sequelize";
import { systemPrincipal } from "../../lib/principal";
import { startTestPlatform, type TestPlatform } from "../support/platform";
import { changedTables, settledTableSnapshot, tableSnapshot, type TableSnapshot } from "../support/table-snapshot";
import { EXTRA_ACCOUNTS, tokenFor } from "../support/http-api";
import {
  CALLERS,
  MATRIX,
  type Caller,
  type FreshKind,
  type MatrixCase,
  type MatrixRow,
  type Scope,
} from "./authorization-matrix.table";
import { ifAssigned } from "../support/cleanup";

jest.setTimeout(120_000);

const API = "/api/v1";
const SERVICES = "api-gateway,auth,courses,labs,lab-instances,access";

type Role = "admin" | "teacher" | "student";
interface Answer {
  status: number;
  contentType: string;
  body: unknown;
}
interface Page {
  items: { id: number }[];
  total: number;
}

let p: TestPlatform;
const headers = {} as Record<Caller, Record<string, string>>;
const who = {} as Record<Exclude<Caller, "anonymous">, { id: number; role: Role }>;
/** Ids of the shared world, by placeholder name (see the table's header). */
const world: Record<string, number> = {};
const stats = { calls: 0, refused: 0, snapshots: 0, started: 0 };
/** An allowed write happened since the last snapshot: event handlers may still be writing. */
let dirty = false;

/* ───────────────────────────── HTTP ───────────────────────────── */

async function call(caller: Caller, method: string, path: string, body?: unknown, stream = false): Promise<Answer> {
  const h: Record<string, string> = { ...headers[caller] };
  let payload: string | undefined;
  if (body !== undefined) {
    payload = JSON.stringify(body);
    h["content-type"] = "application/json";
  }
  const abort = new AbortController();
  const res = await fetch(`${p.url}${API}${path}`, {
    method,
    headers: h,
    body: payload,
    redirect: "manual",
    signal: abort.signal,
  });
  stats.calls++;
  const contentType = res.headers.get("content-type") ?? "";
  if (stream && contentType.startsWith("text/event-stream")) {
    // An open stream of a running instance never ends: the status and type are the answer.
    abort.abort();
    return { status: res.status, contentType, body: null };
  }
  const text = await res.text();
  let parsed: unknown = text;
  try {
    parsed = text ? JSON.parse(text) : null;
  } catch {
    /* not JSON */
  }
  return { status: res.status, contentType, body: parsed };
}

async function must(what: string, res: Promise<Answer>, status: number): Promise<{ id: number }> {
  const r = await res;
  if (r.status !== status)
    throw new Error(`fixture ${what}: expected ${status}, got ${r.status} ${JSON.stringify(r.body)}`);
  return r.body as { id: number };
}

/* ───────────────────────────── database ───────────────────────────── */

async function sql<T extends object>(query: string, bind: Record<string, unknown> = {}): Promise<T[]> {
  return p.sequelize.query<T>(query, { bind, type: QueryTypes.SELECT });
}

async function insertId(query: string, bind: Record<string, unknown>): Promise<number> {
  const [row] = await sql<{ id: number }>(query, bind);
  return row.id;
}

async function snapshot(): Promise<TableSnapshot> {
  stats.snapshots++;
  return tableSnapshot(p.sequelize);
}

/** A snapshot once no event handler of an earlier allowed write is still writing. */
async function settledSnapshot(): Promise<TableSnapshot> {
  if (!dirty) return snapshot();
  stats.snapshots++;
  const settled = await settledTableSnapshot(p.sequelize);
  dirty = false;
  return settled;
}

/* ───────────────────────────── fresh objects ───────────────────────────── */

let freshSeq = 0;

async function freshCourse(): Promise<number> {
  const id = await insertId(
    "INSERT INTO courses (name, description, owner_id) VALUES ($name, '', $owner) RETURNING id",
    {
      name: `Fresh course ${++freshSeq}`,
      owner: who.ownerTeacher.id,
    },
  );
  await sql("INSERT INTO course_students (course_id, student_id) VALUES ($c, $s) RETURNING course_id", {
    c: id,
    s: who.assignedStudent.id,
  });
  return id;
}

async function freshLab(owner: number, status: string, attachTo?: number): Promise<number> {
  const id = await insertId(
    `INSERT INTO labs (name, description, docker_image, resources, status, created_by, approved_by)
     VALUES ($name, '', 'registry.autolabs.local/labs/fresh:1.0', '{"cpu":"500m","memory":"512Mi","storage":"1Gi"}'::jsonb,
             $status, $owner, CASE WHEN $status = 'approved' THEN $admin::integer END) RETURNING id`,
    { name: `Fresh lab ${++freshSeq}`, status, owner, admin: who.admin.id },
  );
  if (attachTo !== undefined)
    await sql("INSERT INTO course_labs (course_id, lab_id) VALUES ($c, $l) RETURNING lab_id", { c: attachTo, l: id });
  return id;
}

async function runningInstance(labId: number, courseId: number, studentId: number): Promise<number> {
  return insertId(
    `INSERT INTO lab_instances (lab_id, course_id, student_id, status, k8s_pod_name, connection_url, started_at, expires_at)
     VALUES ($lab, $course, $student, 'running', $pod, $url, now(), now() + interval '2 hours') RETURNING id`,
    {
      lab: labId,
      course: courseId,
      student: studentId,
      pod: `lab-fresh-${++freshSeq}`,
      url: `https://labs.autolabs.local/fresh/${freshSeq}`,
    },
  );
}

/** New objects for one call (SQL, so the caches know nothing about them; dropped below anyway). */
async function makeFresh(kind: FreshKind): Promise<Record<string, number>> {
  const t1 = who.ownerTeacher.id;
  const t2 = who.otherTeacher.id;
  let made: Record<string, number>;
  switch (kind) {
    case "course":
      made = { "fresh.course": await freshCourse() };
      break;
    case "courseWithLab": {
      const course = await freshCourse();
      await sql("INSERT INTO course_labs (course_id, lab_id) VALUES ($c, $l) RETURNING lab_id", {
        c: course,
        l: world.labApprovedA,
      });
      made = { "fresh.course": course };
      break;
    }
    case "draftLab":
      made = { "fresh.lab": await freshLab(t1, "draft") };
      break;
    case "pendingLab":
      made = { "fresh.lab": await freshLab(t1, "pending_approval") };
      break;
    case "approvedLab":
      made = { "fresh.lab": await freshLab(t1, "approved") };
      break;
    case "labInA":
      made = { "fresh.lab": await freshLab(t1, "approved", world.courseA) };
      break;
    case "labInB":
      made = { "fresh.lab": await freshLab(t2, "approved", world.courseB) };
      break;
    case "instanceS1A": {
      const lab = await freshLab(t1, "approved", world.courseA);
      made = { "fresh.lab": lab, "fresh.instance": await runningInstance(lab, world.courseA, who.assignedStudent.id) };
      break;
    }
    case "instanceS2B": {
      const lab = await freshLab(t2, "approved", world.courseB);
      made = {
        "fresh.lab": lab,
        "fresh.instance": await runningInstance(lab, world.courseB, who.unassignedStudent.id),
      };
      break;
    }
    case "requestS2": {
      const course = await freshCourse();
      const request = await insertId(
        "INSERT INTO access_requests (student_id, course_id, message, status) VALUES ($s, $c, 'let me in', 'pending') RETURNING id",
        {
          s: who.unassignedStudent.id,
          c: course,
        },
      );
      made = { "fresh.course": course, "fresh.request": request };
      break;
    }
  }
  await p.broker.cacher?.clean();
  return made;
}

/* ───────────────────────────── placeholders, routes ───────────────────────────── */

function resolvePath(template: string, ids: Partial<Record<string, number>>): string {
  return template.replace(/\{([\w.]+)\}/g, (_, name: string) => {
    if (ids[name] === undefined) throw new Error(`unknown placeholder {${name}} in ${template}`);
    return String(ids[name]);
  });
}

function resolveBody(body: unknown, ids: Partial<Record<string, number>>): unknown {
  if (typeof body === "string") {
    const m = /^\{([\w.]+)\}$/.exec(body);
    if (!m) return body;
    if (ids[m[1]] === undefined) throw new Error(`unknown placeholder ${body}`);
    return ids[m[1]];
  }
  if (Array.isArray(body)) return body.map((v) => resolveBody(v, ids));
  if (body && typeof body === "object")
    return Object.fromEntries(Object.entries(body).map(([k, v]) => [k, resolveBody(v, ids)]));
  return body;
}

function splitRoute(route: string): { method: string; template: string } {
  const [method, template] = route.split(" ");
  return { method, template };
}

/** Does a concrete path (no query) belong to the route template? Keeps each case under its own row. */
function matchesTemplate(template: string, path: string): boolean {
  const re = new RegExp(`^${template.replace(/:[A-Za-z_]+/g, "[^/]+")}$`);
  return re.test(path.split("?")[0]);
}

/* ───────────────────────────── scope: DESIGN's visibility, in SQL ───────────────────────────── */

/** Ids a 2xx list answer must hold exactly, by the access rules of DESIGN.md. */
async function visibleIds(scope: Scope, caller: Exclude<Caller, "anonymous">, path: string): Promise<number[]> {
  const me = who[caller];
  const url = new URL(path, "http://matrix");
  const q = (k: string) => url.searchParams.get(k);
  const where: string[] = [];
  const bind: Record<string, unknown> = { me: me.id };
  const courseVisible = (course: string) =>
    me.role === "admin"
      ? "TRUE"
      : me.role === "teacher"
        ? `EXISTS (SELECT 1 FROM courses vc WHERE vc.id = ${course} AND vc.owner_id = $me)`
        : `EXISTS (SELECT 1 FROM course_students vs WHERE vs.course_id = ${course} AND vs.student_id = $me)`;
  const filter = (param: string, column: string) => {
    const v = q(param);
    if (v !== null) {
      where.push(`${column} = $${param}`);
      bind[param] = /^\d+$/.test(v) ? Number(v) : v;
    }
  };
  let select: string;
  switch (scope) {
    case "users":
      select = "SELECT u.id FROM users u";
      if (me.role === "teacher") where.push("u.role = 'student'");
      else if (me.role !== "admin") where.push("FALSE");
      filter("role", "u.role");
      break;
    case "courses":
      select = "SELECT c.id FROM courses c";
      where.push(courseVisible("c.id"));
      filter("owner_id", "c.owner_id");
      break;
    case "courseStudents":
      select = "SELECT cs.student_id AS id FROM course_students cs";
      where.push("cs.course_id = $course");
      bind.course = Number(/\/courses\/(\d+)\//.exec(url.pathname)![1]);
      break;
    case "courseLabs":
      select = "SELECT l.id FROM labs l JOIN course_labs cl ON cl.lab_id = l.id";
      where.push("cl.course_id = $course");
      bind.course = Number(/\/courses\/(\d+)\//.exec(url.pathname)![1]);
      if (me.role === "student") where.push("l.status = 'approved'");
      break;
    case "labs": {
      select = "SELECT l.id FROM labs l";
      const attachedToVisible = `EXISTS (SELECT 1 FROM course_labs al WHERE al.lab_id = l.id AND ${courseVisible("al.course_id")})`;
      if (me.role === "teacher") where.push(`(l.created_by = $me OR l.status = 'approved' OR ${attachedToVisible})`);
      if (me.role === "student") where.push(`l.status = 'approved' AND ${attachedToVisible}`);
      filter("status", "l.status");
      const course = q("course_id");
      if (course !== null) {
        // Filtering by a course the caller may not see must not tell what that course holds.
        where.push(
          `EXISTS (SELECT 1 FROM course_labs fl WHERE fl.lab_id = l.id AND fl.course_id = $course_id) AND ${courseVisible("$course_id")}`,
        );
        bind.course_id = Number(course);
      }
      break;
    }
    case "instances":
      select = "SELECT i.id FROM lab_instances i JOIN courses c ON c.id = i.course_id";
      if (me.role === "teacher") where.push("c.owner_id = $me");
      if (me.role === "student") where.push("i.student_id = $me");
      filter("course_id", "i.course_id");
      filter("student_id", "i.student_id");
      filter("lab_id", "i.lab_id");
      filter("status", "i.status");
      break;
    case "requests":
      select = "SELECT r.id FROM access_requests r JOIN courses c ON c.id = r.course_id";
      if (me.role === "teacher") where.push("c.owner_id = $me");
      if (me.role === "student") where.push("r.student_id = $me");
      filter("course_id", "r.course_id");
      filter("student_id", "r.student_id");
      filter("status", "r.status");
      break;
  }
  const rows = await sql<{ id: number }>(`${select} ${where.length ? "WHERE " + where.join(" AND ") : ""}`, bind);
  return rows.map((r) => r.id).sort((a, b) => a - b);
}

/* ───────────────────────────── one case ───────────────────────────── */

async function runCase(row: MatrixRow, c: MatrixCase): Promise<string[]> {
  const { method, template } = splitRoute(row.route);
  const problems: string[] = [];
  const write = method !== "GET";
  for (const [i, caller] of CALLERS.entries()) {
    const ids = { ...world, ...(c.fresh ? await makeFresh(c.fresh) : {}) };
    const path = resolvePath(c.path, ids);
    if (!matchesTemplate(template, path)) throw new Error(`case "${c.what}": ${path} is not a path of ${row.route}`);
    const body = c.body === undefined ? undefined : resolveBody(c.body, ids);
    const expected = c.expect[i];
    const before = await settledSnapshot();
    const res = await call(caller, method, path, body, c.stream === true);
    const after = await snapshot();
    const changed = changedTables(before, after);
    const tag = `${caller} ${method} ${path}${body === undefined ? "" : " " + JSON.stringify(body)}`;

    if (res.status !== expected) {
      problems.push(`${tag}: expected ${expected}, got ${res.status} ${JSON.stringify(res.body).slice(0, 300)}`);
    }
    if (res.status >= 400) {
      stats.refused++;
      if (changed.length > 0) problems.push(`${tag}: refused with ${res.status} but changed ${changed.join("; ")}`);
      const detail = (res.body as { detail?: unknown } | null)?.detail;
      if (detail === undefined) problems.push(`${tag}: ${res.status} without {"detail"}: ${JSON.stringify(res.body)}`);
    } else if (res.status < 300) {
      if (write && !c.writesNothing && changed.length === 0)
        problems.push(`${tag}: allowed (${res.status}) but changed nothing`);
      if (write) dirty = true;
      if (c.stream && !res.contentType.startsWith("text/event-stream"))
        problems.push(`${tag}: 200 without an event stream (${res.contentType})`);
      if (c.scope && caller !== "anonymous") {
        const page = res.body as Page;
        const got = page.items.map((it) => it.id).sort((a, b) => a - b);
        const want = await visibleIds(c.scope, caller, path);
        if (want.length > 100)
          throw new Error(`${tag}: scope of ${want.length} rows exceeds one page; order the table so lists run first`);
        if (JSON.stringify(got) !== JSON.stringify(want) || page.total !== want.length) {
          problems.push(
            `${tag}: scope "${c.scope}" expected ids [${want.join(",")}] (total ${want.length}), got [${got.join(",")}] (total ${page.total})`,
          );
        }
      }
    }
  }
  return problems;
}

/* ───────────────────────────── the world ───────────────────────────── */

const LAB = (name: string) => ({
  name,
  docker_image: "registry.autolabs.local/labs/matrix:1.0",
  resources: { cpu: "500m", memory: "512Mi", storage: "1Gi" },
});

async function buildWorld(): Promise<void> {
  const demo: [Caller, string][] = [
    ["admin", "admin"],
    ["ownerTeacher", "teacher"],
    ["assignedStudent", "student"],
    ["unassignedStudent", "student2"],
  ];
  headers.anonymous = {};
  for (const [caller, account] of demo) headers[caller] = { authorization: `Bearer ${await p.token(account)}` };
  // A second teacher the demo IdP has no account for: a token signed with the IdP's own key.
  headers.otherTeacher = { authorization: `Bearer ${await tokenFor(p, EXTRA_ACCOUNTS.teacher2)}` };
  for (const caller of CALLERS) {
    if (caller === "anonymous") continue;
    const me = (await must(`/auth/me of ${caller}`, call(caller, "GET", "/auth/me"), 200)) as {
      id: number;
      role: Role;
    };
    who[caller] = { id: me.id, role: me.role };
    world[caller] = me.id;
  }
  expect(who.otherTeacher.role).toBe("teacher");

  // courseA: T1's, S1 assigned. courseB: T2's, S2 assigned.
  world.courseA = (await must("courseA", call("ownerTeacher", "POST", "/courses", { name: "Course A" }), 201)).id;
  await must(
    "assign S1",
    call("ownerTeacher", "POST", `/courses/${world.courseA}/students`, { student_ids: [who.assignedStudent.id] }),
    200,
  );
  world.courseB = (await must("courseB", call("otherTeacher", "POST", "/courses", { name: "Course B" }), 201)).id;
  await must(
    "assign S2",
    call("otherTeacher", "POST", `/courses/${world.courseB}/students`, { student_ids: [who.unassignedStudent.id] }),
    200,
  );

  // Labs through the approval workflow.
  const approved = async (teacher: Caller, name: string, course: number) => {
    const lab = (await must(name, call(teacher, "POST", "/labs", LAB(name)), 201)).id;
    await must(`${name} submit`, call(teacher, "POST", `/labs/${lab}/submit`), 200);
    await must(`${name} approve`, call("admin", "POST", `/labs/${lab}/approve`), 200);
    await must(`${name} attach`, call(teacher, "POST", `/courses/${course}/labs`, { lab_id: lab }), 201);
    return lab;
  };
  world.labApprovedA = await approved("ownerTeacher", "Lab approved A", world.courseA);
  world.labApprovedB = await approved("otherTeacher", "Lab approved B", world.courseB);
  world.labDraftT1 = (await must("labDraftT1", call("ownerTeacher", "POST", "/labs", LAB("Draft of T1")), 201)).id;
  await must(
    "attach draft",
    call("ownerTeacher", "POST", `/courses/${world.courseA}/labs`, { lab_id: world.labDraftT1 }),
    201,
  );
  world.labPendingT2 = (
    await must("labPendingT2", call("otherTeacher", "POST", "/labs", LAB("Pending of T2")), 201)
  ).id;
  await must("submit pending", call("otherTeacher", "POST", `/labs/${world.labPendingT2}/submit`), 200);

  // Instances through the API, then running as a worker's result would make them.
  world.instS1A = (
    await must(
      "instS1A",
      call("assignedStudent", "POST", "/lab-instances", { lab_id: world.labApprovedA, course_id: world.courseA }),
      202,
    )
  ).id;
  world.instS2B = (
    await must(
      "instS2B",
      call("unassignedStudent", "POST", "/lab-instances", { lab_id: world.labApprovedB, course_id: world.courseB }),
      202,
    )
  ).id;
  await sql(
    `UPDATE lab_instances SET status = 'running', k8s_pod_name = 'lab-' || id, connection_url = 'https://labs.autolabs.local/' || id,
            started_at = now(), expires_at = now() + interval '2 hours'
      WHERE id IN ($a, $b) RETURNING id`,
    { a: world.instS1A, b: world.instS2B },
  );

  // Requests to join the other one's course.
  world.reqS2A = (
    await must(
      "reqS2A",
      call("unassignedStudent", "POST", "/access-requests", { course_id: world.courseA, message: "hi" }),
      201,
    )
  ).id;
  world.reqS1B = (
    await must(
      "reqS1B",
      call("assignedStudent", "POST", "/access-requests", { course_id: world.courseB, message: "hi" }),
      201,
    )
  ).id;
  await p.broker.cacher?.clean();
}

/* ───────────────────────────── the test ───────────────────────────── */

beforeAll(async () => {
  stats.started = Date.now();
  p = await startTestPlatform({ SERVICES, MAX_ACTIVE_INSTANCES_PER_STUDENT: "100", LAB_SWEEP_INTERVAL_MS: "3600000" });
  await buildWorld();
});

afterAll(async () => {
  const cases = MATRIX.reduce((n, r) => n + r.cases.length, 0);
  console.log(
    `authorization matrix: ${MATRIX.length} routes, ${cases} cases, ${stats.calls} HTTP calls (${stats.refused} refused, each compared ` +
      `before/after), ${stats.snapshots} snapshots, ${((Date.now() - stats.started) / 1000).toFixed(1)} s`,
  );
  await ifAssigned(p)?.stop();
});

// Reads first, on the world as built; then the writes (each on its own fresh objects where it changes them).
const ORDERED = [
  ...MATRIX.filter((r) => r.route.startsWith("GET ")),
  ...MATRIX.filter((r) => !r.route.startsWith("GET ")),
];

describe("authorization matrix of /api/v1", () => {
  it("has exactly one row per route the gateway serves", async () => {
    const aliases = await p.broker.call<{ methods: string; fullPath: string }[], Record<string, never>>(
      "api-gateway.listAliases",
      {},
      { meta: { user: systemPrincipal("authorization matrix") } },
    );
    const served = aliases
      .filter((a) => a.fullPath.startsWith(`${API}/`))
      .map((a) => `${a.methods} ${a.fullPath.slice(API.length)}`)
      .sort();
    const rows = MATRIX.map((r) => r.route);
    expect(new Set(rows).size).toBe(rows.length);
    expect({
      withoutRow: served.filter((r) => !rows.includes(r)),
      rowWithoutRoute: rows.filter((r) => !served.includes(r)),
    }).toEqual({
      withoutRow: [],
      rowWithoutRoute: [],
    });
    for (const r of MATRIX) expect(r.cases.length).toBeGreaterThan(0);
  });

  for (const row of ORDERED) {
    for (const c of row.cases) {
      it(`${row.route}: ${c.what}`, async () => {
        expect(await runCase(row, c)).toEqual([]);
      });
    }
  }
});
