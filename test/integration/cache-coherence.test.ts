/**
 * The caching strategy, against the real Redis (its own db, a unique NAMESPACE per run) and RabbitMQ:
 * - a cached answer for one caller is never served to another (every caller-dependent key holds the caller);
 * - every write is visible on the very next read by every user, on the node that wrote and on another node,
 *   with the shared Redis cacher and with node-local Memory caches (the write answers only after every
 *   node dropped what it changed);
 * - "remove a student → their very next request is refused", for the course and for starting its lab;
 * - a reader that computed its answer before a write and stores it after the write's invalidation does not
 *   make that answer stick (the read-populate race);
 * - the hit ratio of a short mixed run (printed for the closing note).
 */
import type { PermissionAnswer, PermissionQuery } from "../../lib/permission.rules";
import type { Role } from "../../lib/principal";
import { holdQuery, startCacheCluster, type CacheCluster } from "../support/cache-nodes";
import { ifAssigned } from "../support/cleanup";

const ROLE: Record<string, Role> = {
  admin: "admin",
  teacher: "teacher",
  teacher2: "teacher",
  student: "student",
  student2: "student",
  student3: "student",
};

interface World {
  c1: number;
  c2: number;
  /** Approved, attached to c1. */
  labA: number;
  /** Submitted (pending approval), attached to c1. */
  labB: number;
}

type Course = { id: number; name: string; owner_id: number };
type Page<T> = { items: T[]; total: number };

/** access.check as `account` would ask it through the mixin (for its own rights only). */
async function check(c: CacheCluster, node: number, account: string, q: PermissionQuery): Promise<PermissionAnswer> {
  const user = { kind: "user", id: await c.userId(account), role: ROLE[account] };
  return c.nodes[node].broker.call<PermissionAnswer, PermissionQuery>("access.check", q, { meta: { user } });
}

const LAB = (name: string) => ({
  name,
  docker_image: `registry.example.com/labs/${name.toLowerCase().replace(/\W+/g, "-")}:1.0`,
  resources: { cpu: "500m", memory: "512Mi", storage: "1Gi" },
});

/** Two courses (teacher's c1 with student, teacher2's c2 with student2) and two labs in c1. */
async function seed(c: CacheCluster): Promise<World> {
  for (const a of Object.keys(ROLE)) await c.userId(a);
  const ok = (status: number, expected: number, what: string) => {
    if (status !== expected) throw new Error(`seed: ${what} answered ${status}`);
  };
  const c1 = await c.api<Course>(0, "POST", "/courses", "teacher", { name: "Operating systems" });
  ok(c1.status, 201, "course 1");
  const c2 = await c.api<Course>(0, "POST", "/courses", "teacher2", { name: "Compilers" });
  ok(c2.status, 201, "course 2");
  ok(
    (await c.api(0, "POST", `/courses/${c1.body.id}/students`, "teacher", { student_ids: [await c.userId("student")] }))
      .status,
    200,
    "assign",
  );
  ok(
    (
      await c.api(0, "POST", `/courses/${c2.body.id}/students`, "teacher2", {
        student_ids: [await c.userId("student2")],
      })
    ).status,
    200,
    "assign 2",
  );
  const labA = await c.api<{ id: number }>(0, "POST", "/labs", "teacher", LAB("Scheduler"));
  const labB = await c.api<{ id: number }>(0, "POST", "/labs", "teacher", LAB("Page tables"));
  for (const lab of [labA.body.id, labB.body.id]) {
    ok((await c.api(0, "POST", `/labs/${lab}/submit`, "teacher")).status, 200, "submit");
    ok((await c.api(0, "POST", `/courses/${c1.body.id}/labs`, "teacher", { lab_id: lab })).status, 201, "attach");
  }
  ok((await c.api(0, "POST", `/labs/${labA.body.id}/approve`, "admin")).status, 200, "approve");
  return { c1: c1.body.id, c2: c2.body.id, labA: labA.body.id, labB: labB.body.id };
}

/** Reads twice as the same caller: the second answer comes from the cache and must equal the first. */
async function twice<T>(c: CacheCluster, node: number, path: string, as: string) {
  const first = await c.api<T>(node, "GET", path, as);
  const second = await c.api<T>(node, "GET", path, as);
  expect(second).toEqual(first);
  return first;
}

/** Every caller gets their own answer, before and after the others' answers are in the cache. */
async function eachCallerOwnAnswer(c: CacheCluster, w: World, node: number) {
  const hitsBefore = c.cacher(node).stats.snapshot().total.hits;
  for (let round = 0; round < 2; round++) {
    const names = async (as: string) =>
      (await twice<Page<Course>>(c, node, "/courses", as)).body.items.map((x) => x.id);
    expect(await names("student")).toEqual([w.c1]);
    expect(await names("student2")).toEqual([w.c2]);
    expect(await names("student3")).toEqual([]);
    expect(await names("teacher")).toEqual([w.c1]);
    expect(await names("teacher2")).toEqual([w.c2]);
    expect((await names("admin")).sort()).toEqual([w.c1, w.c2].sort());

    expect((await twice(c, node, `/courses/${w.c1}`, "teacher")).status).toBe(200);
    expect((await twice(c, node, `/courses/${w.c1}`, "teacher2")).status).toBe(404);
    expect((await twice(c, node, `/courses/${w.c1}`, "student")).status).toBe(200);
    expect((await twice(c, node, `/courses/${w.c1}`, "student2")).status).toBe(404);

    // Teachers see the pending lab of their course, students only approved ones.
    const labsOf = async (as: string) =>
      (await twice<Page<{ id: number }>>(c, node, `/courses/${w.c1}/labs`, as)).body.items.map((l) => l.id);
    expect((await labsOf("teacher")).sort()).toEqual([w.labA, w.labB].sort());
    expect(await labsOf("student")).toEqual([w.labA]);
    expect(await labsOf("student2")).toBeUndefined();

    for (const as of ["student", "student2", "teacher"]) {
      expect((await twice<{ id: number }>(c, node, "/auth/me", as)).body.id).toBe(await c.userId(as));
    }
    const roles = async (as: string) =>
      new Set((await twice<Page<{ role: string }>>(c, node, "/users?limit=100", as)).body.items.map((u) => u.role));
    expect(await roles("teacher")).toEqual(new Set(["student"]));
    expect(await roles("admin")).toEqual(new Set(["admin", "teacher", "student"]));

    const start = { rule: "start_lab", course_id: w.c1, lab_id: w.labA } as const;
    expect((await check(c, node, "student", start)).decision).toBe("allow");
    expect(await check(c, node, "student2", start)).toMatchObject({ decision: "not_found", entity: "Course" });
    expect(await check(c, node, "teacher", start)).toMatchObject({ decision: "forbidden" });
    const own = { rule: "owner_of_course", course_id: w.c1 } as const;
    expect((await check(c, node, "teacher", own)).decision).toBe("allow");
    expect((await check(c, node, "teacher2", own)).decision).toBe("not_found");
  }
  // The second round was served from the cache, and still every caller got their own answer.
  expect(c.cacher(node).stats.snapshot().total.hits).toBeGreaterThan(hitsBefore + 30);
}

/**
 * Writes through node `wr`, each followed at once by reads through node `rd` of answers that node had
 * cached before the write. Nothing stale may come back.
 */
async function writesVisibleEverywhere(c: CacheCluster, w: World, wr: number, rd: number) {
  const get = <T = Record<string, unknown>>(path: string, as: string) => c.api<T>(rd, "GET", path, as);
  const warm = async (paths: string[], as: string[]) => {
    for (const path of paths) for (const a of as) await twice(c, rd, path, a);
  };

  // Rename: every user who had the course cached sees the new name.
  await warm([`/courses/${w.c1}`, "/courses"], ["teacher", "student", "admin"]);
  expect((await c.api(wr, "PUT", `/courses/${w.c1}`, "teacher", { name: "Operating systems II" })).status).toBe(200);
  for (const as of ["teacher", "student", "admin"]) {
    expect((await get<Course>(`/courses/${w.c1}`, as)).body.name).toBe("Operating systems II");
    expect((await get<Page<Course>>("/courses", as)).body.items.find((x) => x.id === w.c1)?.name).toBe(
      "Operating systems II",
    );
  }

  // Remove a student: their very next request is refused (course, its labs, starting its lab).
  const startA = { rule: "start_lab", course_id: w.c1, lab_id: w.labA } as const;
  await warm([`/courses/${w.c1}`, `/courses/${w.c1}/labs`, "/courses"], ["student"]);
  expect((await check(c, rd, "student", startA)).decision).toBe("allow");
  expect((await check(c, rd, "student", { rule: "assigned_to_course", course_id: w.c1 })).decision).toBe("allow");
  // A start through the cached decision (the instance stays pending: no workers here).
  const started = await c.api<{ id: number }>(rd, "POST", "/lab-instances", "student", {
    lab_id: w.labA,
    course_id: w.c1,
  });
  expect(started.status).toBe(202);
  const sid = await c.userId("student");
  expect((await c.api(wr, "DELETE", `/courses/${w.c1}/students/${sid}`, "teacher")).status).toBe(204);
  expect((await c.api(rd, "POST", "/lab-instances", "student", { lab_id: w.labA, course_id: w.c1 })).status).toBe(404);
  expect((await get(`/courses/${w.c1}`, "student")).status).toBe(404);
  expect((await get(`/courses/${w.c1}/labs`, "student")).status).toBe(404);
  expect((await get<Page<Course>>("/courses", "student")).body.items).toEqual([]);
  expect(await check(c, rd, "student", startA)).toMatchObject({ decision: "not_found", entity: "Course" });
  expect((await check(c, rd, "student", { rule: "assigned_to_course", course_id: w.c1 })).decision).toBe("not_found");

  // Assign again (their refusals were not cached as errors, but the empty list and the decisions were).
  expect((await c.api(wr, "POST", `/courses/${w.c1}/students`, "teacher", { student_ids: [sid] })).status).toBe(200);
  expect((await get(`/courses/${w.c1}`, "student")).status).toBe(200);
  expect((await get<Page<Course>>("/courses", "student")).body.items.map((x) => x.id)).toEqual([w.c1]);
  expect((await check(c, rd, "student", startA)).decision).toBe("allow");
  // Removal stopped their instance (lab-instances listens); once it ends they may start the lab again.
  await c.nodes[0].sequelize.query("UPDATE lab_instances SET status = 'stopped', stopped_at = now() WHERE id = $id", {
    bind: { id: started.body.id },
  });
  expect((await c.api(rd, "POST", "/lab-instances", "student", { lab_id: w.labA, course_id: w.c1 })).status).toBe(202);

  // Lab approval reaches the course's cached lab list and the start decision.
  const startB = { rule: "start_lab", course_id: w.c1, lab_id: w.labB } as const;
  await warm([`/courses/${w.c1}/labs`], ["student", "teacher"]);
  expect(await check(c, rd, "student", startB)).toMatchObject({ decision: "conflict", reason: "lab_not_approved" });
  expect((await c.api(rd, "POST", "/lab-instances", "student", { lab_id: w.labB, course_id: w.c1 })).status).toBe(409);
  expect((await c.api(wr, "POST", `/labs/${w.labB}/approve`, "admin")).status).toBe(200);
  expect(
    (await get<Page<{ id: number; status: string }>>(`/courses/${w.c1}/labs`, "student")).body.items
      .map((l) => l.id)
      .sort(),
  ).toEqual([w.labA, w.labB].sort());
  expect(
    (await get<Page<{ id: number; status: string }>>(`/courses/${w.c1}/labs`, "teacher")).body.items.every(
      (l) => l.status === "approved",
    ),
  ).toBe(true);
  expect((await check(c, rd, "student", startB)).decision).toBe("allow");
  expect((await c.api(rd, "POST", "/lab-instances", "student", { lab_id: w.labB, course_id: w.c1 })).status).toBe(202);

  // An edit that needs re-approval takes the lab back out of the student's reach.
  expect(
    (
      await c.api(wr, "PUT", `/labs/${w.labB}`, "teacher", {
        docker_image: "registry.example.com/labs/page-tables:2.0",
      })
    ).status,
  ).toBe(200);
  expect((await get<Page<{ id: number }>>(`/courses/${w.c1}/labs`, "student")).body.items.map((l) => l.id)).toEqual([
    w.labA,
  ]);
  expect(await check(c, rd, "student", startB)).toMatchObject({ decision: "conflict", reason: "lab_not_approved" });

  // The owner changes: the old owner loses the course at once, the new one has it.
  await warm([`/courses/${w.c1}`, "/courses"], ["teacher", "teacher2"]);
  const own = { rule: "owner_of_course", course_id: w.c1 } as const;
  expect((await check(c, rd, "teacher", own)).decision).toBe("allow");
  expect((await check(c, rd, "teacher2", own)).decision).toBe("not_found");
  const t2 = await c.userId("teacher2");
  expect((await c.api(wr, "PUT", `/courses/${w.c1}`, "admin", { owner_id: t2 })).status).toBe(200);
  expect((await get(`/courses/${w.c1}`, "teacher")).status).toBe(404);
  expect((await get(`/courses/${w.c1}`, "teacher2")).status).toBe(200);
  expect((await get<Page<Course>>("/courses", "teacher")).body.items).toEqual([]);
  expect((await check(c, rd, "teacher", own)).decision).toBe("not_found");
  expect((await check(c, rd, "teacher2", own)).decision).toBe("allow");

  // Detaching the lab (its instances ended first, as detaching requires): no more starting it.
  await c.nodes[0].sequelize.query(
    "UPDATE lab_instances SET status = 'stopped', stopped_at = now() WHERE status <> 'stopped'",
  );
  expect((await c.api(wr, "DELETE", `/courses/${w.c1}/labs/${w.labA}`, "teacher2")).status).toBe(204);
  expect(await check(c, rd, "student", startA)).toMatchObject({ decision: "not_found", reason: "lab_not_attached" });
  expect((await get<Page<{ id: number }>>(`/courses/${w.c1}/labs`, "student")).body.items).toEqual([]);

  // An approved access request assigns the student (written by the access service, not courses).
  await warm(["/courses"], ["student3"]);
  expect((await check(c, rd, "student3", { rule: "assigned_to_course", course_id: w.c2 })).decision).toBe("not_found");
  const req = await c.api<{ id: number }>(wr, "POST", "/access-requests", "student3", {
    course_id: w.c2,
    message: "may I?",
  });
  expect(req.status).toBe(201);
  expect((await c.api(wr, "POST", `/access-requests/${req.body.id}/approve`, "teacher2")).status).toBe(200);
  expect((await get<Page<Course>>("/courses", "student3")).body.items.map((x) => x.id)).toEqual([w.c2]);
  expect((await check(c, rd, "student3", { rule: "assigned_to_course", course_id: w.c2 })).decision).toBe("allow");

  // A course removed is gone for everyone who had it cached.
  await warm([`/courses/${w.c2}`, "/courses"], ["teacher2", "student2", "admin"]);
  expect((await c.api(wr, "DELETE", `/courses/${w.c2}`, "teacher2")).status).toBe(204);
  for (const as of ["teacher2", "student2", "admin"]) {
    expect((await get(`/courses/${w.c2}`, as)).status).toBe(404);
    expect((await get<Page<Course>>("/courses", as)).body.items.some((x) => x.id === w.c2)).toBe(false);
  }
  expect((await check(c, rd, "student2", { rule: "assigned_to_course", course_id: w.c2 })).reason).toBe(
    "no_such_course",
  );
}

describe("one node, Redis cacher", () => {
  let c: CacheCluster;
  let w: World;
  beforeAll(async () => {
    c = await startCacheCluster({ nodes: 1, cacher: "redis" });
    w = await seed(c);
  });
  afterAll(() => ifAssigned(c)?.stop());

  it("never serves one caller's cached answer to another", () => eachCallerOwnAnswer(c, w, 0));

  it("keeps the permission decisions in Redis under the caller", async () => {
    const keys = await (
      c.nodes[0].broker.cacher as unknown as { client: { keys(p: string): Promise<string[]> } }
    ).client.keys(`${c.namespace}-cache-access.check:*`);
    const sid = await c.userId("student");
    expect(keys).toContain(`${c.namespace}-cache-access.check:"user"|${sid}|"student"|"start_lab"|${w.c1}|${w.labA}`);
  });

  it("makes every write visible on the next read by every user", () => writesVisibleEverywhere(c, w, 0, 0));

  it("does not let a read computed before a write be cached after it (read-populate race)", async () => {
    const course = await c.api<Course>(0, "POST", "/courses", "teacher", { name: "Race conditions" });
    const sid = await c.userId("student");
    await c.api(0, "POST", `/courses/${course.body.id}/students`, "teacher", { student_ids: [sid] });
    const droppedBefore = c.cacher(0).stats.snapshot().scopes.courses?.dropped ?? 0;

    // The student's read loads the course (still assigned) and is held before it can store its answer.
    const hold = holdQuery(c.nodes[0].sequelize, /caller_assigned[\s\S]*FROM courses c WHERE c\.id = \$id/);
    let read: Promise<{ status: number }>;
    try {
      read = c.api(0, "GET", `/courses/${course.body.id}`, "student");
      await hold.reached;
      // Meanwhile the teacher removes the student; the write answers after its invalidation.
      expect((await c.api(0, "DELETE", `/courses/${course.body.id}/students/${sid}`, "teacher")).status).toBe(204);
    } finally {
      hold.release();
      hold.restore();
    }
    // Concurrent with the removal, the held read may answer either way; it must not stick in the cache.
    expect((await read).status).toBe(200);
    expect((await c.api(0, "GET", `/courses/${course.body.id}`, "student")).status).toBe(404);
    expect(c.cacher(0).stats.snapshot().scopes.courses?.dropped).toBe(droppedBefore + 1);

    // The same for a permission decision.
    await c.api(0, "POST", `/courses/${course.body.id}/students`, "teacher", { student_ids: [sid] });
    const q = { rule: "assigned_to_course", course_id: course.body.id } as const;
    const holdCheck = holdQuery(c.nodes[0].sequelize, /AS lab_status/);
    let decision: Promise<PermissionAnswer>;
    try {
      decision = check(c, 0, "student", q);
      await holdCheck.reached;
      expect((await c.api(0, "DELETE", `/courses/${course.body.id}/students/${sid}`, "teacher")).status).toBe(204);
    } finally {
      holdCheck.release();
      holdCheck.restore();
    }
    expect((await decision).decision).toBe("allow");
    expect((await check(c, 0, "student", q)).decision).toBe("not_found");
  });

  it("reports the hit ratio of a short mixed run", async () => {
    const course = await c.api<Course>(0, "POST", "/courses", "teacher", { name: "Hit ratio" });
    const cid = course.body.id;
    const [s1, s3] = [await c.userId("student"), await c.userId("student3")];
    await c.api(0, "POST", `/courses/${cid}/students`, "teacher", { student_ids: [s1] });
    const lab = await c.api<{ id: number }>(0, "POST", "/labs", "teacher", LAB("Hit ratio lab"));
    await c.api(0, "POST", `/labs/${lab.body.id}/submit`, "teacher");
    await c.api(0, "POST", `/labs/${lab.body.id}/approve`, "admin");
    await c.api(0, "POST", `/courses/${cid}/labs`, "teacher", { lab_id: lab.body.id });
    c.cacher(0).stats.reset();

    // Deterministic mix of 400 operations. Each user reads what they use: the owner and an admin their
    // course list, the course, its labs, /auth/me and /users; an assigned student their list, the course, its
    // labs, /auth/me and the start decision of its lab (lab-instances' check); users of other courses their
    // list and /auth/me. Every 40th operation is a write that invalidates every course answer and decision:
    // a rename, or student3 assigned / removed (so student3's reads also meet 404s, which are never cached).
    let seed = 42;
    // An LCG's low bits cycle quickly: take the high ones.
    const next = (n: number) => ((seed = (seed * 1103515245 + 12345) % 2 ** 31), Math.floor(seed / 2 ** 16) % n);
    const courseReads = [`/courses`, `/courses/${cid}`, `/courses/${cid}/labs`, "/auth/me"];
    const reads: Record<string, string[]> = {
      teacher: [...courseReads, "/users"],
      admin: [...courseReads, "/users"],
      student: [...courseReads, "check"],
      student3: [...courseReads, "check"],
      student2: ["/courses", "/auth/me"],
      teacher2: ["/courses", "/auth/me", "/users"],
    };
    const users = Object.keys(reads);
    let writes = 0;
    for (let op = 1; op <= 400; op++) {
      if (op % 40 === 0) {
        writes++;
        const kind = writes % 3;
        if (kind === 0) await c.api(0, "PUT", `/courses/${cid}`, "teacher", { name: `Hit ratio ${op}` });
        else if (kind === 1) await c.api(0, "POST", `/courses/${cid}/students`, "teacher", { student_ids: [s3] });
        else await c.api(0, "DELETE", `/courses/${cid}/students/${s3}`, "teacher");
        continue;
      }
      const as = users[next(users.length)];
      const mine = reads[as];
      const what = mine[next(mine.length)];
      if (what === "check") await check(c, 0, as, { rule: "start_lab", course_id: cid, lab_id: lab.body.id });
      else await c.api(0, "GET", what, as);
    }
    const { total, scopes } = c.cacher(0).stats.snapshot();
    const ratio = total.hits / (total.hits + total.misses);
    const line = (name: string, s: { hits: number; misses: number; dropped: number }) =>
      `  ${name.padEnd(8)} ${s.hits} hits / ${s.misses} misses (${((100 * s.hits) / (s.hits + s.misses)).toFixed(1)} %)`;
    console.log(
      `Cache hit ratio, 400 operations (${writes} writes), Redis cacher: ${(100 * ratio).toFixed(1)} %\n` +
        Object.entries(scopes)
          .map(([n, s]) => line(n, s!))
          .join("\n"),
    );
    expect(ratio).toBeGreaterThan(0.5);
    // The same counters at GET /metrics, per scope (cumulative since the node started).
    const metrics = await (await fetch(`${c.nodes[0].url}/metrics`)).text();
    expect(metrics).toMatch(/^autolabs_cache_hits_total\{.*scope="courses".*\} \d+$/m);
    expect(metrics).toMatch(/^autolabs_cache_misses_total\{.*scope="access".*\} \d+$/m);
  });
});

describe("two nodes over RabbitMQ, shared Redis cacher", () => {
  let c: CacheCluster;
  let w: World;
  beforeAll(async () => {
    c = await startCacheCluster({ nodes: 2, cacher: "redis" });
    w = await seed(c);
  });
  afterAll(() => ifAssigned(c)?.stop());

  it("never serves one caller's cached answer to another, on the other node", () => eachCallerOwnAnswer(c, w, 1));
  it("makes a write on one node visible on the next read through the other", () => writesVisibleEverywhere(c, w, 0, 1));
});

describe("two nodes over RabbitMQ, node-local Memory caches", () => {
  let c: CacheCluster;
  let w: World;
  beforeAll(async () => {
    c = await startCacheCluster({ nodes: 2, cacher: "memory" });
    w = await seed(c);
  });
  afterAll(() => ifAssigned(c)?.stop());

  it("never serves one caller's cached answer to another", () => eachCallerOwnAnswer(c, w, 1));

  it("makes a write on one node visible on the next read through the other (whose memory held the old answer)", async () => {
    expect(c.cacher(1).shared).toBe(false);
    await writesVisibleEverywhere(c, w, 0, 1);
  });
});
