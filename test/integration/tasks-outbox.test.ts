/**
 * The tasks service against the real thing: PostgreSQL (a fresh database per block), RabbitMQ, Redis db 6
 * and a real Celery worker (Debian's python3-celery). Only the OTHER team's lab-instances service is a
 * test double (registerApplierDouble: records applyTaskResult calls).
 */
import { randomUUID } from "crypto";
import Redis from "ioredis";
import { encodeCeleryTask, celeryTaskFullName, resultKey } from "../../services/tasks/celery-protocol";
import { AMQP_URL, createTestDatabase, startNode, type PlatformNode, type TestDatabase } from "../support/platform";
import { FAILING_LAB_ID, FAILING_LAB_MESSAGE, startCeleryWorker, type CeleryWorker } from "../support/celery-worker";
import {
  QueueReader,
  TcpRelay,
  allPublished,
  cleanupLab,
  enqueue,
  outboxRows,
  registerApplierDouble,
  seedInstances,
  startLab,
  stopLab,
  waitFor,
  type ApplierDouble,
  type ReadMessage,
} from "../support/tasks";
import { DEFAULT_TASKS_SETTINGS, type TasksHealth, type TasksSettings } from "../../services/tasks/tasks.service";
import { systemPrincipal } from "../../lib/principal";
import { enqueueTask } from "../../services/tasks/tasks.contract";
import { ifAssigned } from "../support/cleanup";

const RESULTS_URL = "redis://127.0.0.1:6379/6";
const RUN = `${process.pid}.${randomUUID().slice(0, 8)}`;
const queueName = (what: string) => `autolabs.test.tasks.${what}.${RUN}`;
const PREFIX = "celery_workers";

jest.setTimeout(120_000);

function nodeEnv(queue: string, extra: Record<string, string> = {}): Record<string, string> {
  return {
    SERVICES: "tasks",
    CELERY_BROKER_URL: AMQP_URL,
    CELERY_RESULT_BACKEND: RESULTS_URL,
    CELERY_QUEUE: queue,
    CELERY_TASK_PREFIX: PREFIX,
    DATABASE_POOL_MAX: "5",
    ...extra,
  };
}

function health(node: PlatformNode): Promise<TasksHealth> {
  return node.broker.call("tasks.health", {}, { meta: { user: systemPrincipal("test") } });
}

const idOf = (m: ReadMessage) => m.properties.correlationId as string;

function tasksSettings(node: PlatformNode): TasksSettings {
  return (node.broker.getLocalService("tasks") as unknown as { settings: TasksSettings }).settings;
}

let reader: QueueReader;
beforeAll(async () => {
  reader = await QueueReader.open(AMQP_URL);
});
afterAll(async () => {
  await ifAssigned(reader)?.close();
});

describe("relay", () => {
  const Q = queueName("relay");
  let db: TestDatabase;
  let a: PlatformNode;
  let b: PlatformNode | undefined;

  beforeAll(async () => {
    db = await createTestDatabase();
    a = await startNode(db.url, nodeEnv(Q, { NODEID: "relay-a" }));
  });
  afterAll(async () => {
    await b?.stop();
    await ifAssigned(a)?.stop();
    await ifAssigned(db)?.drop();
  });

  it("publishes enqueued rows once, byte for byte in Celery's format, on the event (no poll wait)", async () => {
    const [i1, i2, i3] = await seedInstances(a.sequelize, 3);
    const specs = [startLab(i1, 3, 9), stopLab(i2), cleanupLab(i3)];
    const t0 = Date.now();
    const ids = await enqueue(a.sequelize, Q, specs, [a.broker]);
    await waitFor("published", () => allPublished(a.sequelize, ids), 10_000, 5);
    const latency = Date.now() - t0;
    console.log(`enqueue (commit + tasks.enqueued) → published_at: ${latency} ms for 3 rows`);

    const msgs = await reader.drain(Q);
    expect(msgs.map(idOf).sort()).toEqual([...ids].sort());
    for (const [i, spec] of specs.entries()) {
      const m = msgs.find((x) => idOf(x) === ids[i])!;
      const expected = encodeCeleryTask({
        id: ids[i],
        task: celeryTaskFullName(PREFIX, spec.name),
        kwargs: { ...spec.kwargs },
        queue: Q,
        origin: "relay-a",
      });
      expect(m.content.toString("utf8")).toBe(expected.content.toString("utf8"));
      expect(m.properties).toMatchObject({
        contentType: "application/json",
        contentEncoding: "utf-8",
        deliveryMode: 2,
        correlationId: ids[i],
        priority: 0,
      });
      expect(m.headers).toEqual({
        lang: "py",
        task: `${PREFIX}.${spec.name}`,
        id: ids[i],
        shadow: null,
        eta: null,
        expires: null,
        group: null,
        group_index: null,
        retries: 0,
        timelimit: [null, null],
        root_id: ids[i],
        parent_id: null,
        argsrepr: "()",
        kwargsrepr: expected.options.headers.kwargsrepr,
        origin: "relay-a",
        ignore_result: false,
      });
    }
    const rows = await outboxRows(a.sequelize, ids);
    expect(rows.every((r) => r.attempts === 0 && r.last_error === null)).toBe(true);
    expect(await health(a)).toMatchObject({ broker: "connected", broker_error: null, outbox: { unpublished: 0 } });
  });

  it("without the event, the poll publishes within about a second", async () => {
    const [inst] = await seedInstances(a.sequelize, 1);
    const t0 = Date.now();
    const ids = await enqueue(a.sequelize, Q, [startLab(inst)]); // no tasks.enqueued
    await waitFor("published by the poll", () => allPublished(a.sequelize, ids), 5_000, 5);
    const latency = Date.now() - t0;
    console.log(`enqueue (no event) → published_at: ${latency} ms (poll interval 1 s)`);
    expect((await reader.drain(Q)).map(idOf)).toEqual(ids);
  });

  it("two relay nodes racing over 100 rows publish each exactly once", async () => {
    b = await startNode(db.url, nodeEnv(Q, { NODEID: "relay-b" }));
    // Batches of 10 instead of 100, so both relays have to claim rows while the other holds some.
    // (Each service instance has its own deep copy of the settings: the mixin merge clones the schema.)
    for (const n of [a, b]) tasksSettings(n).relay.batchSize = 10;
    expect(DEFAULT_TASKS_SETTINGS.relay.batchSize).toBe(100);
    const inst = await seedInstances(a.sequelize, 100);
    const ids = await enqueue(
      a.sequelize,
      Q,
      inst.map((i) => startLab(i)),
      [a.broker, b.broker],
    );
    await waitFor("100 published", () => allPublished(a.sequelize, ids), 20_000, 20);
    const msgs = await reader.drain(Q);
    expect(msgs).toHaveLength(100);
    expect(new Set(msgs.map(idOf))).toEqual(new Set(ids));
    const byOrigin: Record<string, number> = {};
    for (const m of msgs) byOrigin[String(m.headers.origin)] = (byOrigin[String(m.headers.origin)] ?? 0) + 1;
    console.log(`100 rows, two relays: published by ${JSON.stringify(byOrigin)}`);
  });

  it.each([100, 500])("throughput: 1000 rows, batches of %i", async (batchSize) => {
    await b?.stop();
    b = undefined;
    tasksSettings(a).relay.batchSize = batchSize;
    const inst = await seedInstances(a.sequelize, 1000);
    const t0 = Date.now();
    const ids = await enqueue(
      a.sequelize,
      Q,
      inst.map((i) => stopLab(i)),
    );
    const tEnqueued = Date.now();
    await a.broker.broadcast("tasks.enqueued");
    await waitFor("1000 published", () => allPublished(a.sequelize, ids), 60_000, 10);
    const tPublished = Date.now();
    const msgs = await reader.drain(Q);
    expect(msgs).toHaveLength(1000);
    expect(new Set(msgs.map(idOf)).size).toBe(1000);
    const ms = tPublished - tEnqueued;
    console.log(
      `1000 rows: enqueue ${tEnqueued - t0} ms (one transaction); relay published all in ${ms} ms ` +
        `(${Math.round((1000 / ms) * 1000)} msg/s, one node, batches of ${batchSize}, confirms awaited per batch)`,
    );
    tasksSettings(a).relay.batchSize = DEFAULT_TASKS_SETTINGS.relay.batchSize;
  });

  it("a stop_lab never overtakes an older, backing-off start_lab of the same instance", async () => {
    const [inst] = await seedInstances(a.sequelize, 1);
    const start = startLab(inst);
    // As if its first publish had failed: due again only in an hour. Held in the enqueuing transaction, so the
    // relay never sees it due before the hold.
    const startId = await a.sequelize.transaction(async (transaction) => {
      const id = await enqueueTask(a.sequelize, transaction, { ...start, labInstanceId: inst, queue: Q });
      await a.sequelize.query(
        `UPDATE task_outbox SET next_attempt_at = now() + interval '1 hour', attempts = 1 WHERE id = $id`,
        { bind: { id }, transaction },
      );
      return id;
    });
    const [stopId] = await enqueue(a.sequelize, Q, [stopLab(inst)], [a.broker]);
    await new Promise((r) => setTimeout(r, 1_500));
    expect(await outboxRows(a.sequelize, [stopId])).toMatchObject([{ published_at: null }]);
    await a.sequelize.query(`UPDATE task_outbox SET next_attempt_at = now() WHERE id = $id`, { bind: { id: startId } });
    await a.broker.broadcast("tasks.enqueued");
    await waitFor("both published", () => allPublished(a.sequelize, [startId, stopId]));
    const msgs = await reader.drain(Q);
    expect(msgs.map(idOf)).toEqual([startId, stopId]);
  });
});

describe("broker outage", () => {
  const Q = queueName("outage");
  let db: TestDatabase;
  let node: PlatformNode | undefined;
  let relay: TcpRelay;

  beforeAll(async () => {
    db = await createTestDatabase();
    await reader.declare(Q);
    relay = await TcpRelay.create({ host: "127.0.0.1", port: Number(new URL(AMQP_URL).port || 5672) });
  });
  afterAll(async () => {
    await node?.stop();
    await ifAssigned(relay)?.down();
    await ifAssigned(db)?.drop();
  });

  it("with RabbitMQ unreachable the service starts, rows wait and record their attempts; a node that can reach it publishes each once", async () => {
    node = await startNode(
      db.url,
      nodeEnv(Q, { NODEID: "dead-broker", CELERY_BROKER_URL: "amqp://guest:guest@127.0.0.1:1" }),
    );
    const inst = await seedInstances(node.sequelize, 20);
    const ids = await enqueue(
      node.sequelize,
      Q,
      inst.map((i) => startLab(i)),
      [node.broker],
    );
    const rows = await waitFor(
      "attempts to grow",
      async () => {
        const r = await outboxRows(node!.sequelize, ids);
        return r.every((x) => x.attempts >= 2) && r;
      },
      20_000,
      100,
    );
    for (const r of rows) {
      expect(r.published_at).toBeNull();
      expect(r.last_error).toMatch(/ECONNREFUSED/);
    }
    expect(await reader.count(Q)).toBe(0);
    expect(await health(node)).toMatchObject({ broker: "down", outbox: { unpublished: 20 } });
    const attemptsBefore = rows.map((r) => r.attempts);
    console.log(
      `dead broker: attempts after ~${Math.round((Date.now() - rows[0].created_at.getTime()) / 1000)} s: ${Math.min(...attemptsBefore)}..${Math.max(...attemptsBefore)}`,
    );

    await node.stop();
    node = await startNode(db.url, nodeEnv(Q, { NODEID: "good-broker" }));
    const t0 = Date.now();
    await waitFor("published after the outage", () => allPublished(node!.sequelize, ids), 20_000, 20);
    console.log(`outage over (new node): all 20 published ${Date.now() - t0} ms after start`);
    const msgs = await reader.drain(Q);
    expect(msgs.map(idOf).sort()).toEqual([...ids].sort());
    const after = await outboxRows(node.sequelize, ids);
    expect(after.every((r) => r.last_error === null && r.attempts >= 2)).toBe(true);
    await node.stop();
    node = undefined;
  });

  it("one node reconnects on its own when the broker comes back, and after losing an established connection", async () => {
    node = await startNode(
      db.url,
      nodeEnv(Q, { NODEID: "via-relay", CELERY_BROKER_URL: `amqp://guest:guest@127.0.0.1:${relay.port}` }),
    );
    const inst = await seedInstances(node.sequelize, 20);
    const first = await enqueue(
      node.sequelize,
      Q,
      inst.slice(0, 10).map((i) => startLab(i)),
      [node.broker],
    );
    await waitFor(
      "failed attempts",
      async () => (await outboxRows(node!.sequelize, first)).every((r) => r.attempts >= 1),
      10_000,
      50,
    );
    expect(await reader.count(Q)).toBe(0);

    await relay.up();
    const t0 = Date.now();
    await waitFor("published after reconnect", () => allPublished(node!.sequelize, first), 30_000, 50);
    console.log(`broker back: same node published the waiting rows ${Date.now() - t0} ms later`);
    expect((await reader.drain(Q)).map(idOf).sort()).toEqual([...first].sort());
    expect((await health(node)).broker).toBe("connected");

    // Cut the established connection while idle, then enqueue: the node notices and reconnects.
    await relay.down();
    await waitFor("broker down in health", async () => (await health(node!)).broker === "down", 10_000, 50);
    await relay.up();
    const second = await enqueue(
      node.sequelize,
      Q,
      inst.slice(10).map((i) => startLab(i)),
      [node.broker],
    );
    await waitFor("published after a lost connection", () => allPublished(node!.sequelize, second), 30_000, 50);
    expect((await reader.drain(Q)).map(idOf).sort()).toEqual([...second].sort());
  });
});

describe("result backend outage", () => {
  const Q = queueName("redis-down");
  let db: TestDatabase;
  let node: PlatformNode | undefined;

  beforeAll(async () => {
    db = await createTestDatabase();
  });
  afterAll(async () => {
    await node?.stop();
    await reader.declare(Q).catch(() => undefined); // registers Q for deletion
    await ifAssigned(db)?.drop();
  });

  it("with Redis unreachable the service starts, reports it, still publishes, and stops", async () => {
    node = await startNode(
      db.url,
      nodeEnv(Q, { NODEID: "redis-down", CELERY_RESULT_BACKEND: "redis://127.0.0.1:1/6" }),
    );
    await waitFor(
      "result backend down in health",
      async () => (await health(node!)).result_backend === "down",
      10_000,
      50,
    );
    const [inst] = await seedInstances(node.sequelize, 1);
    const ids = await enqueue(node.sequelize, Q, [startLab(inst)], [node.broker]);
    await waitFor("published", () => allPublished(node!.sequelize, ids));
    // Stopping must not hang on the dead result backend (a hang fails on the test's timeout).
    await node.stop();
    node = undefined;
  });
});

describe("results from a real Celery worker", () => {
  const Q = queueName("results");
  const Q2 = queueName("results-late");
  let db: TestDatabase;
  let node: PlatformNode | undefined;
  let worker: CeleryWorker | undefined;
  let worker2: CeleryWorker | undefined;
  let redis: Redis;
  let double: ApplierDouble | undefined;
  const keys: string[] = [];

  beforeAll(async () => {
    db = await createTestDatabase();
    redis = new Redis(RESULTS_URL);
    worker = await startCeleryWorker({ queue: Q, resultBackend: RESULTS_URL, taskPrefix: PREFIX });
  });
  afterAll(async () => {
    await node?.stop();
    await worker?.stop();
    await worker2?.stop();
    if (keys.length > 0) await redis.del(...keys).catch(() => undefined);
    ifAssigned(redis)?.disconnect();
    await reader.declare(Q2).catch(() => undefined); // registers Q2 for deletion
    await ifAssigned(db)?.drop();
  });

  it("SUCCESS and FAILURE reach lab-instances.applyTaskResult, as the system, and the rows are settled", async () => {
    node = await startNode(db.url, nodeEnv(Q, { NODEID: "results-a" }));
    double = await registerApplierDouble(node.broker);
    const [i1, i2, i3] = await seedInstances(node.sequelize, 3);
    const t0 = Date.now();
    const ids = await enqueue(
      node.sequelize,
      Q,
      [startLab(i1, 7, 1001), startLab(i2, FAILING_LAB_ID, 1001), stopLab(i3)],
      [node.broker],
    );
    keys.push(...ids.map(resultKey));
    await waitFor("3 results applied", () => double!.calls.length >= 3, 30_000, 20);
    console.log(`enqueue → result applied (real worker, 3 tasks): ${Date.now() - t0} ms`);
    const call = (id: string) => double!.calls.find((c) => c.task_id === id);
    expect(call(ids[0])).toEqual({
      task_id: ids[0],
      task_name: "start_lab",
      lab_instance_id: i1,
      status: "SUCCESS",
      result: { status: "running", k8s_pod_name: `lab-${i1}`, connection_url: `https://labs.example.test/i/${i1}` },
      principal: { kind: "system", reason: expect.any(String) },
    });
    expect(call(ids[1])).toEqual({
      task_id: ids[1],
      task_name: "start_lab",
      lab_instance_id: i2,
      status: "FAILURE",
      error: `RuntimeError: ${FAILING_LAB_MESSAGE}`,
      principal: { kind: "system", reason: expect.any(String) },
    });
    expect(call(ids[2])).toMatchObject({
      task_name: "stop_lab",
      lab_instance_id: i3,
      status: "SUCCESS",
      result: { status: "stopped" },
    });
    await waitFor("rows settled", async () =>
      (await outboxRows(node!.sequelize, ids)).every((r) => r.result_applied_at !== null),
    );
    const rows = await outboxRows(node.sequelize, ids);
    expect(rows.map((r) => [r.id, r.result_status]).sort()).toEqual(
      [
        [ids[0], "SUCCESS"],
        [ids[1], "FAILURE"],
        [ids[2], "SUCCESS"],
      ].sort(),
    );
    // Push and reconcile both saw these results: still one call per task.
    await new Promise((r) => setTimeout(r, 3_500));
    expect(double.calls).toHaveLength(3);
  });

  it("lab-instances refusing: the result waits and is applied once it answers", async () => {
    double!.failNext(2);
    const before = double!.calls.length;
    const [inst] = await seedInstances(node!.sequelize, 1);
    const [id] = await enqueue(node!.sequelize, Q, [startLab(inst)], [node!.broker]);
    keys.push(resultKey(id));
    const t0 = Date.now();
    await waitFor("applied after refusals", () => double!.calls.length > before, 30_000, 50);
    console.log(`result applied after 2 refused calls: ${Date.now() - t0} ms`);
    const [row] = await waitFor("row settled", async () => {
      const r = await outboxRows(node!.sequelize, [id]);
      return r[0]?.result_applied_at ? r : null;
    });
    expect(row).toMatchObject({ result_status: "SUCCESS", result_attempts: 2, result_error: null });
  });

  it("a result published while no tasks node listens is applied by the reconcile after restart", async () => {
    // Q2 has no worker yet: the node publishes, then goes away before any result exists.
    const [inst] = await seedInstances(node!.sequelize, 1);
    const [id] = await enqueue(node!.sequelize, Q2, [startLab(inst, 8, 2002)], [node!.broker]);
    keys.push(resultKey(id));
    await waitFor("published", () => allPublished(node!.sequelize, [id]));
    await node!.stop();
    node = undefined;

    worker2 = await startCeleryWorker({ queue: Q2, resultBackend: RESULTS_URL, taskPrefix: PREFIX });
    await waitFor("the worker's result in Redis", () => redis.get(resultKey(id)), 30_000, 50);
    await worker2.stop();
    worker2 = undefined;

    const t0 = Date.now();
    node = await startNode(db.url, nodeEnv(Q, { NODEID: "results-b" }));
    const late = await registerApplierDouble(node.broker);
    await waitFor("reconciled", () => late.calls.find((c) => c.task_id === id), 15_000, 50);
    console.log(`restart: missed result applied by the reconcile ${Date.now() - t0} ms after the new node started`);
    expect(late.calls.find((c) => c.task_id === id)).toMatchObject({
      task_name: "start_lab",
      lab_instance_id: inst,
      status: "SUCCESS",
      result: { status: "running", k8s_pod_name: `lab-${inst}` },
    });
    expect((await outboxRows(node.sequelize, [id]))[0]).toMatchObject({ result_status: "SUCCESS" });
  });
});
