/**
 * The whole lab lifecycle with the real Celery worker (Debian python3-celery, test/celery_worker) over the
 * real RabbitMQ and Redis result backend, driven through HTTP as a student would, watched over SSE:
 * start → running with the URL the worker returned → connection → stop → stopped; a worker exception →
 * failed with its message; and a broker outage while starts are accepted delays the tasks, never drops them.
 */
import { randomBytes } from "node:crypto";
import { FAILING_LAB_ID, FAILING_LAB_MESSAGE, startCeleryWorker, type CeleryWorker } from "../support/celery-worker";
import { openStream, until, world, type Instance, type World } from "../support/lab-instances";
import { AMQP_URL, startNode, startTestPlatform, type PlatformNode, type TestPlatform } from "../support/platform";
import { ifAssigned } from "../support/cleanup";

const queue = `lifecycle-${randomBytes(4).toString("hex")}`;
const RESULTS = "redis://127.0.0.1:6379/9";
const celeryEnv = { CELERY_BROKER_URL: AMQP_URL, CELERY_RESULT_BACKEND: RESULTS, CELERY_QUEUE: queue };
// The outage test adds relay nodes: they reach this node's lab-instances over the transporter.
const clusterEnv = { TRANSPORTER: AMQP_URL, NAMESPACE: queue };

let p: TestPlatform;
let w: World;
let worker: CeleryWorker;

beforeAll(async () => {
  p = await startTestPlatform({ ...celeryEnv, ...clusterEnv });
  w = await world(p, 3);
  worker = await startCeleryWorker({ queue, brokerUrl: AMQP_URL, resultBackend: RESULTS });
});

afterAll(async () => {
  await ifAssigned(worker)?.stop();
  await ifAssigned(p)?.stop();
});

const status = async (id: number) => (await w.get(id)).status;

it("start → running with the worker's URL → connection → stop → stopped, each step on SSE", async () => {
  const started = await w.start(w.labs[0]);
  expect(started.status).toBe(202);
  const instance = started.json<Instance>();
  expect(instance.status).toBe("pending");

  const stream = await openStream(p, `/lab-instances/${instance.id}/events`, await p.token("student"));
  expect(stream.status).toBe(200);

  const running = await until("running", async () => {
    const i = await w.get(instance.id);
    return i.status === "running" && i;
  });
  // What labs_worker.py returned for this instance.
  expect(running.connection_url).toBe(`https://labs.example.test/i/${instance.id}`);
  expect(running.k8s_pod_name).toBe(`lab-${instance.id}`);

  const connection = await p.api("GET", `/lab-instances/${instance.id}/connection`, { as: "student" });
  expect(connection.status).toBe(200);
  expect(connection.body).toMatchObject({ connection_url: running.connection_url });

  expect((await p.api("POST", `/lab-instances/${instance.id}/stop`, { as: "student" })).status).toBe(202);
  await until("stopped", async () => (await status(instance.id)) === "stopped");
  expect((await p.api("GET", `/lab-instances/${instance.id}/connection`, { as: "student" })).status).toBe(409);

  await stream.ended;
  const statuses = stream.events.map((e) => (JSON.parse(e.data ?? "{}") as { status: string }).status);
  expect(statuses).toEqual(["pending", "running", "stopping", "stopped"]);
  expect(stream.events.every((e) => e.id)).toBe(true);
});

it("a worker-side exception fails the instance with the exception's message", async () => {
  // labs_worker.py raises for this lab id: give a real, approved, attached lab that id.
  await p.sequelize.query(
    `INSERT INTO labs (id, name, description, docker_image, resources, network_isolated, status, created_by)
     SELECT $id, 'Doomed lab', '', 'python:3.12', resources, false, 'approved', created_by FROM labs WHERE id = $lab`,
    { bind: { id: FAILING_LAB_ID, lab: w.labs[0] } },
  );
  await p.sequelize.query("INSERT INTO course_labs (course_id, lab_id) VALUES ($course, $lab)", {
    bind: { course: w.course, lab: FAILING_LAB_ID },
  });
  const started = await w.start(FAILING_LAB_ID);
  expect(started.status).toBe(202);
  const failed = await until("failed", async () => {
    const i = await w.get(started.json<Instance>().id);
    return i.status === "failed" && i;
  });
  expect(failed.error).toBe(`RuntimeError: ${FAILING_LAB_MESSAGE}`);
});

describe("broker outage", () => {
  let dead: PlatformNode | undefined;
  afterEach(async () => {
    await dead?.stop();
    dead = undefined;
  });

  it("accepts starts while RabbitMQ is unreachable and delivers every task once it is back", async () => {
    await w.reset();
    // A second node whose relay points at a dead broker; the first node's tasks service is stopped meanwhile.
    await p.broker.destroyService(p.broker.getLocalService("tasks"));
    dead = await startNode(p.db.url, {
      ...clusterEnv,
      OIDC_ISSUER: p.idp.issuer,
      SERVICES: "tasks",
      CELERY_BROKER_URL: "amqp://guest:guest@127.0.0.1:1",
      CELERY_RESULT_BACKEND: RESULTS,
      CELERY_QUEUE: queue,
    });
    const ids: number[] = [];
    for (const [i, lab] of w.labs.entries()) {
      const res = await w.start(lab, i === 2 ? "student2" : "student");
      expect(res.status).toBe(202);
      ids.push(res.json<Instance>().id);
    }
    await until("failed publish attempts", async () => {
      const [rows] = await p.sequelize.query(
        "SELECT count(*)::int AS n FROM task_outbox WHERE lab_instance_id = ANY($ids) AND attempts > 0 AND published_at IS NULL",
        {
          bind: { ids },
        },
      );
      return (rows as { n: number }[])[0].n === ids.length;
    });
    for (const id of ids) expect(await status(id)).toBe("pending");

    // The broker is back (a relay with the right URL): each instance gets exactly its task.
    await dead.stop();
    dead = await startNode(p.db.url, { ...clusterEnv, OIDC_ISSUER: p.idp.issuer, SERVICES: "tasks", ...celeryEnv });
    for (const id of ids) await until(`instance ${id} running`, async () => (await status(id)) === "running", 20_000);
    const [rows] = await p.sequelize.query(
      "SELECT lab_instance_id, count(*)::int AS n, bool_and(published_at IS NOT NULL) AS published FROM task_outbox WHERE lab_instance_id = ANY($ids) AND task_name = 'start_lab' GROUP BY lab_instance_id",
      { bind: { ids } },
    );
    expect(rows).toHaveLength(ids.length);
    for (const r of rows as { n: number; published: boolean }[]) expect(r).toMatchObject({ n: 1, published: true });
    for (const id of ids) {
      const i = await w.get(id);
      expect(i.connection_url).toBe(`https://labs.example.test/i/${id}`);
    }
  });
});
