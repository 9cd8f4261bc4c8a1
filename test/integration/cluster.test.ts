/**
 * Cluster mode: the gateway on one node, the domain services on another, talking over the real RabbitMQ
 * (AMQP transporter), caching in the real Redis, storing in the real PostgreSQL. The same API works.
 */
import { randomBytes } from "node:crypto";
import {
  REDIS_URL,
  createTestDatabase,
  startGatewayAndDomain,
  type PlatformNode,
  type TestDatabase,
} from "../support/platform";
import { startIdp, type TestIdp } from "../support/idp";
import { ifAssigned } from "../support/cleanup";

let db: TestDatabase;
let idp: TestIdp;
let gateway: PlatformNode;
let domain: PlatformNode;
let domainStopped = false;

const namespace = `cluster-${randomBytes(4).toString("hex")}`;

async function api(method: string, path: string, token?: string, body?: unknown) {
  const res = await fetch(`${gateway.url}/api/v1${path}`, {
    method,
    headers: {
      ...(token ? { authorization: `Bearer ${token}` } : {}),
      ...(body !== undefined ? { "content-type": "application/json" } : {}),
    },
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

beforeAll(async () => {
  [db, idp] = await Promise.all([createTestDatabase(), startIdp()]);
  const common = { CACHER: REDIS_URL, REDIS_URL, NAMESPACE: namespace, OIDC_ISSUER: idp.issuer };
  ({ gateway, domain } = await startGatewayAndDomain(db.url, namespace, common, ["auth", "courses", "labs"]));
});

afterAll(async () => {
  await ifAssigned(gateway)?.stop();
  if (!domainStopped) await ifAssigned(domain)?.stop();
  await Promise.allSettled([ifAssigned(db)?.drop(), ifAssigned(idp)?.stop()]);
});

it("runs the services on another node than the gateway", () => {
  expect(gateway.broker.getLocalService("courses")).toBeFalsy();
  expect(domain.broker.getLocalService("courses")).toBeTruthy();
  expect(gateway.broker.registry.getServiceList({ onlyLocal: false }).map((s) => s.name)).toEqual(
    expect.arrayContaining(["courses", "labs", "auth"]),
  );
});

it("reports RabbitMQ and Redis as checked in health", async () => {
  const health = await api("GET", "/health");
  expect(health.status).toBe(200);
  expect(health.body).toMatchObject({ status: "healthy", checks: { database: "ok", redis: "ok", rabbitmq: "ok" } });
});

it("serves the teacher's and admin's workflow across nodes", async () => {
  const teacher = (await idp.getToken("teacher")).accessToken;
  const admin = (await idp.getToken("admin")).accessToken;

  const course = await api("POST", "/courses", teacher, { name: "Distributed systems" });
  expect(course.status).toBe(201);
  const courseId = course.body.id as number;
  const list = await api("GET", "/courses", teacher);
  expect(list.status).toBe(200);
  expect(list.body.total).toBe(1);

  const lab = await api("POST", "/labs", teacher, {
    name: "Raft playground",
    docker_image: "registry.example.com/labs/raft:1.2",
    resources: { cpu: "500m", memory: "512Mi", storage: "1Gi" },
  });
  expect(lab.status).toBe(201);
  const labId = lab.body.id as number;
  expect((await api("POST", `/labs/${labId}/submit`, teacher)).body.status).toBe("pending_approval");
  expect((await api("POST", `/labs/${labId}/approve`, teacher)).status).toBe(403);
  const approved = await api("POST", `/labs/${labId}/approve`, admin);
  expect(approved.status).toBe(200);
  expect(approved.body.status).toBe("approved");

  // A cached read on the domain node is invalidated across the cluster by the write.
  await api("PUT", `/courses/${courseId}`, teacher, { name: "Distributed systems II" });
  const again = await api("GET", `/courses/${courseId}`, teacher);
  expect(again.body.name).toBe("Distributed systems II");
});

it("maps errors raised on the remote node to the same HTTP answers", async () => {
  const student = (await idp.getToken("student")).accessToken;
  expect((await api("POST", "/courses", student, { name: "nope" })).status).toBe(403);
  expect((await api("GET", "/courses/999999", student)).status).toBe(404);
  const invalid = await api("POST", "/labs", (await idp.getToken("teacher")).accessToken, { name: "" });
  expect(invalid.status).toBe(422);
  expect(Array.isArray(invalid.body.detail)).toBe(true);
});

// Last: it stops the domain node.
it("answers 503 with Retry-After, not 404, on the paths of a service whose node went away", async () => {
  const teacher = (await idp.getToken("teacher")).accessToken;
  expect((await api("GET", "/courses", teacher)).status).toBe(200);
  domainStopped = true;
  await domain.stop();
  // The gateway drops the node's services, then regenerates its aliases without them (debounced).
  const web = gateway.broker.getLocalService("api-gateway") as unknown as { aliases: { action?: string | null }[] };
  const deadline = Date.now() + 20_000;
  while (web.aliases.some((a) => a.action === "courses.list")) {
    if (Date.now() > deadline) throw new Error("the gateway kept the aliases of the stopped node");
    await new Promise((r) => setTimeout(r, 100));
  }
  const res = await fetch(`${gateway.url}/api/v1/courses`, { headers: { authorization: `Bearer ${teacher}` } });
  expect(res.status).toBe(503);
  expect(res.headers.get("retry-after")).toMatch(/^\d+$/);
  expect(await res.json()).toEqual({ detail: expect.any(String) });
  // A path no service ever had is still 404.
  expect((await fetch(`${gateway.url}/api/v1/no-such-thing`)).status).toBe(404);
});
