/**
 * Embedded mode of the tasks service: no CELERY_* variables, so the simulated runner takes the relay's
 * encoded messages and writes Celery-shaped results that the ordinary result consumer applies. On the real
 * PostgreSQL and on PGlite (the embedded database: one query at a time, a transaction blocks every other
 * connection, so any query that forgets its transaction would hang here). The OTHER team's lab-instances
 * service is a test double recording applyTaskResult calls.
 */
import { mkdtempSync, rmSync } from "fs";
import { tmpdir } from "os";
import path from "path";
import { createTestDatabase, startNode, type PlatformNode } from "../support/platform";
import { startEmbeddedPostgres } from "../../dev/embedded-postgres";
import { migrateUp } from "../../platform/migrator";
import { createSequelize } from "../../platform/db";
import { SIMULATED_FAILING_LAB_ID, SIMULATED_FAILURE_MESSAGE } from "../../services/tasks/simulated-runner";
import { systemPrincipal } from "../../lib/principal";
import type { TasksHealth } from "../../services/tasks/tasks.service";
import {
  allPublished,
  enqueue,
  outboxRows,
  registerApplierDouble,
  seedInstances,
  startLab,
  stopLab,
  waitFor,
  type ApplierDouble,
} from "../support/tasks";
import { freePort } from "../support/net";
import { ifAssigned } from "../support/cleanup";

jest.setTimeout(120_000);

// No CELERY_BROKER_URL / CELERY_RESULT_BACKEND: startNode reads only this env, not the process's.
// Pool of 5 fits PGlite's 12 connection slots.
const ENV = (nodeId: string) => ({ SERVICES: "tasks", NODEID: nodeId, DATABASE_POOL_MAX: "5" });

interface Backend {
  url: string;
  drop(): Promise<void>;
}

async function pglite(): Promise<Backend> {
  const dir = mkdtempSync(path.join(tmpdir(), "autolabs-tasks-"));
  const server = await startEmbeddedPostgres({ dataDir: dir, port: await freePort(), maxConnections: 12 });
  const sequelize = createSequelize(server.url, { poolMax: 2 });
  await migrateUp(sequelize);
  await sequelize.close();
  return {
    url: server.url,
    async drop() {
      await server.stop();
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

describe.each([
  ["PostgreSQL", createTestDatabase],
  ["PGlite", pglite],
] as const)("simulated runner on %s", (name, makeDb) => {
  let db: Backend;
  let node: PlatformNode | undefined;
  let double: ApplierDouble;

  beforeAll(async () => {
    db = await makeDb();
    node = await startNode(db.url, ENV("embedded"), { pglite: name === "PGlite" });
    double = await registerApplierDouble(node.broker);
  });
  afterAll(async () => {
    await node?.stop();
    await ifAssigned(db)?.drop();
  });

  it("reports itself as simulated", async () => {
    const h = await node!.broker.call<TasksHealth, Record<string, never>>(
      "tasks.health",
      {},
      { meta: { user: systemPrincipal("test") } },
    );
    expect(h).toMatchObject({ broker: "simulated", broker_error: null, result_backend: "simulated" });
  });

  it("tasks.health is for the system only", async () => {
    await expect(
      node!.broker.call("tasks.health", {}, { meta: { user: { kind: "user", id: 1, role: "admin" } } }),
    ).rejects.toMatchObject({ code: 403 });
    await expect(node!.broker.call("tasks.health", {})).rejects.toMatchObject({ code: 401 });
  });

  it("an enqueued start_lab comes back as SUCCESS with a pod name and a simulated URL within seconds", async () => {
    const [inst] = await seedInstances(node!.sequelize, 1);
    const t0 = Date.now();
    const [id] = await enqueue(node!.sequelize, "celery", [startLab(inst)], [node!.broker]);
    const call = await waitFor("applied", () => double.calls.find((c) => c.task_id === id), 6_000, 20);
    console.log(`${name}: simulated start_lab: enqueue → applied in ${Date.now() - t0} ms (simulated run time 1.5 s)`);
    expect(call).toEqual({
      task_id: id,
      task_name: "start_lab",
      lab_instance_id: inst,
      status: "SUCCESS",
      result: {
        status: "running",
        k8s_pod_name: `lab-${inst}`,
        connection_url: `http://localhost:8000/simulated-lab/${inst}/${id}`,
      },
      principal: { kind: "system", reason: expect.any(String) },
    });
    const [row] = await waitFor("row settled", async () => {
      const r = await outboxRows(node!.sequelize, [id]);
      return r[0]?.result_applied_at ? r : null;
    });
    expect(row).toMatchObject({ result_status: "SUCCESS", attempts: 0 });
  });

  it("stop_lab → stopped; start_lab of the failing lab id → FAILURE with the exception", async () => {
    const [a, b] = await seedInstances(node!.sequelize, 2);
    const [stopId, failId] = await enqueue(
      node!.sequelize,
      "celery",
      [stopLab(a), startLab(b, SIMULATED_FAILING_LAB_ID)],
      [node!.broker],
    );
    await waitFor(
      "both applied",
      () => [stopId, failId].every((id) => double.calls.some((c) => c.task_id === id)),
      6_000,
    );
    expect(double.calls.find((c) => c.task_id === stopId)).toMatchObject({
      status: "SUCCESS",
      result: { status: "stopped" },
    });
    expect(double.calls.find((c) => c.task_id === failId)).toMatchObject({
      status: "FAILURE",
      error: `RuntimeError: ${SIMULATED_FAILURE_MESSAGE}`,
    });
  });

  it("a task the runner had not finished when the process stopped is sent again on the next start", async () => {
    const [inst] = await seedInstances(node!.sequelize, 1);
    const [id] = await enqueue(node!.sequelize, "celery", [startLab(inst)], [node!.broker]);
    await waitFor("published", () => allPublished(node!.sequelize, [id]), 3_000, 10);
    await node!.stop(); // within the 1.5 s the simulated task "runs"
    node = await startNode(db.url, ENV("embedded-2"));
    const again = await registerApplierDouble(node.broker);
    await waitFor("applied after restart", () => again.calls.find((c) => c.task_id === id), 8_000, 20);
    expect(double.calls.find((c) => c.task_id === id)).toBeUndefined();
    const calls = again.calls.filter((c) => c.task_id === id);
    expect(calls).toHaveLength(1);
    expect(calls[0]).toMatchObject({ status: "SUCCESS", lab_instance_id: inst });
  });
});
