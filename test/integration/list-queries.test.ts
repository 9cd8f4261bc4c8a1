/**
 * The seed's "batch operations": a list page loads its rows and what it shows about them in batches, never
 * one query per row (N+1). Every list endpoint, with each caller kind that may call it, is asked for pages
 * of 1, 10 and 100 rows over 120 rows; the SQL statements the node runs for one request are counted. The
 * count must not grow with the page: it is the page query itself (rows and total in one statement) plus, for
 * a list under an object (a course's students or labs), the access check's one load of that object.
 */
import { startTestPlatform, type TestPlatform } from "../support/platform";
import { countQueries } from "../support/cache-nodes";
import { ifAssigned } from "../support/cleanup";

let p: TestPlatform;
let c1: number;
const ROWS = 120;

beforeAll(async () => {
  // No tasks service and no sweeps: nothing but the request runs queries while they are counted.
  p = await startTestPlatform({
    SERVICES: "api-gateway,auth,courses,labs,lab-instances,access",
    LAB_SWEEP_INTERVAL_MS: "3600000",
  });
  const [teacher, student] = [await p.userId("teacher"), await p.userId("student")];
  await p.userId("admin");
  const q = (sql: string, bind: Record<string, unknown> = {}) => p.sequelize.query(sql, { bind });
  await q(
    `INSERT INTO users (external_id, email, name, role)
     SELECT 'bulk-' || g, 'bulk' || g || '@example.com', 'Bulk Student ' || g, 'student' FROM generate_series(1, $n) g`,
    { n: ROWS },
  );
  await q(
    `INSERT INTO courses (name, description, owner_id) SELECT 'Course ' || g, '', $t FROM generate_series(1, $n) g`,
    { t: teacher, n: ROWS },
  );
  c1 = ((await p.sequelize.query("SELECT min(id) AS id FROM courses", { plain: true })) as { id: number }).id;
  await q(`INSERT INTO course_students (course_id, student_id) SELECT id, $s FROM courses`, { s: student });
  await q(
    `INSERT INTO course_students (course_id, student_id) SELECT $c, id FROM users WHERE external_id LIKE 'bulk-%'`,
    { c: c1 },
  );
  await q(
    `INSERT INTO labs (name, docker_image, resources, status, created_by, approved_by)
     SELECT 'Lab ' || g, 'registry.example.com/labs/l' || g || ':1', '{"cpu":"500m","memory":"512Mi","storage":"1Gi"}', 'approved', $t, $t
       FROM generate_series(1, $n) g`,
    { t: teacher, n: ROWS },
  );
  await q(`INSERT INTO course_labs (course_id, lab_id) SELECT $c, id FROM labs`, { c: c1 });
  await q(
    `INSERT INTO access_requests (student_id, course_id, message, status)
     SELECT u.id, c.id, 'please', 'pending' FROM users u CROSS JOIN (SELECT max(id) AS id FROM courses) c WHERE u.external_id LIKE 'bulk-%'`,
  );
  await q(
    `INSERT INTO lab_instances (lab_id, course_id, student_id, status, started_at, stopped_at)
     SELECT id, $c, $s, 'stopped', now(), now() FROM labs`,
    { c: c1, s: student },
  );
  await q(
    `INSERT INTO access_requests (student_id, course_id, message, status, decided_at)
     SELECT $s, id, 'earlier', 'cancelled', now() FROM courses`,
    { s: student },
  );
});

afterAll(() => ifAssigned(p)?.stop());

const ENDPOINTS: ReadonlyArray<[path: string, callers: readonly string[]]> = [
  ["/courses", ["admin", "teacher", "student"]],
  ["/labs", ["admin", "teacher", "student"]],
  ["/users", ["admin", "teacher"]],
  ["/access-requests", ["admin", "teacher", "student"]],
  ["/courses/{c1}/students", ["admin", "teacher"]],
  ["/courses/{c1}/labs", ["admin", "teacher", "student"]],
  ["/lab-instances", ["admin", "teacher", "student"]],
];
const PAGE_SIZES = [1, 10, 100];

const figures: string[] = [];
afterAll(() => {
  // The closing note's "query count per list page".
  if (figures.length)
    console.log(`SQL statements per list page (pages of ${PAGE_SIZES.join(", ")} rows):\n${figures.join("\n")}`);
});

describe.each(ENDPOINTS)("GET %s", (template, callers) => {
  it.each(callers)("as %s: the same number of queries for every page size", async (as) => {
    const path = template.replace("{c1}", String(c1));
    const counts: number[] = [];
    for (const limit of PAGE_SIZES) {
      // A page size not asked before: a cache miss, so the queries are really run.
      const counter = countQueries(p.sequelize);
      let res;
      try {
        res = await p.api("GET", `${path}?limit=${limit}`, { as });
      } finally {
        counter.stop();
      }
      expect(res.status).toBe(200);
      const page = res.body as { items: unknown[]; total: number };
      // The page is full: the count is measured against `limit` rows, not an empty answer.
      expect(page.items.length).toBe(Math.min(limit, page.total));
      expect(page.total).toBeGreaterThanOrEqual(as === "student" && template === "/access-requests" ? ROWS : limit);
      counts.push(counter.count);
      if (counter.count > 2)
        throw new Error(`${counter.count} queries for ${path}?limit=${limit}:\n${counter.sql.join("\n")}`);
    }
    figures.push(`  ${template.padEnd(24)} as ${as.padEnd(8)} ${counts.join(" / ")}`);
    expect(new Set(counts).size).toBe(1);
    expect(counts[0]).toBe(template.includes("{c1}") ? 2 : 1);
  });
});
