/**
 * A production node as a child process (`node dist/main/start.js`, cluster mode, tracing on), its stdout and
 * stderr captured: one JSON object per line from the first start-up line on; each HTTP answer logged once with
 * request id, user, action, status and duration (4xx at info, 5xx at error) and the trace id; a lab's lifecycle
 * (start accepted → task published → running → stopping → stopped) with instance and task ids; the OIDC
 * callback's code and state never written. And its probes through outages: PostgreSQL unreachable (a TCP relay
 * in front of it is cut) or its Redis killed fail /readyz, never /livez.
 */
import { randomBytes } from "node:crypto";
import { startIdp, type TestIdp } from "../support/idp";
import { until } from "../support/lab-instances";
import { freePort } from "../support/net";
import { createTestDatabase, type TestDatabase } from "../support/platform";
import { startOwnRedis, type OwnRedis } from "../support/redis-server";
import { spawnNode, type SpawnedNode } from "../support/spawned-nodes";
import { TcpRelay } from "../support/tasks";
import { startZipkinCollector, type ZipkinCollector } from "../support/zipkin";

let db: TestDatabase;
let idp: TestIdp;
let relay: TcpRelay;
let redis: OwnRedis;
let collector: ZipkinCollector;
let node: SpawnedNode;
let base: string;
let ops: string;
const tokens = new Map<string, string>();

type LogLine = Record<string, unknown> & { level: string; msg: string };

async function token(account: string): Promise<string> {
  let t = tokens.get(account);
  if (!t) tokens.set(account, (t = (await idp.getToken(account)).accessToken));
  return t;
}

async function call(method: string, path: string, as?: string, body?: unknown): Promise<Response> {
  const headers: Record<string, string> = {};
  if (as) headers.authorization = `Bearer ${await token(as)}`;
  if (body !== undefined) headers["content-type"] = "application/json";
  return fetch(`${base}/api/v1${path}`, {
    method,
    headers,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
}

async function json<T>(method: string, path: string, as: string, body?: unknown, status = 200): Promise<T> {
  const res = await call(method, path, as, body);
  const text = await res.text();
  if (res.status !== status) throw new Error(`${method} ${path}: ${res.status} ${text}`);
  return JSON.parse(text) as T;
}

/** Every line the node printed, parsed: a line that is not one JSON object fails the test here. */
function logLines(): LogLine[] {
  return node.lines().map((line) => {
    try {
      return JSON.parse(line) as LogLine;
    } catch {
      throw new Error(`not a JSON log line: ${line}`);
    }
  });
}

/** The access line of the answer with this request id (waits: it is written when the answer ends). */
function answerLine(requestId: string): Promise<LogLine> {
  return until(`the access line of ${requestId}`, () =>
    Promise.resolve(logLines().find((l) => l.request_id === requestId && typeof l.status === "number")),
  );
}

beforeAll(async () => {
  [db, idp, redis, collector] = await Promise.all([
    createTestDatabase(),
    startIdp(),
    startOwnRedis(),
    startZipkinCollector(),
  ]);
  // The relay stands between the node and whichever PostgreSQL the test database lives on.
  const dbUrl = new URL(db.url);
  relay = await TcpRelay.create({ host: dbUrl.hostname, port: Number(dbUrl.port || 5432) });
  await relay.up();
  dbUrl.port = String(relay.port);
  const [port, metricsPort] = [await freePort(), await freePort()];
  node = await spawnNode("logs", {
    DATABASE_URL: dbUrl.toString(),
    OIDC_ISSUER: idp.issuer,
    REDIS_URL: redis.url(0),
    PORT: String(port),
    METRICS_PORT: String(metricsPort),
    NODEID: `logs-${randomBytes(3).toString("hex")}`,
    LOGLEVEL: "info",
    TRACING_EXPORTER: "zipkin",
    TRACING_ZIPKIN_URL: collector.url,
    RATE_LIMIT_RPS: "0",
    RATE_LIMIT_LAB_STARTS_PER_MIN: "0",
    LAB_SWEEP_INTERVAL_MS: "3600000",
  });
  base = `http://127.0.0.1:${port}`;
  ops = `http://127.0.0.1:${metricsPort}`;
}, 90_000);

afterAll(async () => {
  // Each step on its own: a failed start leaves some of these unset.
  for (const step of [() => node.stop(), () => relay.down(), () => redis.kill(), () => collector.stop()]) {
    await Promise.resolve()
      .then(step)
      .catch(() => undefined);
  }
  await Promise.allSettled([Promise.resolve().then(() => db.drop()), Promise.resolve().then(() => idp.stop())]);
});

it("writes one JSON object per line from the first start-up line on", () => {
  const lines = logLines();
  expect(lines.length).toBeGreaterThan(5);
  expect(lines.some((l) => l.mod === "start" && /^platform ready in \d+ ms/.test(l.msg))).toBe(true);
  for (const l of lines) expect(Object.keys(l).slice(0, 4)).toEqual(["time", "level", "node", "mod"]);
});

it("logs each answer once: request id, trace id, user, action, status, duration; 4xx at info", async () => {
  const me = await json<{ id: number }>("GET", "/auth/me", "student");
  const ok = await call("GET", "/courses", "student");
  expect(ok.status).toBe(200);
  const missing = await call("GET", "/courses/999999", "student");
  expect(missing.status).toBe(404);

  const okId = ok.headers.get("x-request-id") ?? "";
  const okLine = await answerLine(okId);
  expect(okLine).toMatchObject({
    level: "info",
    mod: "api-gateway",
    request_id: okId,
    // Tracing is on: the request id is the trace id, and every line of the request carries it.
    trace_id: okId,
    method: "GET",
    route: "/api/v1/courses",
    path: "/api/v1/courses",
    action: "courses.list",
    status: 200,
    user_id: me.id,
    duration_ms: expect.any(Number) as number,
  });
  const missingId = missing.headers.get("x-request-id") ?? "";
  expect(await answerLine(missingId)).toMatchObject({ level: "info", status: 404, action: "courses.get" });
  // Once: one line per answer.
  expect(logLines().filter((l) => l.request_id === okId && typeof l.status === "number")).toHaveLength(1);
  // Internal calls (timers, the relay) start traces of their own, with a UUID request id: the same id, undashed.
  for (const l of logLines()) {
    if (typeof l.request_id === "string") expect(l.trace_id).toBe(l.request_id.replace(/-/g, ""));
  }
});

it("never writes the OIDC callback's code and state", async () => {
  const code = `code-${randomBytes(8).toString("hex")}`;
  const state = `state-${randomBytes(8).toString("hex")}`;
  const res = await fetch(`${base}/api/v1/auth/callback?code=${code}&state=${state}`, { redirect: "manual" });
  const line = await answerLine(res.headers.get("x-request-id") ?? "");
  expect(line.path).toBe("/api/v1/auth/callback?code=[redacted]&state=[redacted]");
  expect(node.output()).not.toContain(code);
  expect(node.output()).not.toContain(state);
});

it("logs a lab's lifecycle with instance and task ids", async () => {
  const student = await json<{ id: number }>("GET", "/auth/me", "student");
  const course = await json<{ id: number }>("POST", "/courses", "teacher", { name: "Logs" }, 201);
  await json("POST", `/courses/${course.id}/students`, "teacher", { student_ids: [student.id] });
  const lab = await json<{ id: number }>(
    "POST",
    "/labs",
    "teacher",
    {
      name: "Lab",
      docker_image: "registry.autolabs.local/labs/net:1.0",
      resources: { cpu: "500m", memory: "512Mi", storage: "1Gi" },
    },
    201,
  );
  await json("POST", `/labs/${lab.id}/submit`, "teacher");
  await json("POST", `/labs/${lab.id}/approve`, "admin");
  await json("POST", `/courses/${course.id}/labs`, "teacher", { lab_id: lab.id }, 201);
  const started = await json<{ id: number }>(
    "POST",
    "/lab-instances",
    "student",
    { lab_id: lab.id, course_id: course.id },
    202,
  );
  const id = started.id;
  await until(
    "running",
    async () => (await json<{ status: string }>("GET", `/lab-instances/${id}`, "student")).status === "running",
  );
  await json("POST", `/lab-instances/${id}/stop`, "student", undefined, 202);
  await until(
    "stopped",
    async () => (await json<{ status: string }>("GET", `/lab-instances/${id}`, "student")).status === "stopped",
  );

  const mine = () => logLines().filter((l) => l.instance_id === id);
  await until("the stopped line", () => Promise.resolve(mine().some((l) => l.to === "stopped")));
  const lines = mine();
  const accepted = lines.find((l) => l.event === "lab_start_accepted");
  expect(accepted).toMatchObject({ level: "info", instance_id: id, task_id: expect.any(String) as string });
  const startTask = accepted?.task_id;
  expect(lines.find((l) => l.event === "task_published" && l.task === "start_lab")).toMatchObject({
    task_id: startTask,
  });
  expect(lines.find((l) => l.to === "running")).toMatchObject({ from: "pending", task_id: startTask });
  const stopping = lines.find((l) => l.to === "stopping");
  expect(stopping).toMatchObject({ from: "running", enqueued_task_id: expect.any(String) as string });
  expect(lines.find((l) => l.event === "task_published" && l.task === "stop_lab")).toMatchObject({
    task_id: stopping?.enqueued_task_id,
  });
  expect(lines.find((l) => l.to === "stopped")).toMatchObject({
    from: "stopping",
    task_id: stopping?.enqueued_task_id,
  });
  const order = ["lab_start_accepted", "task_published", "running", "stopping", "stopped"].map((step) =>
    lines.findIndex((l) => l.event === step || l.to === step),
  );
  expect([...order].sort((a, b) => a - b)).toEqual(order);
});

describe("PostgreSQL unreachable", () => {
  afterEach(() => relay.up());

  it("fails /readyz naming the database, keeps /livez 200, and logs the 5xx answer at error", async () => {
    await relay.down();
    for (const url of [`${ops}/readyz`, `${base}/readyz`]) {
      const ready = await fetch(url);
      expect(ready.status).toBe(503);
      const body = (await ready.json()) as { status: string; checks: Record<string, string> };
      expect(body.status).toBe("not_ready");
      expect(body.checks.database).toMatch(/^failed/);
    }
    for (const url of [`${ops}/livez`, `${base}/livez`]) expect((await fetch(url)).status).toBe(200);

    // A request that needs the database: a teacher's course list, not cached after the writes above.
    const res = await call("GET", "/courses?limit=7", "teacher");
    expect(res.status).toBe(503);
    expect(await answerLine(res.headers.get("x-request-id") ?? "")).toMatchObject({ level: "error", status: 503 });

    await relay.up();
    await until("ready again", async () => (await fetch(`${ops}/readyz`)).status === 200, 20_000);
  });
});

describe("Redis down", () => {
  it("fails /readyz naming redis (sessions), never /livez", async () => {
    await redis.kill();
    try {
      expect((await fetch(`${ops}/livez`)).status).toBe(200);
      expect((await fetch(`${base}/livez`)).status).toBe(200);
      const ready = await fetch(`${ops}/readyz`);
      expect(ready.status).toBe(503);
      expect(((await ready.json()) as { checks: Record<string, string> }).checks).toMatchObject({
        database: "ok",
        redis: expect.stringMatching(/^failed/) as string,
      });
      // Bearer requests do not need Redis.
      expect((await call("GET", "/courses", "student")).status).toBe(200);
    } finally {
      await redis.start();
    }
    await until("ready again", async () => (await fetch(`${ops}/readyz`)).status === 200, 20_000);
  });
});
