/**
 * `GET /api/v1/lab-instances/events`: one stream of every instance the caller may see, across gateway nodes.
 * Two gateway nodes and a domain node over the real RabbitMQ: streams held on gateway B show changes made
 * through gateway A (a start) and by the domain node (a worker's result), each caller only what
 * decideLabInstance lets them view: a student their own, a teacher their courses', an admin all; another
 * student and another teacher nothing of it. A reconnect with Last-Event-ID gets what changed while away.
 */
import { randomBytes } from "node:crypto";
import {
  AMQP_URL,
  REDIS_URL,
  createTestDatabase,
  startGatewayAndDomain,
  startNode,
  type ApiResponse,
  type PlatformNode,
  type TestDatabase,
} from "../support/platform";
import { startIdp, type TestIdp } from "../support/idp";
import { STATUS_CHANGED_EVENT } from "../../services/lab-instances/lab-instances.contract";
import {
  must,
  openStream,
  startOk,
  statusOf,
  teacher2Token,
  until,
  world,
  type Instance,
  type Stream,
  type World,
} from "../support/lab-instances";

let db: TestDatabase;
let idp: TestIdp;
let gatewayA: PlatformNode;
let gatewayB: PlatformNode;
let domain: PlatformNode;
let w: World;
const tokens = new Map<string, string>();
const namespace = `user-events-${randomBytes(4).toString("hex")}`;

async function token(account: string): Promise<string> {
  let t = tokens.get(account);
  if (!t) {
    t =
      account === "teacher2"
        ? await teacher2Token({ idp, config: gatewayA.config })
        : (await idp.getToken(account)).accessToken;
    tokens.set(account, t);
  }
  return t;
}

beforeAll(async () => {
  [db, idp] = await Promise.all([createTestDatabase(), startIdp()]);
  const common = { CACHER: REDIS_URL, REDIS_URL, NAMESPACE: namespace, OIDC_ISSUER: idp.issuer };
  ({ gateway: gatewayA, domain } = await startGatewayAndDomain(db.url, namespace, common, [
    "auth",
    "courses",
    "labs",
    "lab-instances",
    "access",
  ]));
  gatewayB = await startNode(db.url, {
    ...common,
    TRANSPORTER: AMQP_URL,
    NODEID: `${namespace}-second-gateway`,
    SERVICES: "api-gateway",
  });
  await gatewayB.broker.waitForServices(["lab-instances"], 20_000);
  const n = gatewayA;
  const api = async (
    method: string,
    path: string,
    opts: { as?: string; body?: unknown; headers?: Record<string, string> } = {},
  ): Promise<ApiResponse> => {
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.as) headers.authorization = `Bearer ${await token(opts.as)}`;
    if (opts.body !== undefined) headers["content-type"] = "application/json";
    const res = await fetch(`${n.url}/api/v1${path}`, {
      method,
      headers,
      body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    });
    const text = await res.text();
    const parsed: unknown = text ? JSON.parse(text) : null;
    return { status: res.status, headers: res.headers, body: parsed, json: <T>() => parsed as T };
  };
  const p = {
    api,
    userId: async (account: string) =>
      must("me", await api("GET", "/auth/me", { as: account }), 200).json<{ id: number }>().id,
    broker: n.broker,
    sequelize: n.sequelize,
    config: n.config,
    url: n.url,
  };
  // teacher2 exists as a user before anything is streamed to them.
  must("teacher2", await api("GET", "/auth/me", { as: "teacher2" }), 200);
  w = await world(p, 2);
  // Gateway B routes lab-instances (its aliases regenerate once the remote service is known).
  await until("gateway B routes", async () => (await fetch(`${gatewayB.url}/api/v1/lab-instances`)).status === 401);
  // And the domain node knows gateway B's listener (B's INFO reached it), or a broadcast skips B.
  const listeners = () =>
    (
      domain.broker.registry as unknown as {
        events: { getAllEndpoints(event: string): { id: string }[] };
      }
    ).events.getAllEndpoints(STATUS_CHANGED_EVENT);
  await until("the domain node knows gateway B", () =>
    Promise.resolve(listeners().some((e) => e.id === gatewayB.broker.nodeID)),
  );
}, 120_000);

afterAll(async () => {
  await gatewayB.stop();
  await gatewayA.stop();
  await domain.stop();
  await Promise.allSettled([db.drop(), idp.stop()]);
}, 60_000);

const onB = async (account: string, headers: Record<string, string> = {}) =>
  openStream(gatewayB, "/lab-instances/events", await token(account), headers);
const seen = (s: Stream, id: number) =>
  s.events.filter((e) => (JSON.parse(e.data ?? "{}") as Instance).id === id).map(statusOf);

it("a change through gateway A reaches the streams on gateway B of exactly those who may see it", async () => {
  const streams = {
    student: await onB("student"),
    student2: await onB("student2"),
    teacher: await onB("teacher"),
    teacher2: await onB("teacher2"),
    admin: await onB("admin"),
  };
  try {
    for (const s of Object.values(streams)) {
      expect(s.status).toBe(200);
      expect(s.headers.get("content-type")).toBe("text/event-stream; charset=utf-8");
    }
    const inst = must("start on A", await w.start(w.labs[0]), 202).json<Instance>();
    await w.apply({
      task_id: inst.celery_task_id!,
      task_name: "start_lab",
      lab_instance_id: inst.id,
      status: "SUCCESS",
      result: startOk,
    });
    for (const who of ["student", "teacher", "admin"] as const) {
      await until(`${who} sees running`, () => Promise.resolve(seen(streams[who], inst.id).includes("running")));
      expect(seen(streams[who], inst.id)).toEqual(["pending", "running"]);
    }
    const event = streams.student.events.find((e) => statusOf(e) === "running")!;
    expect(event.event).toBe("status");
    const data = JSON.parse(event.data!) as Instance & Record<string, unknown>;
    expect(data).toMatchObject({ id: inst.id, lab_name: "Lab 1", course_name: "Networks", status: "running" });
    // The routing fact stays inside the cluster.
    expect(data.course_owner_id).toBeUndefined();
    expect(event.id).toBe(`${inst.id}.2.${new Date(data.updated_at).getTime()}`);

    // A change the others may see is a positive marker: by the time it arrived, the running above had too.
    const other = must("student2 starts", await w.start(w.labs[1], "student2"), 202).json<Instance>();
    await until("student2 sees own", () => Promise.resolve(seen(streams.student2, other.id).includes("pending")));
    expect(seen(streams.student2, inst.id)).toEqual([]);
    expect(seen(streams.student, other.id)).toEqual([]);
    expect(streams.teacher2.events).toEqual([]);
    must("stop", await w.p.api("POST", `/lab-instances/${other.id}/stop`, { as: "student2" }), 202);
    await until("admin sees stopping", () => Promise.resolve(seen(streams.admin, other.id).includes("stopping")));
    expect(streams.teacher2.events).toEqual([]);
  } finally {
    for (const s of Object.values(streams)) s.close();
  }
}, 60_000);

it("opens with the active instances; a reconnect with Last-Event-ID gets what changed meanwhile", async () => {
  const inst = must("start", await w.start(w.labs[1]), 202).json<Instance>();
  const first = await onB("student");
  await until("snapshot", () => Promise.resolve(seen(first, inst.id).includes("pending")));
  const last = first.events[first.events.length - 1];
  first.close();

  // While away: it runs.
  await w.apply({
    task_id: inst.celery_task_id!,
    task_name: "start_lab",
    lab_instance_id: inst.id,
    status: "SUCCESS",
    result: startOk,
  });
  await until("running", async () => (await w.get(inst.id)).status === "running");
  const again = await onB("student", { "last-event-id": last.id! });
  try {
    await until("resumed", () => Promise.resolve(seen(again, inst.id).includes("running")));
    // Last-Event-ID said pending was seen: not sent again.
    expect(seen(again, inst.id)).toEqual(["running"]);
  } finally {
    again.close();
  }
}, 60_000);

it("needs a signed-in caller: 401 as JSON before any stream", async () => {
  const res = await fetch(`${gatewayB.url}/api/v1/lab-instances/events`);
  expect(res.status).toBe(401);
  expect(res.headers.get("content-type")).toContain("application/json");
  expect(await res.json()).toEqual({ detail: expect.any(String) });
});
