/**
 * Read-modify-write races (issue 8 §1): every write path that decides from a row it read writes only if that
 * row is still what it read (a conditional UPDATE or a row lock in one transaction); the loser answers 409.
 *
 * Two kinds of proof, through real HTTP to a real node on a real PostgreSQL:
 * - storms: N ≥ 10 parallel conflicting requests, repeated over several rounds, then the invariant
 *   (every answer well-formed, 2xx/404/409 and never 5xx; the rows as the rules allow);
 * - interleavings: the test holds the row lock, lets the request read, waits until its write is queued
 *   behind the lock (pg_locks), commits a concurrent change, and checks the request did not overwrite it.
 *   This is the exact lost-update window, made deterministic instead of hoped for.
 */
import { Client } from "pg";
import { startTestPlatform, type ApiResponse, type TestPlatform } from "../support/platform";
import { systemPrincipal } from "../../lib/principal";
import { checkedApi, fixtures, RESOURCES, uniqueName, type Api, type Fixtures, type Ids } from "../support/http-api";
import { ifAssigned } from "../support/cleanup";

let p: TestPlatform;
let api: Api;
let f: Fixtures;
let ids: Ids;

const SERVICES = "api-gateway,auth,courses,labs,lab-instances,access";
/** Parallel requests per storm. */
const N = 12;
/** Storm rounds: the old labs code lost the race in most rounds; several make the proof reliable. */
const ROUNDS = 6;

beforeAll(async () => {
  p = await startTestPlatform({
    SERVICES,
    MAX_ACTIVE_INSTANCES_PER_STUDENT: "3",
    LAB_SWEEP_INTERVAL_MS: "3600000",
    // Room for every request of a storm to hold a connection at once: the races are between statements.
    DATABASE_POOL_MAX: String(2 * N),
  });
  api = checkedApi(p);
  f = await fixtures(p, api);
  ids = f.ids;
});
afterAll(async () => {
  await ifAssigned(p)?.stop();
});

/** A teacher's course with three assigned students and an approved lab attached. */
async function classWithLab() {
  const course = await f.course("teacher");
  await f.assign(course, ids.student, ids.student2, ids.student3);
  const lab = await f.approvedLab("teacher");
  await f.attach(course, lab.id);
  return { course, lab };
}

interface Lab {
  id: number;
  name: string;
  docker_image: string;
  resources: { cpu: string; memory: string; storage: string };
  network_isolated: boolean;
  status: string;
  approved_by: number | null;
}

const IMAGE_A = "registry.autolabs.local/labs/python:3.12";
const IMAGE_B = "registry.autolabs.local/labs/unreviewed:6.6.6";

/** Answers of a storm: each well-formed (checkedApi), none a 5xx, each one of `allowed`. */
function expectStatuses(responses: ApiResponse[], allowed: number[]): void {
  const seen = responses.map((r) => r.status);
  for (const s of seen) expect(allowed).toContain(s);
}
const count = (responses: ApiResponse[], status: number) => responses.filter((r) => r.status === status).length;

async function labRow(id: number): Promise<Lab & { updated_at: Date }> {
  return (await f.row("labs", id)) as unknown as Lab & { updated_at: Date };
}

/**
 * Runs `request` while the test holds `FOR UPDATE` on `table` row `id`: once the request waits for that lock
 * (it has read and wants to write), `meanwhile` runs in the locking transaction and commits. The request then
 * writes over a row that changed after it read it.
 */
async function interleave(
  table: "labs" | "courses" | "access_requests",
  id: number,
  request: () => Promise<ApiResponse>,
  meanwhile: (sql: Client) => Promise<unknown>,
): Promise<ApiResponse> {
  return interleaveOn(`SELECT 1 FROM ${table} WHERE id = $1 FOR UPDATE`, [id], request, meanwhile);
}

/** interleave() with the row(s) that `lockSql` locks. */
async function interleaveOn(
  lockSql: string,
  params: unknown[],
  request: () => Promise<ApiResponse>,
  meanwhile: (sql: Client) => Promise<unknown>,
): Promise<ApiResponse> {
  const sql = new Client({ connectionString: p.db.url });
  await sql.connect();
  try {
    await sql.query("BEGIN");
    await sql.query(lockSql, params);
    const pending = request();
    // The request blocked on our row lock: it read before and now writes (or locks to write).
    let waiting = false;
    for (let i = 0; i < 2000 && !waiting; i++) {
      const r = await sql.query(
        `SELECT count(*)::int AS n FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
          WHERE NOT l.granted AND a.datname = current_database() AND a.pid <> pg_backend_pid()`,
      );
      waiting = r.rows[0].n > 0;
      if (!waiting) await new Promise((resolve) => setTimeout(resolve, 10));
    }
    if (!waiting) {
      await sql.query("ROLLBACK");
      throw new Error(`the request never waited for the lock of ${lockSql} ${JSON.stringify(params)}`);
    }
    await meanwhile(sql);
    await sql.query("COMMIT");
    return await pending;
  } finally {
    await sql.end();
  }
}

const AS_SYSTEM = { meta: { user: systemPrincipal("test: races") } };

/** Ends the matching instances directly (a clean slate for the per-student cap between rounds). */
async function endInstances(where: string, bind: Record<string, unknown>): Promise<void> {
  await p.sequelize.query(
    `UPDATE lab_instances SET status = 'stopped' WHERE ${where} AND status IN ('pending', 'running', 'stopping')`,
    { bind },
  );
}

async function requestRow(id: number): Promise<unknown> {
  const [rows] = await p.sequelize.query("SELECT status FROM access_requests WHERE id = $id", { bind: { id } });
  return rows[0];
}

/* ───────────────────────────── labs ───────────────────────────── */

describe("labs", () => {
  async function approvedLab(): Promise<Lab> {
    return (await f.approvedLab("teacher", { docker_image: IMAGE_A })) as unknown as Lab;
  }

  const changes = [
    { field: "docker_image", body: { docker_image: IMAGE_B } },
    { field: "resources", body: { resources: { ...RESOURCES, memory: "8Gi" } } },
    { field: "network_isolated", body: { network_isolated: true } },
  ] as const;

  it("PUT storm: one change of what runs among name-only edits never leaves an unreviewed approved lab", async () => {
    for (let round = 0; round < ROUNDS; round++) {
      const lab = await approvedLab();
      const change = changes[round % changes.length];
      const responses = await Promise.all(
        Array.from({ length: N }, (_, i) =>
          api("PUT", `/labs/${lab.id}`, {
            as: "teacher",
            body: i === N >> 1 ? change.body : { name: uniqueName(`Edit ${i}`) },
          }),
        ),
      );
      expectStatuses(responses, [200, 409]);
      // Name-only edits change nothing the approval depends on: the one change of what runs always lands.
      const changing = responses[N >> 1];
      expect(changing.status).toBe(200);
      expect((changing.body as Lab).status).toBe("pending_approval");
      const now = await labRow(lab.id);
      // The invariant: approved means exactly what the admin approved.
      expect({ round, field: change.field, status: now.status, approved_by: now.approved_by }).toEqual({
        round,
        field: change.field,
        status: "pending_approval",
        approved_by: null,
      });
      if (now.status === "approved") {
        expect([now.docker_image, now.resources, now.network_isolated]).toEqual([IMAGE_A, RESOURCES, false]);
      }
    }
  });

  it("PUT: a name edit that read an approved lab does not carry approval over an image changed meanwhile", async () => {
    const lab = await approvedLab();
    const res = await interleave(
      "labs",
      lab.id,
      () => api("PUT", `/labs/${lab.id}`, { as: "teacher", body: { name: "renamed" } }),
      (sql) =>
        sql.query("UPDATE labs SET docker_image = $2, status = 'pending_approval', approved_by = NULL WHERE id = $1", [
          lab.id,
          IMAGE_B,
        ]),
    );
    expect(res.status).toBe(409);
    expect(res.body).toEqual({ detail: expect.any(String) });
    const now = await labRow(lab.id);
    expect([now.status, now.approved_by, now.docker_image, now.name]).toEqual([
      "pending_approval",
      null,
      IMAGE_B,
      lab.name,
    ]);
  });

  it("approve: an image changed between the admin's read and the write is not approved: 409", async () => {
    const lab = (await f.lab("teacher", { docker_image: IMAGE_A })) as unknown as Lab;
    expect((await api("POST", `/labs/${lab.id}/submit`, { as: "teacher" })).status).toBe(200);
    const res = await interleave(
      "labs",
      lab.id,
      () => api("POST", `/labs/${lab.id}/approve`, { as: "admin" }),
      // What a teacher's PUT of a pending lab does: it stays pending with the new image.
      (sql) => sql.query("UPDATE labs SET docker_image = $2 WHERE id = $1", [lab.id, IMAGE_B]),
    );
    expect(res.status).toBe(409);
    const now = await labRow(lab.id);
    expect([now.status, now.approved_by, now.docker_image]).toEqual(["pending_approval", null, IMAGE_B]);
  });

  it("DELETE storm: one deletion answers 204, the others 404", async () => {
    for (let round = 0; round < ROUNDS; round++) {
      const lab = await f.lab("teacher");
      const responses = await Promise.all(
        Array.from({ length: N }, () => api("DELETE", `/labs/${lab.id}`, { as: "teacher" })),
      );
      expectStatuses(responses, [204, 404]);
      expect(count(responses, 204)).toBe(1);
    }
  });

  it("approve/reject storm: exactly one decision wins, the others are 409", async () => {
    for (let round = 0; round < ROUNDS; round++) {
      const lab = (await f.lab("teacher")) as unknown as Lab;
      expect((await api("POST", `/labs/${lab.id}/submit`, { as: "teacher" })).status).toBe(200);
      const responses = await Promise.all(
        Array.from({ length: N }, (_, i) =>
          i % 2 === 0
            ? api("POST", `/labs/${lab.id}/approve`, { as: "admin" })
            : api("POST", `/labs/${lab.id}/reject`, { as: "admin", body: { reason: `no ${i}` } }),
        ),
      );
      expectStatuses(responses, [200, 409]);
      expect(count(responses, 200)).toBe(1);
      const winner = responses.find((r) => r.status === 200)!.body as Lab;
      const now = await labRow(lab.id);
      expect([now.status, now.approved_by]).toEqual([winner.status, winner.approved_by]);
    }
  });
});

/* ───────────────────────────── courses ───────────────────────────── */

describe("courses", () => {
  const courseRow = async (id: number) =>
    (await f.row("courses", id)) as { name: string; owner_id: number } | undefined;
  const start = (labId: number, courseId: number, as: string) =>
    api("POST", "/lab-instances", { as, body: { lab_id: labId, course_id: courseId } });
  const activeInstances = (where: string, bind: Record<string, unknown>) =>
    f.count(`lab_instances WHERE ${where} AND status IN ('pending', 'running', 'stopping')`, bind);

  it("PUT storm: a hand-over among the old owner's edits; every answer 200/404/409, the hand-over lands", async () => {
    for (let round = 0; round < ROUNDS; round++) {
      const id = await f.course("teacher");
      const responses = await Promise.all(
        Array.from({ length: N }, (_, i) =>
          i === N >> 1
            ? api("PUT", `/courses/${id}`, { as: "admin", body: { owner_id: ids.teacher2 } })
            : api("PUT", `/courses/${id}`, { as: "teacher", body: { name: uniqueName(`Edit ${i}`) } }),
        ),
      );
      expectStatuses(responses, [200, 404, 409]);
      expect(responses[N >> 1].status).toBe(200);
      expect((await courseRow(id))?.owner_id).toBe(ids.teacher2);
    }
  });

  it("PUT: an edit by the owner the access check saw does not land after the course changed hands: 409", async () => {
    const id = await f.course("teacher", "Before");
    const res = await interleave(
      "courses",
      id,
      () => api("PUT", `/courses/${id}`, { as: "teacher", body: { name: "After" } }),
      (sql) => sql.query("UPDATE courses SET owner_id = $2 WHERE id = $1", [id, ids.teacher2]),
    );
    expect(res.status).toBe(409);
    expect(await courseRow(id)).toMatchObject({ name: "Before", owner_id: ids.teacher2 });
  });

  it("DELETE storm: one deletion answers 204, the others 404", async () => {
    for (let round = 0; round < ROUNDS; round++) {
      const id = await f.course("teacher");
      const responses = await Promise.all(
        Array.from({ length: N }, () => api("DELETE", `/courses/${id}`, { as: "teacher" })),
      );
      expectStatuses(responses, [204, 404]);
      expect(count(responses, 204)).toBe(1);
    }
  });

  it("assign storm with a deletion: overlapping assignments in any order and a DELETE never answer 500", async () => {
    const students = [ids.student, ids.student2, ids.student3];
    for (let round = 0; round < ROUNDS; round++) {
      const id = await f.course("teacher");
      const responses = await Promise.all(
        Array.from({ length: N }, (_, i) =>
          i === N - 2
            ? api("DELETE", `/courses/${id}`, { as: "teacher" })
            : api("POST", `/courses/${id}/students`, {
                as: "teacher",
                // Rotated: the same rows inserted in different orders.
                body: { student_ids: [...students.slice(i % 3), ...students.slice(0, i % 3)] },
              }),
        ),
      );
      expectStatuses(responses, [200, 204, 404]);
      expect(responses[N - 2].status).toBe(204);
      expect(await courseRow(id)).toBeUndefined();
      expect(await f.count("course_students WHERE course_id = $id", { id })).toBe(0);
    }
  });

  it("attach storm with the lab's deletion: attached to none or the lab exists, never a 500", async () => {
    for (let round = 0; round < ROUNDS; round++) {
      const lab = await f.approvedLab("teacher");
      const courses = await Promise.all(Array.from({ length: N - 1 }, () => f.course("teacher")));
      const responses = await Promise.all([
        ...courses.map((c) => api("POST", `/courses/${c}/labs`, { as: "teacher", body: { lab_id: lab.id } })),
        api("DELETE", `/labs/${lab.id}`, { as: "teacher" }),
      ]);
      expectStatuses(responses, [201, 204, 404]);
      expect(responses[N - 1].status).toBe(204);
      expect(await f.count("course_labs WHERE lab_id = $lab", { lab: lab.id })).toBe(0);
    }
  });

  it("attach: another teacher's lab that left the catalogue between check and insert is not attached", async () => {
    const lab = await f.approvedLab("teacher");
    const course = await f.course("teacher2");
    const res = await interleave(
      "labs",
      lab.id,
      () => api("POST", `/courses/${course}/labs`, { as: "teacher2", body: { lab_id: lab.id } }),
      // What the author's image edit of an approved lab does.
      (sql) => sql.query("UPDATE labs SET status = 'pending_approval', approved_by = NULL WHERE id = $1", [lab.id]),
    );
    expect(res.status).toBe(404);
    expect(await f.count("course_labs WHERE course_id = $course", { course })).toBe(0);
  });

  it("detach storm with starts: a detached lab has no active instance in the course, a kept one may", async () => {
    const students = ["student", "student2", "student3"];
    for (let round = 0; round < ROUNDS; round++) {
      const { course, lab } = await classWithLab();
      const responses = await Promise.all(
        Array.from({ length: N }, (_, i) =>
          i === N >> 1
            ? api("DELETE", `/courses/${course}/labs/${lab.id}`, { as: "teacher" })
            : start(lab.id, course, students[i % 3]),
        ),
      );
      expectStatuses(responses, [202, 204, 404, 409]);
      const detached = responses[N >> 1].status === 204;
      const active = await activeInstances("course_id = $course AND lab_id = $lab", { course, lab: lab.id });
      expect({ round, detached, linked: await f.count("course_labs WHERE course_id = $course", { course }) }).toEqual({
        round,
        detached,
        linked: detached ? 0 : 1,
      });
      if (detached) expect(active).toBe(0);
      else expect(active).toBeGreaterThan(0);
      await endInstances("course_id = $course", { course });
    }
  });

  it("detach: an instance started between the active-instance check and the delete keeps the link", async () => {
    const course = await f.course("teacher");
    const lab = await f.approvedLab("teacher");
    await f.attach(course, lab.id);
    const res = await interleaveOn(
      "SELECT 1 FROM course_labs WHERE course_id = $1 AND lab_id = $2 FOR UPDATE",
      [course, lab.id],
      () => api("DELETE", `/courses/${course}/labs/${lab.id}`, { as: "teacher" }),
      // A start committing in the window (the test's lock stands in for the start's FOR SHARE on the link).
      (sql) =>
        sql.query("INSERT INTO lab_instances (lab_id, course_id, student_id, status) VALUES ($1, $2, $3, 'pending')", [
          lab.id,
          course,
          ids.student,
        ]),
    );
    expect(res.status).toBe(409);
    expect(await f.count("course_labs WHERE course_id = $course AND lab_id = $lab", { course, lab: lab.id })).toBe(1);
    await endInstances("course_id = $course", { course });
  });

  it("course and lab deletion storms with starts: never a 500; a deleted course or lab has no instance", async () => {
    const students = ["student", "student2", "student3"];
    for (let round = 0; round < ROUNDS; round++) {
      const { course, lab } = await classWithLab();
      const deleteCourse = round % 2 === 0;
      const responses = await Promise.all(
        Array.from({ length: N }, (_, i) =>
          i === N >> 1
            ? api("DELETE", deleteCourse ? `/courses/${course}` : `/labs/${lab.id}`, { as: "teacher" })
            : start(lab.id, course, students[i % 3]),
        ),
      );
      expectStatuses(responses, [202, 204, 404, 409]);
      const deleted = responses[N >> 1].status === 204;
      const instances = await f.count("lab_instances WHERE course_id = $course AND lab_id = $lab", {
        course,
        lab: lab.id,
      });
      if (deleted) expect(instances).toBe(0);
      else expect(instances).toBeGreaterThan(0);
      await endInstances("course_id = $course", { course });
    }
  });
});

/* ───────────────────────────── access requests ───────────────────────────── */

describe("access requests", () => {
  interface AccessRequest {
    id: number;
    status: string;
  }
  const requestAs = async (course: number, as: string): Promise<number> => {
    const res = await api("POST", "/access-requests", { as, body: { course_id: course } });
    expect(res.status).toBe(201);
    return (res.body as AccessRequest).id;
  };
  const assigned = (course: number, student: number) =>
    f.count("course_students WHERE course_id = $course AND student_id = $student", { course, student });

  it("decision storm: approve, reject and cancel at once; exactly one wins and the assignment matches it", async () => {
    for (let round = 0; round < ROUNDS; round++) {
      const course = await f.course("teacher");
      const id = await requestAs(course, "student");
      const responses = await Promise.all(
        Array.from({ length: N }, (_, i) => {
          const action = ["approve", "reject", "cancel"][i % 3];
          const as = action === "cancel" ? "student" : i % 2 ? "admin" : "teacher";
          return api("POST", `/access-requests/${id}/${action}`, { as });
        }),
      );
      expectStatuses(responses, [200, 409]);
      expect(count(responses, 200)).toBe(1);
      const winner = (responses.find((r) => r.status === 200)!.body as AccessRequest).status;
      const row = await requestRow(id);
      expect(row).toEqual({ status: winner });
      expect(await assigned(course, ids.student)).toBe(winner === "approved" ? 1 : 0);
    }
  });

  it("approvals with the course's deletion: never a 500, nothing assigned to a deleted course", async () => {
    for (let round = 0; round < ROUNDS; round++) {
      const course = await f.course("teacher");
      const requests: number[] = [];
      for (const as of ["student", "student2", "student3"]) requests.push(await requestAs(course, as));
      const responses = await Promise.all(
        Array.from({ length: N }, (_, i) =>
          i === N >> 1
            ? api("DELETE", `/courses/${course}`, { as: "teacher" })
            : api("POST", `/access-requests/${requests[i % 3]}/approve`, { as: "teacher" }),
        ),
      );
      expectStatuses(responses, [200, 204, 404, 409]);
      expect(responses[N >> 1].status).toBe(204);
      expect(await f.count("course_students WHERE course_id = $course", { course })).toBe(0);
      // Requests outlive their course as the students' history (migration 0003).
      expect(await f.count("access_requests WHERE course_id = $course", { course })).toBe(3);
    }
  });

  it("approve: a teacher whose course changed hands between read and write decides nothing: 409", async () => {
    const course = await f.course("teacher");
    const id = await requestAs(course, "student");
    const res = await interleave(
      "courses",
      course,
      () => api("POST", `/access-requests/${id}/approve`, { as: "teacher" }),
      (sql) => sql.query("UPDATE courses SET owner_id = $2 WHERE id = $1", [course, ids.teacher2]),
    );
    expect(res.status).toBe(409);
    const row = await requestRow(id);
    expect(row).toEqual({ status: "pending" });
    expect(await assigned(course, ids.student)).toBe(0);
  });
});

/* ───────────────────────────── lab instances ───────────────────────────── */

describe("lab instances", () => {
  interface Instance {
    id: number;
    status: string;
  }
  let course: number;
  const labs: number[] = [];

  beforeAll(async () => {
    course = await f.course("teacher");
    await f.assign(course, ids.student);
    for (let i = 0; i < 4; i++) {
      const lab = await f.approvedLab("teacher");
      await f.attach(course, lab.id);
      labs.push(lab.id);
    }
  });
  beforeEach(async () => {
    await endInstances("true", {});
  });

  const start = (lab: number) =>
    api("POST", "/lab-instances", { as: "student", body: { lab_id: lab, course_id: course } });
  const tasks = (instance: number, name: string) =>
    f.count("task_outbox WHERE lab_instance_id = $instance AND task_name = $name", { instance, name });

  it("start storm: the per-lab and per-student caps hold under parallel starts", async () => {
    for (let round = 0; round < ROUNDS; round++) {
      const responses = await Promise.all(Array.from({ length: N }, (_, i) => start(labs[i % labs.length])));
      expectStatuses(responses, [202, 409]);
      expect(count(responses, 202)).toBe(3);
      const active = await p.sequelize.query(
        "SELECT lab_id FROM lab_instances WHERE student_id = $me AND status IN ('pending', 'running', 'stopping')",
        { bind: { me: ids.student } },
      );
      const labIds = (active[0] as { lab_id: number }[]).map((r) => r.lab_id);
      expect(labIds.length).toBe(3);
      expect(new Set(labIds).size).toBe(3);
      await endInstances("student_id = $me", { me: ids.student });
    }
  });

  it("stop storm with worker results: one stop, one stop_lab task, a status the lifecycle allows", async () => {
    for (let round = 0; round < ROUNDS; round++) {
      const started = await start(labs[0]);
      expect(started.status).toBe(202);
      const inst = started.body as Instance & { celery_task_id: string };
      const result = {
        task_id: inst.celery_task_id,
        task_name: "start_lab",
        lab_instance_id: inst.id,
        status: "SUCCESS",
        result: {
          status: "running",
          k8s_pod_name: `pod-${inst.id}`,
          connection_url: `https://labs.example.test/i/${inst.id}`,
        },
      };
      const [answers, results] = await Promise.all([
        Promise.all(
          Array.from({ length: N }, (_, i) =>
            api("POST", `/lab-instances/${inst.id}/stop`, { as: i % 2 ? "student" : "admin" }),
          ),
        ),
        Promise.all(Array.from({ length: 3 }, () => p.broker.call("lab-instances.applyTaskResult", result, AS_SYSTEM))),
      ]);
      expectStatuses(answers, [202]);
      expect(results.length).toBe(3);
      const row = (await f.count("lab_instances WHERE id = $id AND status = 'stopping'", { id: inst.id })) === 1;
      expect(row).toBe(true);
      expect(await tasks(inst.id, "stop_lab")).toBe(1);
      await endInstances("id = $id", { id: inst.id });
    }
  });

  it("sweeps racing stops: each expired instance ends once, with one task", async () => {
    for (let round = 0; round < ROUNDS; round++) {
      const started = await Promise.all(labs.slice(0, 3).map((lab) => start(lab)));
      const instances = started.map((r) => (r.body as Instance).id);
      await p.sequelize.query(
        `UPDATE lab_instances SET status = 'running', started_at = now(), expires_at = now() - interval '1 second'
          WHERE id = ANY($ids)`,
        { bind: { ids: instances } },
      );
      const responses = await Promise.all([
        ...Array.from({ length: N }, (_, i) =>
          api("POST", `/lab-instances/${instances[i % 3]}/stop`, { as: "student" }),
        ),
        ...Array.from({ length: 3 }, () => p.broker.call("lab-instances.sweep", {}, AS_SYSTEM)),
      ]);
      expectStatuses(responses.slice(0, N) as ApiResponse[], [202, 409]);
      for (const id of instances) {
        const [rows] = await p.sequelize.query("SELECT status FROM lab_instances WHERE id = $id", { bind: { id } });
        const status = (rows as { status: string }[])[0].status;
        expect(["stopping", "expired"]).toContain(status);
        expect(await tasks(id, status === "stopping" ? "stop_lab" : "cleanup_lab")).toBe(1);
        expect(await tasks(id, status === "stopping" ? "cleanup_lab" : "stop_lab")).toBe(0);
      }
      await endInstances("id = ANY($ids)", { ids: instances });
    }
  });
});
