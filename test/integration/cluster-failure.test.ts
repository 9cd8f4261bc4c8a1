/**
 * The production topology under failure: two gateway nodes (api-gateway + auth) and two domain nodes (the
 * other five services) as real OS processes over RabbitMQ, the Redis cacher, PostgreSQL; students list
 * courses and start labs on both gateways without pause while a part fails. PostgreSQL and RabbitMQ are
 * throwaway servers of this file (test/support/throwaway-servers.ts): the machine's shared ones are never
 * restarted. Each test counts what failed, and how, and checks what was lost: nothing. Every accepted
 * start (202) has exactly its instance row and its start_lab outbox row, and its Celery message reached the
 * queue exactly once (counted by task id by a consumer of the queue).
 */
import { randomBytes } from "node:crypto";
import { PROBE_HEADERS } from "../support/answer-recorder-env";
import amqp from "amqplib";
import { importJWK, SignJWT } from "jose";
import { QueryTypes, type Sequelize } from "sequelize";
import { celeryQueueDeclaration } from "../../services/tasks/celery-protocol";
import { createSequelize } from "../../platform/db";
import { migrateUp } from "../../platform/migrator";
import { startIdp, type TestIdp } from "../support/idp";
import { freePort } from "../support/net";
import { REDIS_URL } from "../support/platform";
import { redisUrl } from "../support/servers";
import { spawnNode, type SpawnedNode } from "../support/spawned-nodes";
import { startThrowawayPostgres, startThrowawayRabbit, type ThrowawayServer } from "../support/throwaway-servers";
import { ifAssigned } from "../support/cleanup";
import { errorText } from "../../services/tasks/relay.rules";

jest.setTimeout(240_000);

const namespace = `fail-${randomBytes(4).toString("hex")}`;
const STUDENTS = 40;
/** 40 × 30 = 1,200 (student, lab) pairs: more than the paced starters below use in the whole file. */
const LABS = 30;
/** Longer than any outage window here: a request without an answer by then hangs (and fails the test). */
const CLIENT_TIMEOUT_MS = 45_000;

let pg: ThrowawayServer;
let rabbit: ThrowawayServer;
let idp: TestIdp;
let db: Sequelize;
let queue: CeleryQueueWatch;
const gateways: (SpawnedNode & { url: string })[] = [];
const domains: (SpawnedNode & { nodeId: string })[] = [];
let commonEnv: Record<string, string>;
let students: string[] = [];
let teacher: string;
let admin: string;
let course: number;
const labs: number[] = [];
let nodeSeq = 0;
/** Each (student, lab) pair is started once in the whole file: a start never meets an active twin. */
let pairSeq = 0;

/* ───────────────────────────── the cluster ───────────────────────────── */

async function startGateway(): Promise<SpawnedNode & { url: string }> {
  const port = await freePort();
  const node = await spawnNode(`gateway-${++nodeSeq}`, {
    ...commonEnv,
    NODEID: `${namespace}-gw-${nodeSeq}`,
    SERVICES: "api-gateway,auth",
    PORT: String(port),
  });
  return Object.assign(node, { url: `http://127.0.0.1:${port}` });
}

async function startDomain(): Promise<SpawnedNode & { nodeId: string }> {
  const nodeId = `${namespace}-dom-${++nodeSeq}`;
  const node = await spawnNode(`domain-${nodeSeq}`, {
    ...commonEnv,
    NODEID: nodeId,
    SERVICES: "courses,labs,lab-instances,access,tasks",
  });
  return Object.assign(node, { nodeId });
}

/** Waits until `gateway` routes the domain services (its aliases are regenerated once they appear). */
async function routed(gateway: { url: string }, token: string): Promise<void> {
  const deadline = Date.now() + 30_000;
  for (;;) {
    const res = await fetch(`${gateway.url}/api/v1/courses?limit=1`, {
      headers: { authorization: `Bearer ${token}`, ...PROBE_HEADERS },
    });
    if (res.status === 200) return;
    if (Date.now() > deadline) throw new Error(`gateway ${gateway.url} still answers ${res.status} to /courses`);
    await sleep(100);
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

async function waitFor<T>(
  what: string,
  fn: () => T | false | undefined | Promise<T | false | undefined>,
  timeoutMs: number,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await Promise.resolve()
      .then(fn)
      .catch(() => undefined);
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(100);
  }
}

const headersOf = (token: string, body: unknown): Record<string, string> => ({
  authorization: `Bearer ${token}`,
  ...(body === undefined ? {} : { "content-type": "application/json" }),
});

async function api(base: string, method: string, path: string, token: string, body?: unknown) {
  const res = await fetch(`${base}/api/v1${path}`, {
    method,
    headers: headersOf(token, body),
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const json = (await res.json()) as Record<string, unknown>;
  return { status: res.status, body: json };
}

async function must(what: string, p: Promise<{ status: number; body: Record<string, unknown> }>, status: number) {
  const res = await p;
  if (res.status !== status) {
    throw new Error(`${what}: expected ${status}, got ${res.status} ${JSON.stringify(res.body)}`);
  }
  return res.body;
}

/** A student the demo IdP does not have: an access token signed with the IdP's own key. */
async function studentToken(n: number): Promise<string> {
  const jwk = idp.privateJwks().keys[0];
  const key = await importJWK(jwk, "RS256");
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({
    iss: idp.issuer,
    aud: "autolabs-api",
    sub: `33000000000000${String(n).padStart(4, "0")}`,
    email: `load-student-${n}@autolabs.local`,
    name: `Load Student ${n}`,
    iat: now,
    exp: now + 3600,
    "urn:zitadel:iam:org:project:roles": { student: { "300000000000000001": "autolabs.local" } },
  })
    .setProtectedHeader({ alg: "RS256", kid: jwk.kid, typ: "at+jwt" })
    .sign(key);
}

/* ───────────────────────────── the Celery queue, counted ───────────────────────────── */

/**
 * Consumes the Celery queue on the throwaway broker and counts each task id's first deliveries (a
 * redelivery of a message we did not get to ack is the broker's, not a second publish). Reconnects by
 * itself after a broker restart.
 */
class CeleryQueueWatch {
  readonly firstDeliveries = new Map<string, number>();
  private conn: amqp.ChannelModel | null = null;
  private closed = false;

  constructor(
    private readonly url: string,
    private readonly name: string,
  ) {}

  async open(): Promise<void> {
    const conn = await amqp.connect(this.url);
    conn.on("error", () => undefined);
    conn.on("close", () => {
      this.conn = null;
      if (!this.closed) void this.reopen();
    });
    const ch = await conn.createChannel();
    const d = celeryQueueDeclaration(this.name);
    await ch.assertExchange(d.exchange.name, d.exchange.type, d.exchange.options);
    await ch.assertQueue(d.queue.name, d.queue.options);
    await ch.bindQueue(d.binding.queue, d.binding.exchange, d.binding.routingKey);
    await ch.consume(this.name, (msg) => {
      if (!msg) return;
      const id = String(msg.properties.headers?.id ?? msg.properties.correlationId);
      if (!msg.fields.redelivered) this.firstDeliveries.set(id, (this.firstDeliveries.get(id) ?? 0) + 1);
      ch.ack(msg);
    });
    this.conn = conn;
  }

  private async reopen(): Promise<void> {
    while (!this.closed && !this.conn) {
      await this.open().catch(() => sleep(200));
    }
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.conn?.close().catch(() => undefined);
  }
}

/* ───────────────────────────── load ───────────────────────────── */

type Kind = "list" | "start";
interface Outcome {
  kind: Kind;
  /** When the request was sent and answered (ms since epoch). */
  sentAt: number;
  doneAt: number;
  gateway: string;
  /** HTTP status, or "hang" (no answer within CLIENT_TIMEOUT_MS), or "refused" (no connection at all). */
  status: number | "hang" | "refused" | "dropped";
  detail?: unknown;
  retryAfter?: string | null;
  instanceId?: number;
}

/**
 * Steady traffic: `listers` loops of `GET /courses?limit=50` and `starters` loops of lab starts, each
 * (student, lab) pair started once, spread round-robin over the gateways `targets()` names. A refused
 * connection goes to the next gateway, as a load balancer's retry would (the request never reached a node).
 */
function startLoad(targets: () => string[], opts: { listers: number; starters: number }) {
  const outcomes: Outcome[] = [];
  let stopped = false;
  let rr = 0;
  const nextPair = () => {
    const i = pairSeq++;
    return { student: i % students.length, lab: labs[Math.floor(i / students.length) % labs.length] };
  };
  const once = async (kind: Kind, build: () => { path: string; token: string; body?: unknown }) => {
    const { path, token, body } = build();
    const first = rr++;
    for (let attempt = 0; ; attempt++) {
      const list = targets();
      const gateway = list[(first + attempt) % list.length];
      const sentAt = Date.now();
      try {
        const res = await fetch(`${gateway}/api/v1${path}`, {
          method: body === undefined ? "GET" : "POST",
          headers: headersOf(token, body),
          body: body === undefined ? undefined : JSON.stringify(body),
          signal: AbortSignal.timeout(CLIENT_TIMEOUT_MS),
        });
        const json = (await res.json().catch(() => null)) as { id?: number; detail?: unknown } | null;
        outcomes.push({
          kind,
          sentAt,
          doneAt: Date.now(),
          gateway,
          status: res.status,
          detail: json?.detail,
          retryAfter: res.headers.get("retry-after"),
          instanceId: kind === "start" && res.status === 202 ? json?.id : undefined,
        });
        return;
      } catch (err) {
        const cause = (err as { cause?: { code?: string } }).cause?.code;
        // A reset of an idempotent GET is retried too, as an ingress does (proxy_next_upstream error): a draining
        // gateway closes its idle keep-alive sockets, and a request written on one just then never reached it.
        const reset = cause === "ECONNRESET" || cause === "UND_ERR_SOCKET";
        const retryable = cause === "ECONNREFUSED" || (reset && kind === "list");
        if (retryable && attempt < list.length) continue;
        const status =
          (err as Error).name === "TimeoutError" ? "hang" : cause === "ECONNREFUSED" ? "refused" : "dropped";
        outcomes.push({ kind, sentAt, doneAt: Date.now(), gateway, status, detail: String(cause ?? err) });
        return;
      }
    }
  };
  const loop = async (kind: Kind) => {
    while (!stopped) {
      if (kind === "list") {
        await once("list", () => ({ path: "/courses?limit=50", token: students[rr % students.length] }));
      } else {
        const { student, lab } = nextPair();
        const body = { lab_id: lab, course_id: course };
        await once("start", () => ({ path: "/lab-instances", token: students[student], body }));
      }
      // Steady, not flat out: the point is a failure under traffic, not a benchmark. Starts are paced so that
      // a fast machine does not use up the pairs (a pair started twice would meet its own active instance: 409).
      await sleep(kind === "list" ? 20 : 400);
    }
  };
  const loops = [
    ...Array.from({ length: opts.listers }, () => loop("list")),
    ...Array.from({ length: opts.starters }, () => loop("start")),
  ];
  const load = {
    outcomes,
    async stop(): Promise<Outcome[]> {
      stopped = true;
      await Promise.all(loops);
      runningLoads.delete(load);
      return outcomes;
    },
  };
  runningLoads.add(load);
  return load;
}

/** An outage of a shared part must not take a node down with it. */
function expectNodesAlive(): void {
  const dead = [...gateways, ...domains].filter((n) => n.exited());
  if (dead.length) {
    throw new Error(
      `node(s) died: ${dead.map((n) => `${n.name} (exit ${n.exitCode()}):\n${n.output().slice(-3000)}`).join("\n")}`,
    );
  }
}

/** Loads a failed test left running: stopped after each test, so the next one starts quiet. */
const runningLoads = new Set<{ stop(): Promise<Outcome[]> }>();
afterEach(async () => {
  await Promise.all([...runningLoads].map((l) => l.stop()));
});

const failed = (o: Outcome) => o.status !== 200 && o.status !== 202;
const summary = (list: Outcome[]) =>
  JSON.stringify(list.slice(0, 10).map(({ kind, status, detail, gateway }) => ({ kind, status, detail, gateway })));

/** While a part is down the API answers 503 with a detail and Retry-After: never a 500, never a hang. */
function expectOnly503(list: Outcome[]): void {
  const bad = list.filter((o) => failed(o) && !(o.status === 503 && typeof o.detail === "string" && o.retryAfter));
  if (!bad.length) return;
  // What the gateways logged for them (server faults are logged with the error's name and message).
  const logged = gateways.flatMap((g) =>
    g
      .output()
      .split("\n")
      .filter((l) => / → 5\d\d/.test(l) && !/→ 503/.test(l)),
  );
  const what = `${bad.length} failures other than 503 + detail + Retry-After`;
  throw new Error(`${what}: ${summary(bad)}\n${logged.slice(-10).join("\n")}`);
}

/* ───────────────────────────── nothing lost ───────────────────────────── */

interface InstanceAudit {
  id: number;
  celery_task_id: string | null;
  start_rows: number;
  start_task_id: string | null;
  published: boolean;
  /** Failed publish attempts of the start_lab row (a confirm that did not come in time counts as one). */
  attempts: number;
}

/**
 * Every instance row has exactly its one start_lab outbox row (same task id), every outbox row is
 * published, each published task reached the queue exactly once, and every accepted start has its row.
 * No (student, lab) pair has two instances (starts were never retried on purpose: one per pair).
 */
async function expectNothingLost(accepted: number[]): Promise<void> {
  const audit = () =>
    db.query<InstanceAudit>(
      `SELECT i.id, i.celery_task_id, count(o.id)::int AS start_rows, min(o.id::text) AS start_task_id,
              coalesce(bool_and(o.published_at IS NOT NULL), false) AS published,
              coalesce(max(o.attempts), 0) AS attempts
         FROM lab_instances i LEFT JOIN task_outbox o ON o.lab_instance_id = i.id AND o.task_name = 'start_lab'
        GROUP BY i.id ORDER BY i.id`,
      { type: QueryTypes.SELECT },
    );
  // The relay publishes what was accepted during the outage once it is over; wait for that, bounded.
  const rows = await waitFor(
    "every start_lab outbox row published and on the queue",
    async () => {
      const r = await audit();
      return r.every((x) => x.published && x.start_task_id && queue.firstDeliveries.has(x.start_task_id)) && r;
    },
    30_000,
  ).catch(async (err: unknown) => {
    const r = await audit();
    const missing = r.filter((x) => !x.published || !x.start_task_id || !queue.firstDeliveries.has(x.start_task_id));
    const sample = JSON.stringify(missing.slice(0, 5));
    throw new Error(`${errorText(err)}: ${missing.length} of ${r.length} not delivered: ${sample}`, { cause: err });
  });
  const ids = new Set(rows.map((r) => r.id));
  expect(accepted.filter((id) => !ids.has(id))).toEqual([]);
  expect(rows.filter((r) => r.start_rows !== 1 || r.start_task_id !== r.celery_task_id)).toEqual([]);
  // Exactly once, except after a publish whose confirm did not come within the publish timeout: the relay
  // cannot know whether the broker kept it and sends it again (at least once, by design: amqp-publisher.ts).
  const deliveries = (r: InstanceAudit) => queue.firstDeliveries.get(r.start_task_id ?? "") ?? 0;
  const resent = rows.filter((r) => deliveries(r) > 1 && r.attempts > 0);
  if (resent.length) {
    console.log(`${resent.length} start(s) sent again after an unconfirmed publish: ${JSON.stringify(resent)}`);
  }
  expect(rows.filter((r) => deliveries(r) !== 1 && !(deliveries(r) > 1 && r.attempts > 0))).toEqual([]);
  const orphans = await db.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM task_outbox o
      WHERE NOT EXISTS (SELECT 1 FROM lab_instances i WHERE i.id = o.lab_instance_id)`,
    { type: QueryTypes.SELECT },
  );
  expect(orphans[0].n).toBe(0);
  const twins = await db.query<{ n: number }>(
    "SELECT count(*)::int AS n FROM (SELECT student_id, lab_id FROM lab_instances GROUP BY 1, 2 HAVING count(*) > 1) t",
    { type: QueryTypes.SELECT },
  );
  expect(twins[0].n).toBe(0);
}

const acceptedIds = (list: Outcome[]) => list.flatMap((o) => (o.instanceId === undefined ? [] : [o.instanceId]));

/* ───────────────────────────── setup ───────────────────────────── */

beforeAll(async () => {
  const [pgUp, rabbitUp, idpUp] = await Promise.allSettled([
    startThrowawayPostgres(),
    startThrowawayRabbit(),
    startIdp(),
  ]);
  // Kept even if another one failed, so afterAll stops it.
  if (pgUp.status === "fulfilled") pg = pgUp.value;
  if (rabbitUp.status === "fulfilled") rabbit = rabbitUp.value;
  if (idpUp.status === "fulfilled") idp = idpUp.value;
  for (const r of [pgUp, rabbitUp, idpUp]) if (r.status === "rejected") throw r.reason;
  db = createSequelize(pg.url, { poolMax: 2 });
  await migrateUp(db);
  const celeryQueue = `${namespace}-celery`;
  queue = new CeleryQueueWatch(rabbit.url, celeryQueue);
  await queue.open();
  commonEnv = {
    DATABASE_URL: pg.url,
    TRANSPORTER: rabbit.url,
    CACHER: REDIS_URL,
    REDIS_URL,
    NAMESPACE: namespace,
    OIDC_ISSUER: idp.issuer,
    CELERY_BROKER_URL: rabbit.url,
    CELERY_RESULT_BACKEND: redisUrl(9),
    CELERY_QUEUE: celeryQueue,
    MAX_ACTIVE_INSTANCES_PER_STUDENT: "100",
    // Forty students starting a lab every 50 ms between them: the per-student lab-start limit would refuse most.
    RATE_LIMIT_RPS: "0",
    RATE_LIMIT_LAB_STARTS_PER_MIN: "0",
    LOGLEVEL: process.env.TEST_LOGLEVEL ?? "warn",
  };
  // Settled, not all: a node that did start must be in the lists afterAll stops, even if its twin failed.
  const [g1, g2, d1, d2] = await Promise.allSettled([startGateway(), startGateway(), startDomain(), startDomain()]);
  for (const r of [g1, g2]) if (r.status === "fulfilled") gateways.push(r.value);
  for (const r of [d1, d2]) if (r.status === "fulfilled") domains.push(r.value);
  for (const r of [g1, g2, d1, d2]) if (r.status === "rejected") throw r.reason;

  teacher = (await idp.getToken("teacher")).accessToken;
  admin = (await idp.getToken("admin")).accessToken;
  await Promise.all(gateways.map((g) => routed(g, teacher)));
  const g = gateways[0].url;
  students = await Promise.all(Array.from({ length: STUDENTS }, (_, i) => studentToken(i)));
  const studentIds = [];
  for (const s of students) studentIds.push((await must("me", api(g, "GET", "/auth/me", s), 200)).id);
  course = (await must("course", api(g, "POST", "/courses", teacher, { name: "Failure drills" }), 201)).id as number;
  await must("assign", api(g, "POST", `/courses/${course}/students`, teacher, { student_ids: studentIds }), 200);
  for (let i = 0; i < LABS; i++) {
    const body = {
      name: `Drill ${i}`,
      docker_image: "registry.autolabs.local/labs/net:1.0",
      resources: { cpu: "500m", memory: "512Mi", storage: "1Gi" },
    };
    const lab = (await must("lab", api(g, "POST", "/labs", teacher, body), 201)).id as number;
    await must("submit", api(g, "POST", `/labs/${lab}/submit`, teacher), 200);
    await must("approve", api(g, "POST", `/labs/${lab}/approve`, admin), 200);
    await must("attach", api(g, "POST", `/courses/${course}/labs`, teacher, { lab_id: lab }), 201);
    labs.push(lab);
  }
}, 180_000);

afterAll(async () => {
  await Promise.allSettled([...gateways, ...domains].map((n) => n.stop(5_000)));
  await ifAssigned(queue)?.close();
  await ifAssigned(db)
    ?.close()
    .catch(() => undefined);
  await Promise.allSettled([ifAssigned(pg)?.destroy(), ifAssigned(rabbit)?.destroy(), ifAssigned(idp)?.stop()]);
});

/* ───────────────────────────── the drills ───────────────────────────── */

it("SIGKILL of a domain node: requests fail over to its twin once the gateways notice; no start lost", async () => {
  const both = gateways.map((g) => g.url);
  const load = startLoad(() => both, { listers: 4, starters: 2 });
  await sleep(2_000);
  const victim = domains.shift()!;
  const killedAt = Date.now();
  const disconnected = new RegExp(`Node '${victim.nodeId}' disconnected`);
  let noticedAt: number;
  let outcomes: Outcome[];
  try {
    await victim.signal("SIGKILL");
    noticedAt = Math.max(...(await Promise.all(gateways.map((g) => g.waitForLine(disconnected, 60_000)))));
    await sleep(3_000);
  } finally {
    outcomes = await load.stop();
    // The next drills need the full topology, whatever happened here.
    domains.push(await startDomain());
  }

  const failures = outcomes.filter(failed);
  const afterNotice = outcomes.filter((o) => o.sentAt > noticedAt && failed(o));
  console.log(
    `domain SIGKILL: ${outcomes.length} requests (${outcomes.filter((o) => o.kind === "start").length} starts), ` +
      `${failures.length} failed, ` +
      `window ${noticedAt - killedAt} ms from kill to both gateways noticing, ${afterNotice.length} failed after`,
  );
  expect(outcomes.filter((o) => o.sentAt > noticedAt).length).toBeGreaterThan(0);
  expect(afterNotice).toEqual([]);
  expectOnly503(failures);
  await expectNothingLost(acceptedIds(outcomes));
});

it("a gateway SIGTERMed under load: in-flight requests complete, new ones go to the other gateway", async () => {
  const [leaving, staying] = gateways;
  const live = [leaving.url, staying.url];
  const load = startLoad(() => live, { listers: 6, starters: 2 });
  await sleep(2_000);
  const termAt = Date.now();
  let goneAt: number;
  let outcomes: Outcome[];
  try {
    await leaving.signal("SIGTERM");
    goneAt = Date.now();
    await sleep(2_000);
  } finally {
    outcomes = await load.stop();
    if (!leaving.exited()) await leaving.stop(1_000);
    gateways.splice(gateways.indexOf(leaving), 1, await startGateway());
    await routed(gateways[0], teacher);
  }

  const inFlight = outcomes.filter((o) => o.gateway === leaving.url && o.sentAt <= termAt && o.doneAt >= termAt);
  const afterGone = outcomes.filter((o) => o.sentAt > goneAt);
  console.log(
    `gateway SIGTERM: ${outcomes.length} requests, ${inFlight.length} in flight at the signal, ` +
      `stop took ${goneAt - termAt} ms, ` +
      `${outcomes.filter(failed).length} failed`,
  );
  expect(outcomes.filter(failed)).toEqual([]);
  // It stopped by itself, not at start.ts's hard-stop timer (exit code 1).
  expect(leaving.exitCode()).toBe(0);
  expect(afterGone.length).toBeGreaterThan(0);
  expect(afterGone.every((o) => o.gateway === staying.url)).toBe(true);
  await expectNothingLost(acceptedIds(outcomes));
});

it("RabbitMQ restarted under load: 503 while unreachable, reconnects, every start published once", async () => {
  const both = gateways.map((g) => g.url);
  const load = startLoad(() => both, { listers: 4, starters: 2 });
  await sleep(2_000);
  const downAt = Date.now();
  await rabbit.stop();
  await sleep(3_000);
  await rabbit.start();
  const upAt = Date.now();
  // Reconnected by itself: both gateways serve a remote call again.
  const recoveredAt = await waitFor(
    "both gateways to answer /courses again",
    async () => {
      const ask = (g: { url: string }) => api(g.url, "GET", "/courses?limit=1", students[0]).catch(() => null);
      const answers = await Promise.all(gateways.map(ask));
      return answers.every((a) => a?.status === 200) && Date.now();
    },
    60_000,
  ).catch((err: unknown) => {
    throw new Error(`${errorText(err)}\n${gateways.map((g) => `${g.name}:\n${g.output().slice(-4000)}`).join("\n")}`);
  });
  await sleep(3_000);
  const outcomes = await load.stop();

  const failures = outcomes.filter(failed);
  console.log(
    `RabbitMQ restart: ${outcomes.length} requests, ${failures.length} failed (down ${upAt - downAt} ms, ` +
      `recovered ${recoveredAt - upAt} ms after it was back), ${acceptedIds(outcomes).length} starts accepted`,
  );
  expectNodesAlive();
  expect(failures.length).toBeGreaterThan(0);
  expectOnly503(failures);
  expect(outcomes.filter((o) => o.sentAt > recoveredAt + 1_000 && failed(o))).toEqual([]);
  await expectNothingLost(acceptedIds(outcomes));
});

it("PostgreSQL restarted under load: 503 while it is down, the pool recovers, no half-written row", async () => {
  const both = gateways.map((g) => g.url);
  const load = startLoad(() => both, { listers: 4, starters: 2 });
  await sleep(2_000);
  const downAt = Date.now();
  await pg.stop();
  await sleep(3_000);
  await pg.start();
  const upAt = Date.now();
  const recoveredAt = await waitFor(
    "starts to be accepted again",
    () => {
      const pending = load.outcomes.filter((o) => o.kind === "start" && o.sentAt > upAt && o.status === 202);
      return pending.length > 0 && pending[0].doneAt;
    },
    30_000,
  );
  await sleep(3_000);
  const outcomes = await load.stop();

  const failures = outcomes.filter(failed);
  console.log(
    `PostgreSQL restart: ${outcomes.length} requests, ${failures.length} failed (down ${upAt - downAt} ms, ` +
      `first start accepted ${recoveredAt - upAt} ms after it was back)`,
  );
  expectNodesAlive();
  expect(failures.length).toBeGreaterThan(0);
  expectOnly503(failures);
  expect(outcomes.filter((o) => o.sentAt > recoveredAt + 1_000 && failed(o))).toEqual([]);
  await expectNothingLost(acceptedIds(outcomes));
});
