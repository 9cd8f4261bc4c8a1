/**
 * The schema migrations, on both databases the platform runs on:
 * - real PostgreSQL (a fresh database created through TEST_PG_ADMIN_URL, dropped afterwards);
 * - embedded PGlite (pglite-server on a temp dir and a free port).
 * Same assertions on both: up → down (all) → up, tables and indexes, the partial unique indexes, foreign keys,
 * CHECK constraints, defaults and the updated_at trigger, the relay's index, and that concurrent runs apply once.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { Client } from "pg";
import type { Sequelize } from "sequelize";
import { advisoryLockKey, createSequelize } from "../../platform/db";
import { startEmbeddedPostgres, type EmbeddedPostgres } from "../../dev/embedded-postgres";
import { MIGRATION_LOCK, migrateDown, migrateUp, migrationStatus } from "../../platform/migrator";
import { migrations } from "../../platform/migrations";
import { freePort } from "../support/net";
import { ifAssigned } from "../support/cleanup";

const ALL_MIGRATIONS = migrations.map((m) => m.name);

const ADMIN_URL = process.env.TEST_PG_ADMIN_URL ?? "postgres://postgres@127.0.0.1:5432/postgres";

const TABLES = [
  "access_requests",
  "course_labs",
  "course_students",
  "courses",
  "lab_instances",
  "labs",
  "task_outbox",
  "users",
];

const INDEXES = [
  "users_external_id_key",
  "users_role_idx",
  "users_created_at_idx",
  "courses_owner_id_idx",
  "courses_created_at_idx",
  "course_students_student_id_idx",
  "course_labs_lab_id_idx",
  "labs_status_idx",
  "labs_created_by_idx",
  "labs_created_at_idx",
  "lab_instances_one_active_idx",
  "lab_instances_celery_task_id_key",
  "lab_instances_student_id_idx",
  "lab_instances_lab_id_idx",
  "lab_instances_course_id_idx",
  "lab_instances_status_idx",
  "lab_instances_created_at_idx",
  "access_requests_one_pending_idx",
  "access_requests_student_id_idx",
  "access_requests_course_id_idx",
  "access_requests_status_idx",
  "access_requests_created_at_idx",
  "task_outbox_due_idx",
  "task_outbox_lab_instance_id_idx",
];

interface Backend {
  url: string;
  teardown(): Promise<void>;
}

async function realPostgres(): Promise<Backend> {
  const name = `autolabs_migrations_test_${randomBytes(6).toString("hex")}`;
  const admin = new Client({ connectionString: ADMIN_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(ADMIN_URL);
  url.pathname = `/${name}`;
  return {
    url: url.toString(),
    async teardown() {
      const a = new Client({ connectionString: ADMIN_URL });
      await a.connect();
      await a.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await a.end();
    },
  };
}

async function pglite(): Promise<Backend> {
  const dir = mkdtempSync(path.join(tmpdir(), "autolabs-migrations-"));
  const server: EmbeddedPostgres = await startEmbeddedPostgres({
    dataDir: dir,
    port: await freePort(),
    maxConnections: 12,
  });
  return {
    url: server.url,
    async teardown() {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** Runs `fn`, expecting PostgreSQL to refuse it with SQLSTATE `code`. */
async function expectPgError(fn: () => Promise<unknown>, code: string): Promise<void> {
  let caught: unknown;
  try {
    await fn();
  } catch (e) {
    caught = e;
  }
  expect(caught).toBeDefined();
  expect((caught as { code?: string }).code).toBe(code);
}

const UNIQUE = "23505";
const FOREIGN_KEY = "23503";
const CHECK = "23514";

describe.each([
  ["PostgreSQL", realPostgres],
  ["PGlite", pglite],
])("migrations on %s", (_name, makeBackend) => {
  let backend: Backend;
  let sequelize: Sequelize;
  let db: Client;

  beforeAll(async () => {
    backend = await makeBackend();
    sequelize = createSequelize(backend.url, { poolMax: 4 });
    db = new Client({ connectionString: backend.url });
    await db.connect();
  });

  afterAll(async () => {
    await ifAssigned(db)
      ?.end()
      .catch(() => undefined);
    await ifAssigned(sequelize)
      ?.close()
      .catch(() => undefined);
    await ifAssigned(backend)?.teardown();
  });

  async function tables(): Promise<string[]> {
    const r = await db.query<{ table_name: string }>(
      "SELECT table_name FROM information_schema.tables WHERE table_schema = 'public' ORDER BY table_name",
    );
    return r.rows.map((x) => x.table_name).filter((t) => t !== "schema_migrations");
  }

  async function one<T extends object>(sql: string, params: unknown[] = []): Promise<T> {
    const r = await db.query<T & Record<string, unknown>>(sql, params);
    return r.rows[0];
  }

  test("up creates every table and index; a second up applies nothing", async () => {
    const started = Date.now();
    expect(await migrateUp(sequelize)).toEqual(ALL_MIGRATIONS);
    // Reported figure: how long the whole schema takes on this backend.
    console.log(`${_name}: migrate up took ${Date.now() - started} ms`);
    expect(await tables()).toEqual(TABLES);
    const idx = await db.query<{ indexname: string }>("SELECT indexname FROM pg_indexes WHERE schemaname = 'public'");
    const names = idx.rows.map((r) => r.indexname);
    for (const i of INDEXES) expect(names).toContain(i);
    expect(await migrateUp(sequelize)).toEqual([]);
    expect(await migrationStatus(sequelize)).toEqual({ executed: ALL_MIGRATIONS, pending: [] });
  });

  test("down --to 0 drops everything, up rebuilds it", async () => {
    expect(await migrateDown(sequelize, { to: 0 })).toEqual([...ALL_MIGRATIONS].reverse());
    expect(await tables()).toEqual([]);
    const fn = await db.query("SELECT 1 FROM pg_proc WHERE proname = 'autolabs_set_updated_at'");
    expect(fn.rowCount).toBe(0);
    expect(await migrationStatus(sequelize)).toEqual({ executed: [], pending: ALL_MIGRATIONS });
    expect(await migrateUp(sequelize)).toEqual(ALL_MIGRATIONS);
    expect(await tables()).toEqual(TABLES);
  });

  test("concurrent migrateUp calls (two pools, as two nodes would) apply the schema once", async () => {
    await migrateDown(sequelize, { to: 0 });
    const other = createSequelize(backend.url, { poolMax: 2 });
    try {
      const [a, b] = await Promise.all([migrateUp(sequelize), migrateUp(other)]);
      expect([...a, ...b]).toEqual(ALL_MIGRATIONS);
    } finally {
      await other.close();
    }
    expect(await tables()).toEqual(TABLES);
  });

  describe("constraints", () => {
    let admin: number;
    let teacher: number;
    let student: number;
    let course: number;
    let lab: number;
    let lab2: number;

    beforeAll(async () => {
      const user = async (sub: string, role: string) =>
        (await one<{ id: number }>("INSERT INTO users (external_id, role) VALUES ($1, $2) RETURNING id", [sub, role]))
          .id;
      admin = await user("sub-admin", "admin");
      teacher = await user("sub-teacher", "teacher");
      student = await user("sub-student", "student");
      course = (
        await one<{ id: number }>("INSERT INTO courses (name, owner_id) VALUES ('C', $1) RETURNING id", [teacher])
      ).id;
      const newLab = async (name: string) =>
        (
          await one<{ id: number }>(
            `INSERT INTO labs (name, docker_image, resources, created_by) VALUES ($1, 'nginx:1.27', '{"cpu":"500m"}', $2)
             RETURNING id`,
            [name, teacher],
          )
        ).id;
      lab = await newLab("L1");
      lab2 = await newLab("L2");
    });

    const instance = (labId: number, status = "pending") =>
      db.query(
        "INSERT INTO lab_instances (lab_id, course_id, student_id, status) VALUES ($1, $2, $3, $4) RETURNING id",
        [labId, course, student, status],
      );

    test("defaults: ids are integers, timestamps and status are filled in", async () => {
      expect(Number.isInteger(admin)).toBe(true);
      const l = await one<{ status: string; network_isolated: boolean; max_lifetime_s: null; created_at: Date }>(
        "SELECT status, network_isolated, max_lifetime_s, created_at FROM labs WHERE id = $1",
        [lab],
      );
      expect(l).toMatchObject({ status: "draft", network_isolated: false, max_lifetime_s: null });
      expect(l.created_at).toBeInstanceOf(Date);
      const u = await one<{ role: string }>("INSERT INTO users (external_id) VALUES ('sub-default') RETURNING role");
      expect(u.role).toBe("student");
    });

    test("at most one active instance per (student, lab); stopped ones don't count", async () => {
      const first = (await instance(lab)).rows[0] as { id: number };
      await expectPgError(() => instance(lab), UNIQUE);
      await expectPgError(() => instance(lab, "running"), UNIQUE);
      // Another lab at the same time is fine.
      await instance(lab2);
      // Once the first one stopped, a new one may start.
      await db.query("UPDATE lab_instances SET status = 'stopped', stopped_at = now() WHERE id = $1", [first.id]);
      const second = (await instance(lab)).rows[0] as { id: number };
      await expectPgError(() => instance(lab, "stopping"), UNIQUE);
      await db.query("UPDATE lab_instances SET status = 'failed' WHERE id = $1", [second.id]);
      await instance(lab, "running");
      // History of several finished instances for the same pair is allowed.
      const n = await one<{ n: string }>(
        "SELECT count(*) AS n FROM lab_instances WHERE student_id = $1 AND lab_id = $2",
        [student, lab],
      );
      expect(Number(n.n)).toBe(3);
    });

    test("at most one pending access request per (student, course)", async () => {
      const ask = () =>
        db.query("INSERT INTO access_requests (student_id, course_id, message) VALUES ($1, $2, 'pls') RETURNING id", [
          student,
          course,
        ]);
      const r = (await ask()).rows[0] as { id: number };
      await expectPgError(ask, UNIQUE);
      await db.query(
        "UPDATE access_requests SET status = 'rejected', decided_by = $2, decided_at = now() WHERE id = $1",
        [r.id, teacher],
      );
      await ask();
    });

    test("CHECK constraints reject unknown enumeration values", async () => {
      await expectPgError(() => db.query("INSERT INTO users (external_id, role) VALUES ('x', 'root')"), CHECK);
      await expectPgError(() => db.query("UPDATE labs SET status = 'published' WHERE id = $1", [lab]), CHECK);
      await expectPgError(() => db.query("UPDATE labs SET max_lifetime_s = 0 WHERE id = $1", [lab]), CHECK);
      await expectPgError(() => db.query(`UPDATE labs SET resources = '[]' WHERE id = $1`, [lab]), CHECK);
      await expectPgError(() => instance(lab2, "exploded"), CHECK);
      await expectPgError(
        () =>
          db.query("INSERT INTO access_requests (student_id, course_id, status) VALUES ($1, $2, 'maybe')", [
            student,
            course,
          ]),
        CHECK,
      );
      await expectPgError(
        () => db.query("INSERT INTO task_outbox (task_name, queue, attempts) VALUES ('t', 'celery', -1)"),
        CHECK,
      );
    });

    test("unique external_id", async () => {
      await expectPgError(
        () => db.query("INSERT INTO users (external_id, role) VALUES ('sub-admin', 'admin')"),
        UNIQUE,
      );
    });

    test("foreign keys: references must exist; deletes follow the documented policy", async () => {
      await expectPgError(() => db.query("INSERT INTO courses (name, owner_id) VALUES ('X', 999999)"), FOREIGN_KEY);
      await expectPgError(
        () => db.query("INSERT INTO course_students (course_id, student_id) VALUES ($1, 999999)", [course]),
        FOREIGN_KEY,
      );
      // NO ACTION (refuse): a user owning a course cannot vanish; nor can a lab or course with instance history.
      await expectPgError(() => db.query("DELETE FROM users WHERE id = $1", [teacher]), FOREIGN_KEY);
      await expectPgError(() => db.query("DELETE FROM labs WHERE id = $1", [lab]), FOREIGN_KEY);
      await expectPgError(() => db.query("DELETE FROM courses WHERE id = $1", [course]), FOREIGN_KEY);

      // CASCADE for link rows; SET NULL for approved_by / decided_by / outbox.lab_instance_id.
      const c2 = (
        await one<{ id: number }>("INSERT INTO courses (name, owner_id) VALUES ('C2', $1) RETURNING id", [teacher])
      ).id;
      const l3 = (
        await one<{ id: number }>(
          "INSERT INTO labs (name, docker_image, created_by, approved_by, status) VALUES ('L3', 'img', $1, $2, 'approved') RETURNING id",
          [teacher, admin],
        )
      ).id;
      await db.query("INSERT INTO course_students (course_id, student_id) VALUES ($1, $2)", [c2, student]);
      await db.query("INSERT INTO course_labs (course_id, lab_id) VALUES ($1, $2)", [c2, l3]);
      await db.query("INSERT INTO access_requests (student_id, course_id) VALUES ($1, $2)", [student, c2]);
      await db.query("DELETE FROM courses WHERE id = $1", [c2]);
      for (const t of ["course_students", "course_labs"]) {
        const n = await one<{ n: string }>(`SELECT count(*) AS n FROM ${t} WHERE course_id = $1`, [c2]);
        expect(Number(n.n)).toBe(0);
      }
      // access_requests.course_id has no key (0003): a request may name any id, and outlives its course.
      const voided = await one<{ n: string }>("SELECT count(*) AS n FROM access_requests WHERE course_id = $1", [c2]);
      expect(Number(voided.n)).toBe(1);
      await db.query("INSERT INTO access_requests (student_id, course_id) VALUES ($1, 999999)", [student]);
      await db.query("DELETE FROM access_requests WHERE course_id IN ($1, 999999)", [c2]);
      await db.query("DELETE FROM users WHERE id = $1", [admin]);
      expect(
        (await one<{ approved_by: number | null }>("SELECT approved_by FROM labs WHERE id = $1", [l3])).approved_by,
      ).toBeNull();

      const inst = (
        await one<{ id: number }>(
          "INSERT INTO lab_instances (lab_id, course_id, student_id, status) VALUES ($1, $2, $3, 'failed') RETURNING id",
          [l3, course, student],
        )
      ).id;
      const task = await one<{ id: string; attempts: number; next_attempt_at: Date; published_at: null }>(
        `INSERT INTO task_outbox (task_name, kwargs, queue, lab_instance_id)
         VALUES ('celery_workers.cleanup_lab', $1, 'celery', $2) RETURNING id, attempts, next_attempt_at, published_at`,
        [JSON.stringify({ lab_instance_id: inst }), inst],
      );
      expect(task.id).toMatch(/^[0-9a-f-]{36}$/);
      expect(task).toMatchObject({ attempts: 0, published_at: null });
      expect(task.next_attempt_at).toBeInstanceOf(Date);
      await db.query("DELETE FROM lab_instances WHERE id = $1", [inst]);
      const kept = await one<{ lab_instance_id: number | null }>(
        "SELECT lab_instance_id FROM task_outbox WHERE id = $1",
        [task.id],
      );
      expect(kept.lab_instance_id).toBeNull();
    });

    test("updated_at follows every UPDATE unless the UPDATE sets it", async () => {
      const before = await one<{ updated_at: Date }>("SELECT updated_at FROM courses WHERE id = $1", [course]);
      await new Promise((r) => setTimeout(r, 20));
      const after = await one<{ updated_at: Date }>(
        "UPDATE courses SET name = 'C!' WHERE id = $1 RETURNING updated_at",
        [course],
      );
      expect(after.updated_at.getTime()).toBeGreaterThan(before.updated_at.getTime());
      const fixed = await one<{ updated_at: Date }>(
        "UPDATE courses SET name = 'C', updated_at = '2020-01-01T00:00:00Z' WHERE id = $1 RETURNING updated_at",
        [course],
      );
      expect(fixed.updated_at.toISOString()).toBe("2020-01-01T00:00:00.000Z");
    });

    test("the relay's query (due, unpublished, oldest first, SKIP LOCKED) can use the partial index", async () => {
      await db.query(
        `INSERT INTO task_outbox (task_name, queue, next_attempt_at) VALUES
           ('a', 'celery', now() - interval '2 minutes'), ('b', 'celery', now() - interval '1 minute'),
           ('c', 'celery', now() + interval '1 hour')`,
      );
      await db.query("INSERT INTO task_outbox (task_name, queue, published_at) VALUES ('done', 'celery', now())");
      const relay = `SELECT task_name FROM task_outbox WHERE published_at IS NULL AND next_attempt_at <= now()
                     ORDER BY next_attempt_at, created_at LIMIT 10 FOR UPDATE SKIP LOCKED`;
      await db.query("BEGIN");
      try {
        const due = await db.query<{ task_name: string }>(relay);
        // 'cleanup_lab' from the FK test is due too (next_attempt_at defaulted to its insert time).
        expect(due.rows.map((r) => r.task_name)).toEqual(["a", "b", "celery_workers.cleanup_lab"]);
        await db.query("SET LOCAL enable_seqscan = off");
        const plan = await db.query<{ "QUERY PLAN": string }>(`EXPLAIN ${relay}`);
        expect(plan.rows.map((r) => r["QUERY PLAN"]).join("\n")).toContain("task_outbox_due_idx");
      } finally {
        await db.query("ROLLBACK");
      }
    });
  });
});

describe("migration lock on PostgreSQL", () => {
  let backend: Backend;
  let sequelize: Sequelize;

  beforeAll(async () => {
    backend = await realPostgres();
    sequelize = createSequelize(backend.url, { poolMax: 2 });
  });
  afterAll(async () => {
    await ifAssigned(sequelize)
      ?.close()
      .catch(() => undefined);
    await ifAssigned(backend)?.teardown();
  });

  test("migrateUp waits while another session holds the migration lock", async () => {
    const other = new Client({ connectionString: backend.url });
    await other.connect();
    try {
      await other.query("SELECT pg_advisory_lock($1::bigint)", [advisoryLockKey(MIGRATION_LOCK).toString()]);
      let settled = false;
      const waited: string[] = [];
      const run = migrateUp(sequelize, {
        info: (m: unknown) => waited.push(String(m)),
        warn: () => undefined,
        error: () => undefined,
        debug: () => undefined,
      }).finally(() => {
        settled = true;
      });
      await new Promise((r) => setTimeout(r, 700));
      expect(settled).toBe(false);
      expect(waited.join("\n")).toContain("another node is migrating");
      const t = await other.query("SELECT to_regclass('public.users') AS t");
      expect(t.rows[0].t).toBeNull();
      await other.query("SELECT pg_advisory_unlock($1::bigint)", [advisoryLockKey(MIGRATION_LOCK).toString()]);
      expect(await run).toEqual(ALL_MIGRATIONS);
    } finally {
      await other.end();
    }
  });
});
