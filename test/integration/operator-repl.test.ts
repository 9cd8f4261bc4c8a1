/**
 * The operator REPL (`npm run repl`, main/repl.ts) against a two-node cluster over the real RabbitMQ: a gateway
 * node (api-gateway, auth) and a domain node (the other five services) as OS processes of `dist/`, driven through
 * a pseudo-terminal like an operator at a keyboard. The Celery broker is a closed port, so lab starts stay
 * pending and their outbox rows unsent with attempts and an error: what an operator is called for.
 * The REPL process has no DATABASE_URL: everything it shows came through the services' actions.
 */
import { randomBytes } from "node:crypto";
import { PROBE_HEADERS } from "../support/answer-recorder-env";
import path from "node:path";
import { QueryTypes, type Sequelize } from "sequelize";
import { createSequelize } from "../../platform/db";
import { startIdp, type TestIdp } from "../support/idp";
import { freePort } from "../support/net";
import { AMQP_URL, REDIS_URL, createTestDatabase, type TestDatabase } from "../support/platform";
import { startPty, type PtySession } from "../support/pty";
import { spawnNode, type SpawnedNode } from "../support/spawned-nodes";
import { waitFor } from "../support/tasks";

jest.setTimeout(180_000);

const ROOT = path.resolve(__dirname, "../..");
const PROMPT = /autolabs \$ /;
const namespace = `repl-${randomBytes(4).toString("hex")}`;

let db: TestDatabase;
let sql: Sequelize;
let idp: TestIdp;
let gateway: SpawnedNode & { url: string };
let domain: SpawnedNode;
let repl: PtySession;
/** What beforeAll started, stopped in reverse order (also when beforeAll failed half-way). */
const cleanups: (() => Promise<unknown>)[] = [];
const ids = { student: 0, course: 0, lab: 0, instanceA: 0, instanceB: 0 };

async function api(method: string, route: string, token: string, body?: unknown) {
  const res = await fetch(`${gateway.url}/api/v1${route}`, {
    method,
    headers: {
      authorization: `Bearer ${token}`,
      ...(body === undefined ? {} : { "content-type": "application/json" }),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = (await res.json()) as Record<string, unknown>;
  if (res.status >= 300) throw new Error(`${method} ${route}: ${res.status} ${JSON.stringify(json)}`);
  return json;
}

const run = (line: string) => repl.command(line, PROMPT, 30_000);

beforeAll(async () => {
  [db, idp] = await Promise.all([createTestDatabase(), startIdp()]);
  cleanups.push(
    () => db.drop(),
    () => idp.stop(),
  );
  sql = createSequelize(db.url, { poolMax: 2 });
  cleanups.push(() => sql.close());
  const common = {
    DATABASE_URL: db.url,
    TRANSPORTER: AMQP_URL,
    NAMESPACE: namespace,
    CACHER: REDIS_URL,
    REDIS_URL,
    OIDC_ISSUER: idp.issuer,
    // Nothing listens there: every publish fails, rows stay unsent with their attempts and last error.
    CELERY_BROKER_URL: `amqp://127.0.0.1:${await freePort()}`,
    CELERY_RESULT_BACKEND: REDIS_URL,
    LAB_START_TIMEOUT_S: "3",
    // Only the operator's `sweep` sweeps in this file.
    LAB_SWEEP_INTERVAL_MS: "3600000",
  };
  const port = await freePort();
  const [g, d] = await Promise.all([
    spawnNode("gateway", { ...common, NODEID: `${namespace}-gw`, SERVICES: "api-gateway,auth", PORT: String(port) }),
    spawnNode("domain", {
      ...common,
      NODEID: `${namespace}-dom`,
      SERVICES: "courses,labs,lab-instances,access,tasks",
      // Metrics on (an ops port of its own): `cache stats` reads the node's counters.
      METRICS_PORT: String(await freePort()),
    }),
  ]);
  gateway = Object.assign(g, { url: `http://127.0.0.1:${port}` });
  domain = d;
  cleanups.push(
    () => gateway.stop(),
    () => domain.stop(),
  );

  const [teacher, admin, student, student2] = await Promise.all(
    ["teacher", "admin", "student", "student2"].map(async (a) => (await idp.getToken(a)).accessToken),
  );
  await waitFor(
    "the gateway routes the domain services",
    async () => {
      const res = await fetch(`${gateway.url}/api/v1/courses`, {
        headers: { authorization: `Bearer ${teacher}`, ...PROBE_HEADERS },
      });
      return res.status === 200 ? true : null;
    },
    30_000,
  );
  ids.student = (await api("GET", "/auth/me", student)).id as number;
  const student2Id = (await api("GET", "/auth/me", student2)).id as number;
  ids.course = (await api("POST", "/courses", teacher, { name: "Operating systems" })).id as number;
  await api("POST", `/courses/${ids.course}/students`, teacher, { student_ids: [ids.student, student2Id] });
  const lab = {
    name: "Shell",
    docker_image: "registry.example.com/labs/shell:1",
    resources: { cpu: "500m", memory: "512Mi", storage: "1Gi" },
  };
  ids.lab = (await api("POST", "/labs", teacher, lab)).id as number;
  await api("POST", `/labs/${ids.lab}/submit`, teacher);
  await api("POST", `/labs/${ids.lab}/approve`, admin);
  await api("POST", `/courses/${ids.course}/labs`, teacher, { lab_id: ids.lab });
  ids.instanceA = (await api("POST", "/lab-instances", student, { lab_id: ids.lab, course_id: ids.course }))
    .id as number;
  ids.instanceB = (await api("POST", "/lab-instances", student2, { lab_id: ids.lab, course_id: ids.course }))
    .id as number;
  await api("GET", "/courses", teacher); // a cached answer for `cache stats`

  repl = startPty(process.execPath, [path.join(ROOT, "main/run.js"), "main/repl"], {
    PATH: process.env.PATH ?? "",
    HOME: process.env.HOME ?? "/tmp",
    // No NODE_ENV=production: in this development tree the launcher compiles (a no-op, jest ran after tsc).
    TRANSPORTER: AMQP_URL,
    NAMESPACE: namespace,
    OPERATOR: "alice",
    OIDC_CLIENT_SECRET: "topsecret-client",
  });
  cleanups.push(() => {
    repl.kill();
    return Promise.resolve();
  });
  await repl.until(/Joined .* services: .*tasks[\s\S]*autolabs \$ /, 60_000);
});

afterAll(async () => {
  for (const cleanup of cleanups.reverse()) await cleanup().catch(() => undefined);
});

it("joins as a node without services and sees both nodes", async () => {
  expect(repl.output()).toMatch(
    /Joined repl-.* as repl-alice-.*; services: access, api-gateway, auth, courses, lab-instances, labs, tasks\./,
  );
  expect(repl.output()).toMatch(/Calls act as the system principal, logged as operator "alice"/);
  const nodes = await run("nodes");
  expect(nodes).toContain(`${namespace}-gw`);
  expect(nodes).toContain(`${namespace}-dom`);
});

it("whois: the user, their role, courses and active instances", async () => {
  const out = await run("whois student@autolabs.local");
  expect(out).toMatch(new RegExp(`^user ${ids.student}  student@autolabs\\.local`));
  expect(out).toMatch(/role student,/);
  expect(out).toMatch(new RegExp(`\\n${ids.course}\\s+Operating systems\\s+student\\n`));
  expect(out).toMatch(new RegExp(`\\n${ids.instanceA}\\s+${ids.student}\\s+${ids.course}\\s+${ids.lab}\\s+pending\\s`));
  expect(await run(`whois ${ids.student}`)).toMatch(/student@autolabs\.local/);
  expect(await run("whois nobody@autolabs.local")).toBe(">> MoleculerClientError (404): User not found\n");
});

it("instances --stuck lists starts pending too long; --student narrows to one student", async () => {
  await waitFor(
    "both starts pending for over a second",
    async () => {
      const [r] = await sql.query<{ n: string }>(
        `SELECT count(*) AS n FROM lab_instances WHERE status = 'pending' AND updated_at < now() - interval '1 second'`,
        { type: QueryTypes.SELECT },
      );
      return Number(r.n) === 2 ? true : null;
    },
    20_000,
  );
  const stuck = await run("instances --stuck --after 1");
  expect(stuck).toMatch(new RegExp(`\\n${ids.instanceA}\\s.*pending\\s+\\d+s`));
  expect(stuck).toMatch(new RegExp(`\\n${ids.instanceB}\\s.*pending\\s`));
  const mine = await run("instances --student student@autolabs.local");
  expect(mine).toMatch(new RegExp(`\\n${ids.instanceA}\\s`));
  expect(mine).not.toMatch(new RegExp(`\\n${ids.instanceB}\\s`));
  expect(await run("instances --stuck --after 3600")).toBe("no instances\n");
});

it("outbox --unsent shows age, attempts and last error; outbox retry makes a row due now", async () => {
  const rows = await waitFor(
    "both start_lab rows failed to publish at least once",
    async () => {
      const r = await sql.query<{ id: string; attempts: number }>(
        `SELECT id, attempts FROM task_outbox WHERE published_at IS NULL AND attempts > 0 ORDER BY created_at`,
        { type: QueryTypes.SELECT },
      );
      return r.length === 2 ? r : null;
    },
    30_000,
  );
  const out = await run("outbox --unsent");
  for (const row of rows) {
    expect(out).toMatch(
      new RegExp(`\\n${row.id}\\s+start_lab\\s+\\d+\\s+\\d+s\\s+\\d+\\s+unsent, (due|retry in \\S+)\\s+.*ECONNREFUSED`),
    );
  }
  const retried = await run(`outbox retry ${rows[0].id}`);
  expect(retried).toBe(`outbox row ${rows[0].id}: published on the next relay round\n`);
  const before = rows[0].attempts;
  await waitFor(
    "the retried row was tried again",
    async () => {
      const [r] = await sql.query<{ attempts: number }>(`SELECT attempts FROM task_outbox WHERE id = $id`, {
        bind: { id: rows[0].id },
        type: QueryTypes.SELECT,
      });
      return r.attempts > before ? true : null;
    },
    20_000,
  );
  expect(await run("outbox retry 00000000-0000-4000-8000-000000000000")).toBe(
    ">> MoleculerClientError (404): Outbox row not found\n",
  );
  expect(await run("outbox retry not-a-uuid")).toMatch(/^>> ValidationError \(422\): .*UUID/);
});

it("relay: the domain node's publisher, its confirms and the backlog", async () => {
  const out = await run("relay");
  expect(out).toMatch(
    new RegExp(
      `\\n${namespace}-dom\\s+(down|connecting)\\s+0\\s+\\d+\\s+2\\s+\\d+s\\s+0\\s+connected\\s+.*ECONNREFUSED`,
    ),
  );
});

it("stop, then sweep: the stop is recorded, the other start times out", async () => {
  expect(await run(`stop ${ids.instanceB}`)).toBe(`instance ${ids.instanceB}: stopping\n`);
  await waitFor(
    "the pending start is older than LAB_START_TIMEOUT_S",
    async () => {
      const [r] = await sql.query<{ old: boolean }>(
        `SELECT created_at < now() - interval '3 seconds' AS old FROM lab_instances WHERE id = $id`,
        { bind: { id: ids.instanceA }, type: QueryTypes.SELECT },
      );
      return r.old ? true : null;
    },
    20_000,
  );
  expect(await run(`sweep`)).toBe(`swept: timed out (failed) ${ids.instanceA}; expired none\n`);
  expect(await run(`stop ${ids.instanceA}`)).toMatch(
    /^>> MoleculerClientError \(409\): Lab instance \d+ has already ended \(failed\)/,
  );
});

it("cache stats per node and scope; cache clear empties a scope on every node running it", async () => {
  const stats = await run("cache stats");
  expect(stats).toMatch(new RegExp(`\\n${namespace}-dom\\s+courses\\s+\\d+\\s+[1-9]\\d*\\s`));
  expect(await run("cache clear courses")).toBe(`cleared: courses@${namespace}-dom\n`);
  expect(await run("cache clear nope")).toMatch(/^usage: cache clear <.*courses.*\|all>/);
});

it("calls without meta act as the system; an error is one line; each call is logged with the operator", async () => {
  expect(await run("call courses.list")).toContain("Operating systems");
  const err = await run(`call auth.getUser '{"id": 999999}'`);
  expect(err).toContain("MoleculerClientError (404): User not found");
  expect(err).not.toMatch(/^\s+at /m);
  await gateway.waitForLine(/operator alice calls auth\.getUser from repl-alice-/, 10_000);
  await domain.waitForLine(/operator alice calls tasks\.retry from repl-alice-/, 10_000);
});

it("env masks secrets", async () => {
  const env = await run("env");
  expect(env).toContain("OPERATOR: 'alice'");
  expect(env).not.toContain("topsecret-client");
  expect(env).toMatch(/OIDC_CLIENT_SECRET: '\*\*\*'/);
  expect(env).toMatch(/TRANSPORTER: 'amqp:\/\/guest:\*\*\*@/);
});

// Last: it ends the REPL.
it("q leaves cleanly: the process exits 0 and the cluster sees the node go", async () => {
  repl.type("q");
  expect(await repl.exited(20_000)).toBe(0);
  await gateway.waitForLine(/Node 'repl-alice-[^']+' disconnected/, 20_000);
});
