/**
 * An event stream whose client leaves while its access lookup is still running keeps nothing on the
 * gateway. The lookup is held deterministically by PostgreSQL itself: a transaction of the test holds an
 * ACCESS EXCLUSIVE lock on lab_instances, so the lookup's SELECT waits (seen in pg_stat_activity) until the
 * test lets go. (That no keep-alive timer starts either is shown with fake timers in test/unit/sse.test.ts.)
 */
import { request, type ClientRequest, type IncomingMessage } from "node:http";
import { Client } from "pg";
import {
  WITHOUT_TASKS,
  must,
  openStream,
  statusOf,
  until,
  world,
  type Instance,
  type World,
} from "../support/lab-instances";
import { startTestPlatform, type TestPlatform } from "../support/platform";
import type { LabInstanceStreams } from "../../services/api-gateway/sse";
import { ifAssigned } from "../support/cleanup";

let p: TestPlatform;
let w: World;
let locker: Client;
let observer: Client;

beforeAll(async () => {
  p = await startTestPlatform({ SERVICES: WITHOUT_TASKS });
  w = await world(p, 1);
  locker = new Client({ connectionString: p.db.url });
  observer = new Client({ connectionString: p.db.url });
  await Promise.all([locker.connect(), observer.connect()]);
});

afterAll(async () => {
  await Promise.allSettled([ifAssigned(locker)?.end(), ifAssigned(observer)?.end()]);
  await ifAssigned(p)?.stop();
});

const streams = () => (p.broker.getLocalService("api-gateway") as unknown as { streams: LabInstanceStreams }).streams;

/** Backends of the platform that wait for a lock on lab_instances (the held lookup). */
async function lookupsWaiting(): Promise<number> {
  const { rows } = await observer.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM pg_stat_activity
      WHERE datname = current_database() AND pid <> $1 AND wait_event_type = 'Lock' AND query ILIKE '%lab_instances%'`,
    [(await locker.query<{ pid: number }>("SELECT pg_backend_pid() AS pid")).rows[0].pid],
  );
  return rows[0].n;
}

/** Opens the stream with a raw request, so the test decides when the client goes away. */
function rawStream(path: string, token: string): { req: ClientRequest; response: Promise<IncomingMessage> } {
  const req = request(`${p.url}/api/v1${path}`, {
    headers: { accept: "text/event-stream", authorization: `Bearer ${token}` },
  });
  const response = new Promise<IncomingMessage>((resolve, reject) => {
    req.on("response", resolve);
    req.on("error", reject);
  });
  req.end();
  return { req, response };
}

it("a client that disconnects during the access lookup leaves no subscriber", async () => {
  const inst = must("start", await w.start(w.labs[0]), 202).json<Instance>();
  const token = await p.token("student");
  must("token warm", await p.api("GET", "/auth/me", { as: "student" }), 200);
  expect(streams().openStreams).toBe(0);

  await locker.query("BEGIN");
  await locker.query("LOCK TABLE lab_instances IN ACCESS EXCLUSIVE MODE");
  const leaving = rawStream(`/lab-instances/${inst.id}/events`, token);
  leaving.response.catch(() => undefined);
  await until("the lookup to wait for the lock", async () => (await lookupsWaiting()) === 1);
  // Subscribed before the lookup, so no change between the lookup and the subscription is lost.
  expect(streams().openStreams).toBe(1);

  leaving.req.destroy();
  await until("the subscription of the departed client to go", () => streams().openStreams === 0);

  await locker.query("ROLLBACK");
  await until("the held lookup to finish", async () => (await lookupsWaiting()) === 0);
  // The lookup's answer finds nobody: nothing is subscribed afterwards either, and a broadcast reaches no one.
  await w.apply({
    task_id: inst.celery_task_id!,
    task_name: "start_lab",
    lab_instance_id: inst.id,
    status: "SUCCESS",
    result: {
      status: "running",
      k8s_pod_name: "lab-pod-sse",
      connection_url: "https://labs.example.test/i/sse",
    },
  });
  expect(streams().openStreams).toBe(0);

  // Control: a client that stays through a held lookup gets its stream once the lock goes.
  await locker.query("BEGIN");
  await locker.query("LOCK TABLE lab_instances IN ACCESS EXCLUSIVE MODE");
  const staying = openStream(p, `/lab-instances/${inst.id}/events`, token);
  await until("the second lookup to wait for the lock", async () => (await lookupsWaiting()) === 1);
  await locker.query("ROLLBACK");
  const s = await staying;
  expect(s.status).toBe(200);
  await s.waitFor(1);
  expect(statusOf(s.events[0])).toBe("running");
  expect(streams().openStreams).toBe(1);
  s.close();
  await until("the closed stream to go", () => streams().openStreams === 0);
});
