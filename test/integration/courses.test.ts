/**
 * Courses through HTTP (DESIGN "HTTP API: courses", "Access rules"): CRUD, ownership (other teacher → 404,
 * assigned student → 403, unassigned student → 404), students, attached labs, list scoping and paging.
 * Every refused call is followed by a re-read proving it changed nothing.
 *
 * Accounts: the IdP's demo admin, teacher, student, student2; teacher2 and student3 are forged with the
 * IdP's key (see test/support/http-api.ts).
 */
import { startTestPlatform, type TestPlatform } from "../support/platform";
import { checkedApi, fixtures, locs, uniqueName, type Api, type Fixtures, type Ids } from "../support/http-api";
import { ifAssigned } from "../support/cleanup";

let p: TestPlatform;
let api: Api;
let f: Fixtures;
let ids: Ids;

beforeAll(async () => {
  p = await startTestPlatform({ SERVICES: "api-gateway,auth,courses,labs" });
  api = checkedApi(p);
  f = await fixtures(p, api);
  ids = f.ids;
});
afterAll(async () => {
  await ifAssigned(p)?.stop();
});

interface Course {
  id: number;
  name: string;
  description: string;
  owner_id: number;
  created_at: string;
  updated_at: string;
}
interface Page<T> {
  items: T[];
  total: number;
  offset: number;
  limit: number;
}

const COURSE_KEYS = ["created_at", "description", "id", "listed", "name", "owner_id", "updated_at"];

/** The course row as the database has it now (to prove a refused call changed nothing). */
async function snapshot(id: number) {
  const row = await f.row("courses", id);
  const students = await p.sequelize.query("SELECT student_id FROM course_students WHERE course_id = $id ORDER BY 1", {
    bind: { id },
  });
  const labs = await p.sequelize.query("SELECT lab_id FROM course_labs WHERE course_id = $id ORDER BY 1", {
    bind: { id },
  });
  return JSON.stringify([row, students[0], labs[0]]);
}

/** A course of `teacher` with `student` assigned (student2 and student3 are not). */
async function ownedCourseWithStudent(): Promise<number> {
  const id = await f.course("teacher");
  await f.assign(id, ids.student);
  return id;
}

describe("POST /courses", () => {
  it("a teacher creates a course they own: 201, Location, the documented fields", async () => {
    const res = await api("POST", "/courses", { as: "teacher", body: { name: "  Networks  ", description: "TCP/IP" } });
    expect(res.status).toBe(201);
    const c = res.body as Course;
    expect(Object.keys(c).sort()).toEqual(COURSE_KEYS);
    expect(c).toMatchObject({ name: "Networks", description: "TCP/IP", owner_id: ids.teacher });
    expect(Number.isInteger(c.id)).toBe(true);
    expect(new Date(c.created_at).toISOString()).toBe(c.created_at);
    expect(res.headers.get("location")).toBe(`/api/v1/courses/${c.id}`);
    expect(await f.row("courses", c.id)).toMatchObject({ name: "Networks", owner_id: ids.teacher });
  });

  it("a teacher may name themself as owner, never someone else", async () => {
    expect(
      (await api("POST", "/courses", { as: "teacher", body: { name: "Self", owner_id: ids.teacher } })).status,
    ).toBe(201);
    const before = await f.count("courses");
    const res = await api("POST", "/courses", {
      as: "teacher",
      body: { name: "For teacher2", owner_id: ids.teacher2 },
    });
    expect(res.status).toBe(422);
    expect(locs(res)).toEqual(["body.owner_id"]);
    expect(await f.count("courses")).toBe(before);
  });

  it("an admin without owner_id owns the course (the seed's admin course), and manages it", async () => {
    const mine = await api("POST", "/courses", { as: "admin", body: { name: "Admin's own" } });
    expect(mine.status).toBe(201);
    const course = mine.body as Course;
    expect(course.owner_id).toBe(ids.admin);
    expect(await f.row("courses", course.id)).toMatchObject({ owner_id: ids.admin });
    expect((await api("PUT", `/courses/${course.id}`, { as: "admin", body: { name: "Renamed" } })).status).toBe(200);
    // An admin may be named as owner too.
    const named = await api("POST", "/courses", { as: "admin", body: { name: "Named", owner_id: ids.admin } });
    expect(named.status).toBe(201);
    expect((named.body as Course).owner_id).toBe(ids.admin);
  });

  it("an admin's chosen owner must be a teacher or an admin", async () => {
    const before = await f.count("courses");
    for (const owner of [ids.student, 987654]) {
      const res = await api("POST", "/courses", { as: "admin", body: { name: "Bad owner", owner_id: owner } });
      expect(res.status).toBe(422);
      expect(locs(res)).toEqual(["body.owner_id"]);
    }
    for (const owner of [true, [ids.teacher2], `${ids.teacher2}x`]) {
      const res = await api("POST", "/courses", { as: "admin", body: { name: "Odd owner", owner_id: owner } });
      expect(res.status).toBe(422);
      expect(locs(res)).toEqual(["body.owner_id"]);
    }
    expect(await f.count("courses")).toBe(before);
    const ok = await api("POST", "/courses", {
      as: "admin",
      body: { name: "Given to teacher2", owner_id: ids.teacher2 },
    });
    expect(ok.status).toBe(201);
    expect((ok.body as Course).owner_id).toBe(ids.teacher2);
  });

  it("a student may not create a course (403), nothing written", async () => {
    const before = await f.count("courses");
    const res = await api("POST", "/courses", { as: "student", body: { name: "Student course" } });
    expect(res.status).toBe(403);
    expect(await f.count("courses")).toBe(before);
  });

  it("unknown and server-owned fields in the body are never written", async () => {
    const res = await api("POST", "/courses", {
      as: "teacher",
      body: {
        name: "Mass assignment",
        id: 777777,
        created_at: "2000-01-01T00:00:00Z",
        updated_at: "2000-01-01T00:00:00Z",
        students: [ids.student],
        role: "admin",
      },
    });
    expect(res.status).toBe(201);
    const c = res.body as Course;
    expect(c.id).not.toBe(777777);
    expect(new Date(c.created_at).getFullYear()).toBeGreaterThan(2020);
    expect(await f.row("courses", 777777)).toBeUndefined();
    expect(await f.count("course_students WHERE course_id = $id", { id: c.id })).toBe(0);
  });

  it("field validation: name required, non-empty, at most 200; description a string", async () => {
    const before = await f.count("courses");
    for (const [body, loc] of [
      [{}, "body.name"],
      [{ name: "" }, "body.name"],
      [{ name: "   " }, "body.name"],
      [{ name: "x".repeat(201) }, "body.name"],
      [{ name: 5 }, "body.name"],
      [{ name: "ok", description: 5 }, "body.description"],
      [{ name: "ok", description: "d".repeat(5001) }, "body.description"],
    ] as const) {
      const res = await api("POST", "/courses", { as: "teacher", body });
      expect(res.status).toBe(422);
      expect(locs(res)).toEqual([loc]);
    }
    expect(await f.count("courses")).toBe(before);
  });
});

describe("GET /courses/{id}", () => {
  it("owner, admin and an assigned student see it; other teacher and unassigned student get 404", async () => {
    const id = await ownedCourseWithStudent();
    const expected = (await api("GET", `/courses/${id}`, { as: "teacher" })).body as Course;
    expect(expected).toMatchObject({ id, owner_id: ids.teacher });
    for (const as of ["admin", "student"]) {
      const res = await api("GET", `/courses/${id}`, { as });
      expect(res.status).toBe(200);
      expect(res.body).toEqual(expected);
    }
    for (const as of ["teacher2", "student2"]) {
      const res = await api("GET", `/courses/${id}`, { as });
      expect(res.status).toBe(404);
      // Same answer as for a course that does not exist: no existence leak.
      expect(res.body).toEqual((await api("GET", "/courses/2000000000", { as })).body);
    }
  });

  it("a course that does not exist is 404 for everyone, 401 without a token", async () => {
    for (const as of ["admin", "teacher", "student"])
      expect((await api("GET", "/courses/2000000001", { as })).status).toBe(404);
    expect((await api("GET", "/courses/2000000001")).status).toBe(401);
  });
});

describe("PUT /courses/{id}", () => {
  it("the owner renames and re-describes; updated_at moves", async () => {
    const id = await f.course("teacher", "Before");
    const before = (await f.row("courses", id)) as { updated_at: Date };
    const res = await api("PUT", `/courses/${id}`, { as: "teacher", body: { name: "After", description: "new" } });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ id, name: "After", description: "new", owner_id: ids.teacher });
    const row = (await f.row("courses", id)) as { name: string; updated_at: Date };
    expect(row.name).toBe("After");
    expect(row.updated_at.getTime()).toBeGreaterThanOrEqual(before.updated_at.getTime());
    expect((await api("GET", `/courses/${id}`, { as: "teacher" })).body).toMatchObject({ name: "After" });
  });

  it("other teacher → 404, assigned student → 403, unassigned student → 403 as for a missing course; nothing changes", async () => {
    const id = await ownedCourseWithStudent();
    const state = await snapshot(id);
    for (const [as, status] of [
      ["teacher2", 404],
      ["student", 403],
      // Students may never edit a course: refused by role before the course is looked at, so the answer is the
      // same for an existing and a missing course (no existence leak).
      ["student2", 403],
    ] as const) {
      const res = await api("PUT", `/courses/${id}`, { as, body: { name: `by ${as}` } });
      expect(res.status).toBe(status);
      const missing = await api("PUT", "/courses/2000000002", { as, body: { name: `by ${as}` } });
      expect(missing.status).toBe(as === "teacher2" ? 404 : 403);
      expect(res.body).toEqual(missing.body);
    }
    expect(await snapshot(id)).toBe(state);
  });

  it("only an admin hands a course to another teacher; the old owner then loses it", async () => {
    const id = await f.course("teacher");
    const state = await snapshot(id);
    const refused = await api("PUT", `/courses/${id}`, { as: "teacher", body: { owner_id: ids.teacher2 } });
    expect(refused.status).toBe(422);
    expect(locs(refused)).toEqual(["body.owner_id"]);
    expect(await snapshot(id)).toBe(state);
    // Naming oneself is not a change.
    expect((await api("PUT", `/courses/${id}`, { as: "teacher", body: { owner_id: ids.teacher } })).status).toBe(200);

    for (const owner of [ids.student, 987654]) {
      const bad = await api("PUT", `/courses/${id}`, { as: "admin", body: { owner_id: owner } });
      expect(bad.status).toBe(422);
      expect(locs(bad)).toEqual(["body.owner_id"]);
    }
    expect(await snapshot(id)).toBe(state);

    // Warm any cache of the old owner's view first: the hand-over must not be served stale.
    expect((await api("GET", `/courses/${id}`, { as: "teacher" })).status).toBe(200);
    expect((await api("GET", `/courses/${id}`, { as: "teacher2" })).status).toBe(404);
    const moved = await api("PUT", `/courses/${id}`, { as: "admin", body: { owner_id: ids.teacher2 } });
    expect(moved.status).toBe(200);
    expect((moved.body as Course).owner_id).toBe(ids.teacher2);
    expect((await api("GET", `/courses/${id}`, { as: "teacher" })).status).toBe(404);
    expect((await api("PUT", `/courses/${id}`, { as: "teacher", body: { name: "mine?" } })).status).toBe(404);
    expect((await api("GET", `/courses/${id}`, { as: "teacher2" })).status).toBe(200);
    expect((await api("PUT", `/courses/${id}`, { as: "teacher2", body: { name: "Now mine" } })).status).toBe(200);
    const ownList = (await api("GET", "/courses?limit=100", { as: "teacher" })).body as Page<Course>;
    expect(ownList.items.map((c) => c.id)).not.toContain(id);
  });

  it("an admin edits any course", async () => {
    const id = await f.course("teacher2");
    const res = await api("PUT", `/courses/${id}`, { as: "admin", body: { name: "Admin edit" } });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ name: "Admin edit", owner_id: ids.teacher2 });
  });

  it("id, created_at and unknown fields in the body are never written; the path decides the course", async () => {
    const a = await f.course("teacher", "Path course");
    const b = await f.course("teacher", "Other course");
    const stateB = await snapshot(b);
    const rowA = (await f.row("courses", a)) as { created_at: Date };
    const res = await api("PUT", `/courses/${a}`, {
      as: "teacher",
      body: {
        id: b,
        name: "Renamed by path",
        created_at: "2000-01-01T00:00:00Z",
        owner: ids.teacher2,
        students: [ids.student2],
      },
    });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ id: a, name: "Renamed by path", owner_id: ids.teacher });
    expect(((await f.row("courses", a)) as { created_at: Date }).created_at.getTime()).toBe(rowA.created_at.getTime());
    expect(await snapshot(b)).toBe(stateB);
    expect(await f.count("course_students WHERE course_id = $a", { a })).toBe(0);
  });

  it("an empty body changes nothing; invalid fields are 422 and change nothing", async () => {
    const id = await f.course("teacher", "Stable");
    const state = await snapshot(id);
    const same = await api("PUT", `/courses/${id}`, { as: "teacher", body: {} });
    expect(same.status).toBe(200);
    expect(same.body).toMatchObject({ id, name: "Stable" });
    for (const body of [{ name: "" }, { name: 1 }, { name: "x".repeat(201) }, { description: [] }]) {
      const res = await api("PUT", `/courses/${id}`, { as: "teacher", body });
      expect(res.status).toBe(422);
    }
    expect(await snapshot(id)).toBe(state);
  });
});

describe("DELETE /courses/{id}", () => {
  it("other teacher → 404, assigned student → 403, unassigned student → 403 as for a missing course; the course stays", async () => {
    const id = await ownedCourseWithStudent();
    const lab = await f.lab("teacher");
    await f.attach(id, lab.id);
    const state = await snapshot(id);
    for (const [as, status] of [
      ["teacher2", 404],
      ["student", 403],
      ["student2", 403],
    ] as const) {
      const res = await api("DELETE", `/courses/${id}`, { as });
      expect(res.status).toBe(status);
      expect(res.body).toEqual((await api("DELETE", "/courses/2000000003", { as })).body);
    }
    expect(await snapshot(id)).toBe(state);
  });

  it("the owner deletes: 204, empty body, links gone, then 404", async () => {
    const id = await ownedCourseWithStudent();
    const lab = await f.lab("teacher");
    await f.attach(id, lab.id);
    const res = await api("DELETE", `/courses/${id}`, { as: "teacher" });
    expect(res.status).toBe(204);
    expect(res.body).toBeNull();
    expect(await f.row("courses", id)).toBeUndefined();
    expect(await f.count("course_students WHERE course_id = $id", { id })).toBe(0);
    expect(await f.count("course_labs WHERE course_id = $id", { id })).toBe(0);
    // The lab itself survives its course.
    expect(await f.row("labs", lab.id)).toBeDefined();
    expect((await api("GET", `/courses/${id}`, { as: "admin" })).status).toBe(404);
    expect((await api("GET", `/courses/${id}`, { as: "student" })).status).toBe(404);
    expect((await api("DELETE", `/courses/${id}`, { as: "teacher" })).status).toBe(404);
  });

  it("an admin deletes any course", async () => {
    const id = await f.course("teacher2");
    expect((await api("DELETE", `/courses/${id}`, { as: "admin" })).status).toBe(204);
    expect(await f.row("courses", id)).toBeUndefined();
  });

  it.each(["pending", "running", "stopping"])(
    "a course with an active (%s) instance → 409, nothing deleted",
    async (status) => {
      const id = await ownedCourseWithStudent();
      const lab = await f.approvedLab("teacher");
      await f.attach(id, lab.id);
      await f.instance(lab.id, id, ids.student, status);
      const state = await snapshot(id);
      for (const as of ["teacher", "admin"]) {
        const res = await api("DELETE", `/courses/${id}`, { as });
        expect(res.status).toBe(409);
        expect((res.body as { detail: string }).detail).toMatch(/active/i);
      }
      expect(await snapshot(id)).toBe(state);
      expect(await f.count("lab_instances WHERE course_id = $id", { id })).toBe(1);
    },
  );

  it("a course whose instances have all finished can be deleted (no 500 from their history)", async () => {
    const id = await ownedCourseWithStudent();
    const lab = await f.approvedLab("teacher");
    await f.attach(id, lab.id);
    for (const status of ["stopped", "failed", "expired"]) await f.instance(lab.id, id, ids.student, status);
    const res = await api("DELETE", `/courses/${id}`, { as: "teacher" });
    expect(res.status).toBe(204);
    expect(await f.row("courses", id)).toBeUndefined();
    expect(await f.count("lab_instances WHERE course_id = $id", { id })).toBe(0);
    expect(await f.row("labs", lab.id)).toBeDefined();
  });
});

describe("students of a course", () => {
  interface Student {
    id: number;
    email: string;
    name: string;
    role: string;
    assigned_at: string;
  }

  it("GET: owner and admin list them; other teacher 404, assigned student 403, unassigned student 404", async () => {
    const id = await ownedCourseWithStudent();
    await f.assign(id, ids.student2);
    for (const as of ["teacher", "admin"]) {
      const res = await api("GET", `/courses/${id}/students`, { as });
      expect(res.status).toBe(200);
      const page = res.body as Page<Student>;
      expect(page).toMatchObject({ total: 2, offset: 0, limit: 50 });
      expect(page.items.map((s) => s.id).sort()).toEqual([ids.student, ids.student2].sort());
      expect(Object.keys(page.items[0]).sort()).toEqual(["assigned_at", "email", "id", "name", "role"]);
      expect(page.items.every((s) => s.role === "student")).toBe(true);
    }
    for (const [as, status] of [
      ["teacher2", 404],
      ["student", 403],
      ["student3", 404],
    ] as const) {
      expect((await api("GET", `/courses/${id}/students`, { as })).status).toBe(status);
    }
  });

  it("GET pages, sorts and searches", async () => {
    const id = await f.course("teacher");
    await f.assign(id, ids.student, ids.student2, ids.student3);
    const byName = (await api("GET", `/courses/${id}/students?sort=name&limit=2`, { as: "teacher" }))
      .body as Page<Student>;
    expect(byName.total).toBe(3);
    expect(byName.items).toHaveLength(2);
    const all = (await api("GET", `/courses/${id}/students?sort=-name`, { as: "teacher" })).body as Page<Student>;
    const names = all.items.map((s) => s.name);
    expect(names).toEqual([...names].sort().reverse());
    expect(byName.items.map((s) => s.name)).toEqual([...names].reverse().slice(0, 2));
    const rest = (await api("GET", `/courses/${id}/students?sort=name&limit=2&offset=2`, { as: "teacher" }))
      .body as Page<Student>;
    expect(rest).toMatchObject({ total: 3, offset: 2, limit: 2 });
    expect(rest.items).toHaveLength(1);
    const found = (await api("GET", `/courses/${id}/students?q=student3`, { as: "teacher" })).body as Page<Student>;
    expect(found.items.map((s) => s.id)).toEqual([ids.student3]);
    expect((await api("GET", `/courses/${id}/students?sort=role`, { as: "teacher" })).status).toBe(422);
  });

  it("POST assigns, idempotently, and reports what was new", async () => {
    const id = await f.course("teacher");
    const first = await api("POST", `/courses/${id}/students`, {
      as: "teacher",
      body: { student_ids: [ids.student, ids.student2] },
    });
    expect(first.status).toBe(200);
    expect(first.body).toEqual({
      course_id: id,
      added: [ids.student, ids.student2].sort((a, b) => a - b),
      already_assigned: [],
    });
    const again = await api("POST", `/courses/${id}/students`, {
      as: "teacher",
      body: { student_ids: [ids.student, ids.student3] },
    });
    expect(again.status).toBe(200);
    expect(again.body).toEqual({ course_id: id, added: [ids.student3], already_assigned: [ids.student] });
    const repeat = await api("POST", `/courses/${id}/students`, {
      as: "teacher",
      body: { student_ids: [ids.student3] },
    });
    expect(repeat.body).toEqual({ course_id: id, added: [], already_assigned: [ids.student3] });
    expect(await f.count("course_students WHERE course_id = $id", { id })).toBe(3);
    // The assigned student sees the course at once.
    expect((await api("GET", `/courses/${id}`, { as: "student3" })).status).toBe(200);
  });

  it("a non-student or unknown id → 422 at its index, and nobody of that request is assigned", async () => {
    const id = await f.course("teacher");
    const state = await snapshot(id);
    const cases: [number[], (string | number)[][]][] = [
      [[ids.teacher], [["body", "student_ids", 0]]],
      [[ids.student, ids.admin], [["body", "student_ids", 1]]],
      [
        [ids.student, 999999, ids.teacher2],
        [
          ["body", "student_ids", 1],
          ["body", "student_ids", 2],
        ],
      ],
    ];
    for (const [studentIds, loc] of cases) {
      const res = await api("POST", `/courses/${id}/students`, { as: "teacher", body: { student_ids: studentIds } });
      expect(res.status).toBe(422);
      expect((res.body as { detail: { loc: unknown[] }[] }).detail.map((d) => d.loc)).toEqual(loc);
    }
    for (const body of [
      {},
      { student_ids: [] },
      { student_ids: [ids.student, ids.student] },
      { student_ids: ids.student },
      { student_ids: [0] },
      { student_ids: ["x"] },
      { student_ids: [true] },
      { student_ids: [[ids.student]] },
    ]) {
      const res = await api("POST", `/courses/${id}/students`, { as: "teacher", body });
      expect(res.status).toBe(422);
      expect(locs(res)[0]).toMatch(/^body\.student_ids/);
    }
    expect(await snapshot(id)).toBe(state);
  });

  it("POST by other teacher → 404, by a student (assigned or not) → 403; admin may", async () => {
    const id = await ownedCourseWithStudent();
    const state = await snapshot(id);
    expect(
      (await api("POST", `/courses/${id}/students`, { as: "teacher2", body: { student_ids: [ids.student2] } })).status,
    ).toBe(404);
    expect(
      (await api("POST", `/courses/${id}/students`, { as: "student", body: { student_ids: [ids.student2] } })).status,
    ).toBe(403);
    expect(
      (await api("POST", `/courses/${id}/students`, { as: "student2", body: { student_ids: [ids.student2] } })).status,
    ).toBe(403);
    expect(await snapshot(id)).toBe(state);
    const res = await api("POST", `/courses/${id}/students`, { as: "admin", body: { student_ids: [ids.student2] } });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ added: [ids.student2] });
  });

  it("DELETE removes: 204, then 404; the student loses the course", async () => {
    const id = await ownedCourseWithStudent();
    // Warm the student's cached views first: the removal must not be served stale.
    expect((await api("GET", `/courses/${id}`, { as: "student" })).status).toBe(200);
    expect(
      ((await api("GET", "/courses?limit=100", { as: "student" })).body as Page<Course>).items.map((c) => c.id),
    ).toContain(id);

    const res = await api("DELETE", `/courses/${id}/students/${ids.student}`, { as: "teacher" });
    expect(res.status).toBe(204);
    expect(res.body).toBeNull();
    expect(await f.count("course_students WHERE course_id = $id", { id })).toBe(0);
    expect((await api("DELETE", `/courses/${id}/students/${ids.student}`, { as: "teacher" })).status).toBe(404);
    expect((await api("GET", `/courses/${id}`, { as: "student" })).status).toBe(404);
    expect(
      ((await api("GET", "/courses?limit=100", { as: "student" })).body as Page<Course>).items.map((c) => c.id),
    ).not.toContain(id);
    // Never assigned, or not a user at all.
    expect((await api("DELETE", `/courses/${id}/students/${ids.student2}`, { as: "teacher" })).status).toBe(404);
    expect((await api("DELETE", `/courses/${id}/students/1999999999`, { as: "teacher" })).status).toBe(404);
  });

  it("DELETE by other teacher → 404, by the assigned student → 403, by an unassigned student → 403; admin may", async () => {
    const id = await ownedCourseWithStudent();
    const state = await snapshot(id);
    expect((await api("DELETE", `/courses/${id}/students/${ids.student}`, { as: "teacher2" })).status).toBe(404);
    expect((await api("DELETE", `/courses/${id}/students/${ids.student}`, { as: "student" })).status).toBe(403);
    expect((await api("DELETE", `/courses/${id}/students/${ids.student}`, { as: "student2" })).status).toBe(403);
    expect(await snapshot(id)).toBe(state);
    expect((await api("DELETE", `/courses/${id}/students/${ids.student}`, { as: "admin" })).status).toBe(204);
  });
});

describe("labs of a course", () => {
  interface Lab {
    id: number;
    status: string;
  }

  it("the owner attaches own and approved labs: 201, again 200 (idempotent); GET lists them", async () => {
    const id = await f.course("teacher");
    const own = await f.lab("teacher");
    const catalogue = await f.approvedLab("teacher2");
    const first = await api("POST", `/courses/${id}/labs`, { as: "teacher", body: { lab_id: own.id } });
    expect(first.status).toBe(201);
    expect(first.body).toEqual({ course_id: id, lab_id: own.id });
    expect(first.headers.get("location")).toBe(`/api/v1/courses/${id}/labs/${own.id}`);
    const again = await api("POST", `/courses/${id}/labs`, { as: "teacher", body: { lab_id: own.id } });
    expect(again.status).toBe(200);
    expect(again.body).toEqual({ course_id: id, lab_id: own.id });
    expect((await api("POST", `/courses/${id}/labs`, { as: "teacher", body: { lab_id: catalogue.id } })).status).toBe(
      201,
    );
    expect(await f.count("course_labs WHERE course_id = $id", { id })).toBe(2);

    const list = await api("GET", `/courses/${id}/labs`, { as: "teacher" });
    expect(list.status).toBe(200);
    const page = list.body as Page<Lab>;
    expect(page.total).toBe(2);
    expect(page.items.map((l) => l.id).sort()).toEqual([own.id, catalogue.id].sort());
    expect(Object.keys(page.items[0]).sort()).toEqual(
      [
        "approved_by",
        "created_at",
        "created_by",
        "description",
        "docker_image",
        "id",
        "max_lifetime_s",
        "name",
        "network_isolated",
        "rejection_reason",
        "resources",
        "status",
        "updated_at",
      ].sort(),
    );
  });

  it("another teacher's unapproved lab and a missing lab are 404; nothing attached", async () => {
    const id = await f.course("teacher");
    const hidden = await f.lab("teacher2");
    const pending = await f.lab("teacher2");
    expect((await api("POST", `/labs/${pending.id}/submit`, { as: "teacher2" })).status).toBe(200);
    for (const labId of [hidden.id, pending.id, 1999999999]) {
      const res = await api("POST", `/courses/${id}/labs`, { as: "teacher", body: { lab_id: labId } });
      expect(res.status).toBe(404);
    }
    // Not ids, even where a lax conversion would make one (true → 1, [n] → n).
    for (const body of [
      {},
      { lab_id: "x" },
      { lab_id: 0 },
      { lab_id: [hidden.id] },
      { lab_id: true },
      { lab_id: 1.5 },
      { lab_id: null },
    ]) {
      const res = await api("POST", `/courses/${id}/labs`, { as: "teacher", body });
      expect(res.status).toBe(422);
      expect(locs(res)).toEqual(["body.lab_id"]);
    }
    expect(await f.count("course_labs WHERE course_id = $id", { id })).toBe(0);
  });

  it("attach by other teacher → 404, assigned student → 403, unassigned student → 404 (student role: 403)", async () => {
    const id = await ownedCourseWithStudent();
    const lab = await f.approvedLab("teacher");
    const state = await snapshot(id);
    expect((await api("POST", `/courses/${id}/labs`, { as: "teacher2", body: { lab_id: lab.id } })).status).toBe(404);
    expect((await api("POST", `/courses/${id}/labs`, { as: "student", body: { lab_id: lab.id } })).status).toBe(403);
    // Students may never manage course labs: refused by role before the course is even looked at.
    expect((await api("POST", `/courses/${id}/labs`, { as: "student2", body: { lab_id: lab.id } })).status).toBe(403);
    expect(await snapshot(id)).toBe(state);
  });

  it("GET: an assigned student sees only approved labs; other teacher and unassigned student 404", async () => {
    const id = await ownedCourseWithStudent();
    const draft = await f.lab("teacher");
    const approved = await f.approvedLab("teacher");
    await f.attach(id, draft.id);
    await f.attach(id, approved.id);
    const asStudent = (await api("GET", `/courses/${id}/labs`, { as: "student" })).body as Page<Lab>;
    expect(asStudent.items.map((l) => l.id)).toEqual([approved.id]);
    expect(asStudent.total).toBe(1);
    // Even when asking for drafts by filter.
    expect(((await api("GET", `/courses/${id}/labs?status=draft`, { as: "student" })).body as Page<Lab>).total).toBe(0);
    const drafts = (await api("GET", `/courses/${id}/labs?status=draft`, { as: "teacher" })).body as Page<Lab>;
    expect(drafts.items.map((l) => l.id)).toEqual([draft.id]);
    expect((await api("GET", `/courses/${id}/labs`, { as: "teacher2" })).status).toBe(404);
    expect((await api("GET", `/courses/${id}/labs`, { as: "student2" })).status).toBe(404);
    expect((await api("GET", `/courses/${id}/labs?status=nope`, { as: "teacher" })).status).toBe(422);
    // A lab approved later appears for the student (no stale cached list).
    expect((await api("POST", `/labs/${draft.id}/submit`, { as: "teacher" })).status).toBe(200);
    expect((await api("POST", `/labs/${draft.id}/approve`, { as: "admin" })).status).toBe(200);
    const after = (await api("GET", `/courses/${id}/labs`, { as: "student" })).body as Page<Lab>;
    expect(after.items.map((l) => l.id).sort()).toEqual([draft.id, approved.id].sort());
  });

  it("DELETE detaches: 204, then 404; other teacher 404, assigned student 403", async () => {
    const id = await ownedCourseWithStudent();
    const lab = await f.approvedLab("teacher");
    await f.attach(id, lab.id);
    const state = await snapshot(id);
    expect((await api("DELETE", `/courses/${id}/labs/${lab.id}`, { as: "teacher2" })).status).toBe(404);
    expect((await api("DELETE", `/courses/${id}/labs/${lab.id}`, { as: "student" })).status).toBe(403);
    expect(await snapshot(id)).toBe(state);
    const res = await api("DELETE", `/courses/${id}/labs/${lab.id}`, { as: "teacher" });
    expect(res.status).toBe(204);
    expect(await f.count("course_labs WHERE course_id = $id", { id })).toBe(0);
    expect(await f.row("labs", lab.id)).toBeDefined();
    expect((await api("DELETE", `/courses/${id}/labs/${lab.id}`, { as: "teacher" })).status).toBe(404);
    expect(((await api("GET", `/courses/${id}/labs`, { as: "student" })).body as Page<Lab>).total).toBe(0);
  });

  it("DELETE of a lab with an active instance in this course → 409, still attached", async () => {
    const id = await ownedCourseWithStudent();
    const lab = await f.approvedLab("teacher");
    await f.attach(id, lab.id);
    await f.instance(lab.id, id, ids.student, "running");
    const state = await snapshot(id);
    const res = await api("DELETE", `/courses/${id}/labs/${lab.id}`, { as: "teacher" });
    expect(res.status).toBe(409);
    expect(await snapshot(id)).toBe(state);
  });
});

describe("GET /courses: scoping, paging, sorting, filters", () => {
  /** teacher2 gets three courses with a shared unique prefix; student3 is assigned to two of them. */
  async function scoped() {
    const prefix = uniqueName("Scope").replace(/\s/g, "_");
    const a = await f.course("teacher2", `${prefix} A`);
    const b = await f.course("teacher2", `${prefix} B`);
    const c = await f.course("teacher2", `${prefix} C`);
    await f.assign(a, ids.student3);
    await f.assign(c, ids.student3);
    return { prefix, a, b, c };
  }
  const list = async (as: string, query: string) => {
    const res = await api("GET", `/courses${query}`, { as });
    expect(res.status).toBe(200);
    return res.body as Page<Course>;
  };
  const dbIds = async (where: string, bind: Record<string, unknown> = {}) => {
    const [rows] = await p.sequelize.query(`SELECT c.id FROM courses c ${where} ORDER BY c.id`, { bind });
    return (rows as { id: number }[]).map((r) => r.id);
  };
  const sorted = (xs: number[]) => [...xs].sort((x, y) => x - y);

  it("admin sees all, a teacher own, a student assigned — totals match the database", async () => {
    await scoped();
    await f.course("teacher");
    const admin = await list("admin", "?limit=100");
    expect(admin.total).toBe(await f.count("courses"));
    const teacher = await list("teacher2", "?limit=100");
    const teacherIds = await dbIds("WHERE owner_id = $me", { me: ids.teacher2 });
    expect(teacher.total).toBe(teacherIds.length);
    if (teacher.total <= 100) expect(sorted(teacher.items.map((c) => c.id))).toEqual(teacherIds);
    expect(teacher.items.every((c) => c.owner_id === ids.teacher2)).toBe(true);
    const student = await list("student3", "?limit=100");
    const studentIds = await dbIds("JOIN course_students cs ON cs.course_id = c.id WHERE cs.student_id = $me", {
      me: ids.student3,
    });
    expect(student.total).toBe(studentIds.length);
    expect(sorted(student.items.map((c) => c.id))).toEqual(studentIds);
  });

  it("q filters by name within the caller's scope", async () => {
    const { prefix, a, b, c } = await scoped();
    expect((await list("teacher2", `?q=${prefix}`)).total).toBe(3);
    expect((await list("admin", `?q=${prefix}`)).total).toBe(3);
    expect((await list("teacher", `?q=${prefix}`)).total).toBe(0);
    const mine = await list("student3", `?q=${prefix}`);
    expect(sorted(mine.items.map((x) => x.id))).toEqual(sorted([a, c]));
    expect(mine.items.map((x) => x.id)).not.toContain(b);
    expect((await list("student", `?q=${prefix}`)).total).toBe(0);
    // LIKE wildcards in q are literal.
    expect((await list("admin", `?q=${encodeURIComponent("%")}`)).total).toBe(0);
    expect((await list("admin", `?q=${encodeURIComponent(prefix.slice(0, 3) + "_")}`)).total).toBe(0);
  });

  it("offset, limit and sort page through a stable order, with the total of the whole set", async () => {
    const { prefix, a, b, c } = await scoped();
    const first = await list("teacher2", `?q=${prefix}&sort=name&limit=2`);
    expect(first).toMatchObject({ total: 3, offset: 0, limit: 2 });
    expect(first.items.map((x) => x.id)).toEqual([a, b]);
    const second = await list("teacher2", `?q=${prefix}&sort=name&limit=2&offset=2`);
    expect(second).toMatchObject({ total: 3, offset: 2, limit: 2 });
    expect(second.items.map((x) => x.id)).toEqual([c]);
    const past = await list("teacher2", `?q=${prefix}&sort=name&offset=10`);
    expect(past).toMatchObject({ items: [], total: 3, offset: 10, limit: 50 });
    expect((await list("teacher2", `?q=${prefix}&sort=-name`)).items.map((x) => x.id)).toEqual([c, b, a]);
    expect((await list("teacher2", `?q=${prefix}&sort=id`)).items.map((x) => x.id)).toEqual([a, b, c]);
    expect((await list("teacher2", `?q=${prefix}&sort=-id`)).items.map((x) => x.id)).toEqual([c, b, a]);
    // Default: newest first.
    const byDefault = await list("teacher2", `?q=${prefix}`);
    expect(byDefault.items.map((x) => x.id)).toEqual([c, b, a]);
    expect(byDefault).toMatchObject({ offset: 0, limit: 50 });
  });

  it("owner_id filters for an admin; for a teacher it only narrows their own scope", async () => {
    await scoped();
    const byOwner = await list("admin", `?owner_id=${ids.teacher2}&limit=100`);
    expect(byOwner.total).toBe(await f.count("courses WHERE owner_id = $o", { o: ids.teacher2 }));
    expect(byOwner.items.every((c) => c.owner_id === ids.teacher2)).toBe(true);
    expect((await list("teacher", `?owner_id=${ids.teacher2}`)).total).toBe(0);
    const assignedOfTeacher = await f.count(
      "courses c JOIN course_students cs ON cs.course_id = c.id WHERE cs.student_id = $s AND c.owner_id = $o",
      {
        s: ids.student3,
        o: ids.teacher,
      },
    );
    const asStudent = await list("student3", `?owner_id=${ids.teacher}&limit=100`);
    expect(asStudent.total).toBe(assignedOfTeacher);
    expect(asStudent.items.every((c) => c.owner_id === ids.teacher)).toBe(true);
    // A student never sees courses beyond their assignments through the filter.
    expect((await list("student3", `?owner_id=${ids.teacher2}&limit=100`)).total).toBe(
      await f.count(
        "courses c JOIN course_students cs ON cs.course_id = c.id WHERE cs.student_id = $s AND c.owner_id = $o",
        { s: ids.student3, o: ids.teacher2 },
      ),
    );
  });

  it("the list envelope has exactly items, total, offset, limit", async () => {
    const page = await list("teacher", "");
    expect(Object.keys(page).sort()).toEqual(["items", "limit", "offset", "total"]);
    for (const c of page.items) expect(Object.keys(c).sort()).toEqual(COURSE_KEYS);
  });
});
