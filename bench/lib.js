/**
 * Shared harness of the benchmarks: a seeded database on the real PostgreSQL, the embedded IdP, student
 * tokens signed with the IdP's key, platform nodes and the raw baseline as separate OS processes, the load
 * generator (bench/load.js) as a child process, RSS per process, and cleanup of all of it even on failure.
 */
const { spawn } = require("node:child_process");
const { randomBytes } = require("node:crypto");
const { readFileSync } = require("node:fs");
const path = require("node:path");
const { Client } = require("pg");
const { importJWK, SignJWT } = require("jose");
const { createTestDatabase, AMQP_URL, REDIS_URL } = require("../dist/test/support/platform.js");
const { startIdp } = require("../dist/test/support/idp.js");
const { startReadyChild } = require("../dist/platform/child-process.js");

const ROOT = path.resolve(__dirname, "..");
const ROLES_CLAIM = "urn:zitadel:iam:org:project:roles";
const AUDIENCE = "autolabs-api";

/* ───────────── cleanup: every child and database this run made goes away, also on failure ───────────── */

const cleanups = [];
/** Registers an async cleanup; run in reverse order by cleanupAll(). */
function onCleanup(fn) {
  cleanups.push(fn);
  return fn;
}
async function cleanupAll() {
  while (cleanups.length) {
    const fn = cleanups.pop();
    await Promise.resolve()
      .then(fn)
      .catch((err) => console.error(`cleanup: ${err.message}`));
  }
}
let interrupted = false;
for (const sig of ["SIGINT", "SIGTERM"]) {
  process.on(sig, () => {
    if (interrupted) process.exit(130);
    interrupted = true;
    console.error(`\n${sig}: cleaning up`);
    void cleanupAll().finally(() => process.exit(130));
  });
}
/** Runs main(), then cleans up; exit code 1 on failure. */
function runMain(main) {
  main()
    .catch((err) => {
      console.error(err instanceof Error ? err.stack : err);
      process.exitCode = 1;
    })
    .finally(() => cleanupAll().then(() => process.exit(process.exitCode ?? 0)));
}

/* ───────────── data ───────────── */

const SEED = {
  students: Number(process.env.BENCH_STUDENTS ?? 300),
  courses: 200,
  /** Every student is assigned to the first `assigned` courses (their list: 20 rows). */
  assigned: 20,
  /** Approved labs attached to the first course (start+stop cycles through student × lab pairs). */
  labs: 60,
  /** Stopped instances per student, so GET /lab-instances has rows to list. */
  pastInstances: 5,
};

/** A migrated database (same migrations as the platform) seeded by plain SQL; identical for platform and baseline. */
async function seededDatabase() {
  const db = await createTestDatabase();
  onCleanup(() => db.drop());
  const c = new Client({ connectionString: db.url });
  await c.connect();
  try {
    await c.query("BEGIN");
    const {
      rows: [teacher],
    } = await c.query(
      `INSERT INTO users (external_id, email, name, role)
       VALUES ('bench-teacher', 'bench-teacher@autolabs.local', 'Bench Teacher', 'teacher') RETURNING id`,
    );
    const { rows: students } = await c.query(
      `INSERT INTO users (external_id, email, name, role)
       SELECT 'bench-student-' || i, 'bench-student-' || i || '@autolabs.local', 'Bench Student ' || i, 'student'
         FROM generate_series(0, $1::int - 1) i ORDER BY i RETURNING id, external_id`,
      [SEED.students],
    );
    const { rows: courses } = await c.query(
      `INSERT INTO courses (name, description, owner_id, created_at)
       SELECT 'Course ' || i, 'Bench course ' || i, $1, now() - i * interval '1 minute'
         FROM generate_series(1, $2::int) i
       RETURNING id`,
      [teacher.id, SEED.courses],
    );
    courses.sort((a, b) => a.id - b.id);
    const assignedIds = courses.slice(0, SEED.assigned).map((r) => r.id);
    await c.query(
      "INSERT INTO course_students (course_id, student_id) SELECT c, s FROM unnest($1::int[]) c, unnest($2::int[]) s",
      [assignedIds, students.map((s) => s.id)],
    );
    const { rows: labs } = await c.query(
      `INSERT INTO labs (name, docker_image, resources, status, created_by, approved_by)
       SELECT 'Lab ' || i, 'python:3.12-slim', '{"cpu":"500m","memory":"512Mi","storage":"1Gi"}', 'approved', $1, $1
         FROM generate_series(1, $2::int) i RETURNING id`,
      [teacher.id, SEED.labs],
    );
    labs.sort((a, b) => a.id - b.id);
    const courseId = assignedIds[0];
    const labIds = labs.map((l) => l.id);
    await c.query("INSERT INTO course_labs (course_id, lab_id) SELECT $1, unnest($2::int[])", [courseId, labIds]);
    await c.query(
      `INSERT INTO lab_instances (lab_id, course_id, student_id, status, started_at, stopped_at)
       SELECT l, $1, s, 'stopped', now() - interval '2 hours', now() - interval '1 hour'
         FROM unnest($2::int[]) s, unnest($3::int[]) l`,
      [courseId, students.map((s) => s.id), labs.slice(0, SEED.pastInstances).map((l) => l.id)],
    );
    await c.query("COMMIT");
    await c.query("ANALYZE");
    return { ...db, courseId, labIds: labs.map((l) => l.id), studentSubs: students.map((s) => s.external_id) };
  } finally {
    await c.end();
  }
}

/* ───────────── identity ───────────── */

async function startBenchIdp() {
  const idp = await startIdp();
  onCleanup(() => idp.stop());
  return idp;
}

/** Access tokens as the IdP would issue them (its own key and kid), for the seeded students. */
async function studentTokens(idp, subs, ttlS = 4 * 3600) {
  const jwk = JSON.parse(readFileSync(path.join(idp.dataDir, "idp", "jwks.json"), "utf8")).keys[0];
  const key = await importJWK(jwk, "RS256");
  const now = Math.floor(Date.now() / 1000);
  return Promise.all(
    subs.map((sub, i) =>
      new SignJWT({
        iss: idp.issuer,
        aud: AUDIENCE,
        sub,
        iat: now,
        exp: now + ttlS,
        client_id: "autolabs-cli",
        email: `${sub}@autolabs.local`,
        name: `Bench Student ${i}`,
        [ROLES_CLAIM]: { student: { "300000000000000001": "autolabs.local" } },
      })
        .setProtectedHeader({ alg: "RS256", kid: jwk.kid, typ: "at+jwt" })
        .sign(key),
    ),
  );
}

/* ───────────── processes ───────────── */

async function freePort() {
  const net = require("node:net");
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.once("error", reject);
    s.listen(0, "127.0.0.1", () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
  });
}

/** Resident set size of a process, MiB (Linux /proc). */
function rssMiB(pid) {
  try {
    const m = /VmRSS:\s+(\d+) kB/.exec(readFileSync(`/proc/${pid}/status`, "utf8"));
    return m ? Number(m[1]) / 1024 : NaN;
  } catch {
    return NaN;
  }
}

const list = (raw, sep = ",") =>
  raw
    .split(sep)
    .map((s) => s.trim())
    .filter(Boolean);

/**
 * A Node server of the benchmarks as its own process, stopped at cleanup: `script` with `nodeArgs`, ready when a
 * line matches `ready` (its first group, if any, is `readyValue`); BENCH_VERBOSE prints its output.
 */
async function startServerProcess({ name, script, env, ready, nodeArgs = [], timeoutMs = 30_000, stopMs = 5000 }) {
  const child = await startReadyChild({
    name,
    command: process.execPath,
    args: [...nodeArgs, script],
    env: { PATH: process.env.PATH, ...env },
    ready,
    timeoutMs,
    onLine: (line) => process.env.BENCH_VERBOSE && console.error(`  [${name}] ${line}`),
  });
  onCleanup(() => child.stop(stopMs));
  return { pid: child.child.pid, readyValue: child.readyValue, child, stop: () => child.stop(stopMs) };
}

/** A platform node (`node dist/main/start.js`) as its own process. */
async function startPlatformNode(name, env, root = ROOT) {
  const port = env.PORT ?? String(await freePort());
  // Every node serves its metrics and probes, as in production; on one machine each needs a port of its own.
  const metricsPort = env.METRICS_PORT ?? String(await freePort());
  const node = await startServerProcess({
    name: `platform node ${name}`,
    // BENCH_NODE_ARGS: node flags for the platform nodes, e.g. --cpu-prof --cpu-prof-dir=/tmp/prof.
    nodeArgs: list(process.env.BENCH_NODE_ARGS ?? "", " "),
    script: path.join(root, "dist/main/start.js"),
    env: { NODE_ENV: "production", LOGLEVEL: "warn", ...env, PORT: port, METRICS_PORT: metricsPort },
    ready: /platform ready in (\d+) ms/,
    timeoutMs: 60_000,
    stopMs: 15_000,
  });
  return { name, pid: node.pid, url: `http://127.0.0.1:${port}`, child: node.child, stop: node.stop };
}

/**
 * The platform in one topology, every node a process of its own (`root`: a built checkout, default this one):
 * - embedded: one process, all services, Memory cacher, no transporter;
 * - one-node: one process, all services, Redis cacher and the AMQP transporter (what one pod of a cluster runs);
 * - cluster: 2 gateway nodes (api-gateway + auth: the token check at the edge) and 2 domain nodes (courses,
 *   labs, lab-instances, access, tasks) over RabbitMQ, Redis cacher.
 */
async function startTopology(topology, { dbUrl, issuer, env = {}, root = ROOT }) {
  const namespace = `bench-${randomBytes(4).toString("hex")}`;
  const base = { DATABASE_URL: dbUrl, OIDC_ISSUER: issuer, NAMESPACE: namespace, ...env };
  const clustered = { TRANSPORTER: AMQP_URL, CACHER: REDIS_URL, REDIS_URL };
  const plan =
    topology === "embedded"
      ? [["node", { ...base }]]
      : topology === "one-node"
        ? [["node", { ...base, ...clustered }]]
        : [
            ["domain-1", { ...base, ...clustered, SERVICES: "courses,labs,lab-instances,access,tasks" }],
            ["domain-2", { ...base, ...clustered, SERVICES: "courses,labs,lab-instances,access,tasks" }],
            ["gateway-1", { ...base, ...clustered, SERVICES: "api-gateway,auth" }],
            ["gateway-2", { ...base, ...clustered, SERVICES: "api-gateway,auth" }],
          ];
  if (topology !== "embedded" && topology !== "one-node" && topology !== "cluster") {
    throw new Error(`BENCH_TOPOLOGY: unknown topology "${topology}" (embedded, one-node, cluster)`);
  }
  if (topology !== "embedded")
    onCleanup(() =>
      removeAmqpTopology(
        namespace,
        plan.map(([name]) => `${namespace}-${name}`),
      ),
    );
  const nodes = [];
  for (const [name, nodeEnv] of plan) {
    nodes.push(await startPlatformNode(name, { ...nodeEnv, NODEID: `${namespace}-${name}` }, root));
  }
  const gateways = nodes.filter((n) => !n.name.startsWith("domain"));
  const stop = () => Promise.all(nodes.map((n) => n.stop()));
  return { topology, namespace, nodes, gateways: gateways.map((g) => g.url), stop };
}

/**
 * Moleculer's AMQP transporter leaves its fanout exchanges behind (durable, never deleted) and the nodes' queues
 * for AMQP_QUEUE_EXPIRY_S: the run removes those of its own namespace after its nodes stopped.
 */
async function removeAmqpTopology(namespace, nodeIds) {
  const amqp = require("amqplib");
  const conn = await amqp.connect(AMQP_URL);
  try {
    const ch = await conn.createChannel();
    const broadcast = ["DISCOVER", "INFO", "DISCONNECT", "HEARTBEAT", "PING"];
    const perNode = ["EVENT", "REQ", "RES", "DISCOVER", "INFO", "DISCONNECT", "HEARTBEAT", "PING", "PONG"];
    for (const id of nodeIds) for (const cmd of perNode) await ch.deleteQueue(`MOL-${namespace}.${cmd}.${id}`);
    for (const cmd of broadcast) await ch.deleteExchange(`MOL-${namespace}.${cmd}`);
    await ch.close();
  } finally {
    await conn.close();
  }
}

/** Waits until every gateway answers each path with 200 for this token (remote services routed). */
async function waitRouted(urls, paths, token, timeoutMs = 60_000) {
  const deadline = Date.now() + timeoutMs;
  for (const url of urls) {
    for (const p of paths) {
      for (;;) {
        const headers = { authorization: `Bearer ${token}` };
        const res = await fetch(`${url}/api/v1${p}`, { headers }).catch(() => null);
        if (res) await res.arrayBuffer();
        if (res && res.status === 200) break;
        if (Date.now() > deadline) {
          throw new Error(`${url}/api/v1${p} not served within ${timeoutMs} ms (last: ${res?.status})`);
        }
        await new Promise((r) => setTimeout(r, 200));
      }
    }
  }
}

/** The raw baseline (bench/baseline-server.js) as its own process. */
async function startBaseline({ dbUrl, issuer, poolMax = 10, maxActive }) {
  const server = await startServerProcess({
    name: "baseline server",
    // BENCH_BASELINE_NODE_ARGS: node flags for the baseline, e.g. --cpu-prof to profile it beside the platform.
    nodeArgs: list(process.env.BENCH_BASELINE_NODE_ARGS ?? "", " "),
    script: path.join(__dirname, "baseline-server.js"),
    env: {
      DATABASE_URL: dbUrl,
      OIDC_ISSUER: issuer,
      DATABASE_POOL_MAX: String(poolMax),
      MAX_ACTIVE_INSTANCES_PER_STUDENT: String(maxActive),
    },
    ready: /baseline listening on (http:\/\/\S+)/,
  });
  return { name: "baseline", pid: server.pid, url: server.readyValue, stop: server.stop };
}

/**
 * Runs bench/load.js in a child process against `targets` and resolves with its JSON result
 * ({requests, rps, p50, p99, errors, statuses}). With `spec.requests` (a fixed count), `onPhase(phase)` runs
 * after the warm-up ("warm") and after the counted requests ("done"), while the load waits.
 */
function runLoad(spec, onPhase = async () => {}) {
  return new Promise((resolve, reject) => {
    const stdio = ["pipe", "pipe", "inherit", "ipc"];
    const child = spawn(process.execPath, [path.join(__dirname, "load.js")], { stdio });
    child.on("message", ({ phase }) =>
      Promise.resolve(onPhase(phase)).then(
        () => child.send("go"),
        (err) => {
          child.kill("SIGKILL");
          reject(err);
        },
      ),
    );
    onCleanup(() => child.exitCode === null && child.kill("SIGKILL"));
    let out = "";
    child.stdout.on("data", (d) => (out += d));
    child.once("error", reject);
    child.once("exit", (code) => {
      if (code !== 0) return reject(new Error(`load generator exited with ${code}: ${out}`));
      try {
        resolve(JSON.parse(out));
      } catch (err) {
        reject(new Error(`load generator printed no JSON: ${out}`));
      }
    });
    child.stdin.end(JSON.stringify(spec));
  });
}

/** Linux reports process CPU in clock ticks of 1/100 s (getconf CLK_TCK). */
const TICK_US = 10_000;

/** utime + stime of a process in µs. */
function cpuUs(pid) {
  // Fields after the command name (which may hold spaces): state is field 3, utime 14, stime 15.
  const stat = readFileSync(`/proc/${pid}/stat`, "utf8");
  const fields = stat.slice(stat.lastIndexOf(")") + 2).split(" ");
  return (Number(fields[11]) + Number(fields[12])) * TICK_US;
}

const median = (xs) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)];

/** The first line of every report: when, on what, how busy the machine was. */
function machineLine() {
  const os = require("node:os");
  const cpus = os.cpus();
  return (
    `${new Date().toISOString()} — node ${process.version}, ${cpus.length} × ${cpus[0]?.model ?? "cpu"}, ` +
    `${(os.totalmem() / 2 ** 30).toFixed(0)} GiB, load average ${os
      .loadavg()
      .map((l) => l.toFixed(2))
      .join(" ")}`
  );
}

const fmt = (n, digits = 0) => (Number.isFinite(n) ? n.toFixed(digits) : "-");

module.exports = {
  startServerProcess,
  cpuUs,
  median,
  machineLine,
  SEED,
  onCleanup,
  cleanupAll,
  runMain,
  seededDatabase,
  startBenchIdp,
  studentTokens,
  startTopology,
  startPlatformNode,
  startBaseline,
  waitRouted,
  runLoad,
  rssMiB,
  freePort,
  fmt,
  AMQP_URL,
  REDIS_URL,
};
