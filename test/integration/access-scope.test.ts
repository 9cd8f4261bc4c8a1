/**
 * Each visibility rule is written once as a decision (decideCourse, decideLab, decideLabInstance) and once
 * as the SQL scope a list uses (courseScopeSql, labScopeSql, labInstanceScopeSql). On generated rows, in
 * PostgreSQL (a schema of its own in a throwaway database), the two
 * must pick the same rows for every kind of caller.
 */
import { Client } from "pg";
import { createTestDatabase, type TestDatabase } from "../support/platform";
import {
  courseScopeSql,
  decideCourse,
  decideLab,
  decideLabInstance,
  labInstanceScopeSql,
  labScopeSql,
  type ScopeSql,
} from "../../lib/access.rules";
import type { Principal } from "../../lib/principal";
import { ifAssigned } from "../support/cleanup";

interface Course {
  id: number;
  owner_id: number;
}

let testDb: TestDatabase;
let db: Client;
const courses: Course[] = [];
const assignments: { course_id: number; student_id: number }[] = [];
const instances: { id: number; course_id: number; student_id: number }[] = [];
const labs: { id: number; created_by: number; status: string }[] = [];
const attachments: { course_id: number; lab_id: number }[] = [];
const LAB_STATUSES = ["draft", "pending_approval", "approved", "rejected"];
const TEACHERS = [1, 2, 3];
const STUDENTS = [11, 12, 13, 14];

/** A fixed pseudo-random sequence: the same rows on every run. */
function seeded(seed: number): () => number {
  let x = seed;
  return () => {
    x = (x * 1103515245 + 12345) % 2 ** 31;
    return x / 2 ** 31;
  };
}

beforeAll(async () => {
  testDb = await createTestDatabase();
  db = new Client({ connectionString: testDb.url });
  await db.connect();
  // The rule's tables only, in a schema of their own: the generated rows need no users or names.
  await db.query(`
    CREATE SCHEMA scope_test;
    SET search_path = scope_test;
    CREATE TABLE courses (id int PRIMARY KEY, owner_id int NOT NULL);
    CREATE TABLE course_students (course_id int NOT NULL, student_id int NOT NULL, PRIMARY KEY (course_id, student_id));
    CREATE TABLE lab_instances (id int PRIMARY KEY, course_id int NOT NULL, student_id int NOT NULL);
    CREATE TABLE labs (id int PRIMARY KEY, created_by int NOT NULL, status text NOT NULL);
    CREATE TABLE course_labs (course_id int NOT NULL, lab_id int NOT NULL, PRIMARY KEY (course_id, lab_id));
  `);
  const random = seeded(42);
  for (let id = 1; id <= 30; id++) {
    const course = { id, owner_id: TEACHERS[Math.floor(random() * TEACHERS.length)] };
    courses.push(course);
    await db.query("INSERT INTO courses VALUES ($1, $2)", [course.id, course.owner_id]);
    for (const student of STUDENTS) {
      if (random() < 0.3) {
        assignments.push({ course_id: id, student_id: student });
        await db.query("INSERT INTO course_students VALUES ($1, $2)", [id, student]);
        const instance = { id: instances.length + 1, course_id: id, student_id: student };
        instances.push(instance);
        await db.query("INSERT INTO lab_instances VALUES ($1, $2, $3)", [instance.id, id, student]);
      }
    }
  }
  for (let id = 1; id <= 40; id++) {
    const lab = {
      id,
      created_by: TEACHERS[Math.floor(random() * TEACHERS.length)],
      status: LAB_STATUSES[Math.floor(random() * LAB_STATUSES.length)],
    };
    labs.push(lab);
    await db.query("INSERT INTO labs VALUES ($1, $2, $3)", [lab.id, lab.created_by, lab.status]);
    for (const course of courses) {
      if (random() < 0.05) {
        attachments.push({ course_id: course.id, lab_id: id });
        await db.query("INSERT INTO course_labs VALUES ($1, $2)", [course.id, id]);
      }
    }
  }
}, 60_000);

afterAll(async () => {
  await ifAssigned(db)?.end();
  await ifAssigned(testDb)?.drop();
});

/** pg binds $1, $2…: the scope's named binds ($scope_me) in order. */
async function scoped(scope: ScopeSql, from: string): Promise<number[]> {
  const names = Object.keys(scope.bind);
  let where = scope.where ?? "TRUE";
  names.forEach((name, i) => (where = where.replaceAll(`$${name}`, `$${i + 1}`)));
  const values = names.map((n) => scope.bind[n]);
  const result = await db.query<{ id: number }>(`SELECT id FROM ${from} WHERE ${where} ORDER BY id`, values);
  return result.rows.map((r) => r.id);
}

function decidedInstances(p: Principal): number[] {
  const ownerOf = new Map(courses.map((c) => [c.id, c.owner_id]));
  return instances
    .filter((i) => {
      const facts = { student_id: i.student_id, course_owner_id: ownerOf.get(i.course_id)! };
      return decideLabInstance(p, facts, "view") === "allow";
    })
    .map((i) => i.id);
}

function decidedLabs(p: Principal): number[] {
  const reaches = (labId: number): boolean =>
    p.kind === "user" &&
    attachments.some((a) => {
      if (a.lab_id !== labId) return false;
      if (p.role === "teacher") return courses.some((c) => c.id === a.course_id && c.owner_id === p.id);
      return assignments.some((x) => x.course_id === a.course_id && x.student_id === p.id);
    });
  return labs
    .filter((l) => {
      const facts = { created_by: l.created_by, status: l.status, callerReachesViaCourse: reaches(l.id) };
      return decideLab(p, facts, "view") === "allow";
    })
    .map((l) => l.id);
}

function decided(p: Principal): number[] {
  return courses
    .filter((c) => {
      const callerAssigned =
        p.kind === "user" && assignments.some((a) => a.course_id === c.id && a.student_id === p.id);
      return decideCourse(p, { owner_id: c.owner_id, callerAssigned }, "view") === "allow";
    })
    .map((c) => c.id);
}

const principals: Principal[] = [
  { kind: "system", reason: "test" },
  { kind: "user", id: 100, role: "admin" },
  ...TEACHERS.map((id): Principal => ({ kind: "user", id, role: "teacher" })),
  ...STUDENTS.map((id): Principal => ({ kind: "user", id, role: "student" })),
  // Ids that own or are assigned to nothing.
  { kind: "user", id: 99, role: "teacher" },
  { kind: "user", id: 98, role: "student" },
];

it("the generated rows give every kind of caller something to see and something hidden", () => {
  for (const p of principals.filter((x) => x.kind === "user" && x.role !== "admin" && x.id < 50)) {
    const seen = decided(p);
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.length).toBeLessThan(courses.length);
    const seenLabs = decidedLabs(p);
    expect(seenLabs.length).toBeGreaterThan(0);
    expect(seenLabs.length).toBeLessThan(labs.length);
    const seenInstances = decidedInstances(p);
    expect(seenInstances.length).toBeGreaterThan(0);
    expect(seenInstances.length).toBeLessThan(instances.length);
  }
});

it.each(principals.map((p) => [p.kind === "system" ? "system" : `${p.role} ${p.id}`, p] as const))(
  "courseScopeSql picks exactly the courses decideCourse lets %s view",
  async (_name, p) => {
    expect(await scoped(courseScopeSql(p), "courses c")).toEqual(decided(p));
  },
);

it.each(principals.map((p) => [p.kind === "system" ? "system" : `${p.role} ${p.id}`, p] as const))(
  "labInstanceScopeSql picks exactly the instances decideLabInstance lets %s view",
  async (_name, p) => {
    expect(await scoped(labInstanceScopeSql(p), "lab_instances i")).toEqual(decidedInstances(p));
  },
);

it.each(principals.map((p) => [p.kind === "system" ? "system" : `${p.role} ${p.id}`, p] as const))(
  "labScopeSql picks exactly the labs decideLab lets %s view",
  async (_name, p) => {
    expect(await scoped(labScopeSql(p), "labs l")).toEqual(decidedLabs(p));
  },
);
