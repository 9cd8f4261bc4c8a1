import { startTestPlatform, type TestPlatform } from "../support/platform";
import { ifAssigned } from "../support/cleanup";

let p: TestPlatform;
beforeAll(async () => {
  p = await startTestPlatform({ SERVICES: "api-gateway,auth,courses,labs" });
});
afterAll(async () => {
  await ifAssigned(p)?.stop();
});

it("teacher creates a course", async () => {
  const health = await p.api("GET", "/health");
  expect(health.status).toBe(200);
  const me = await p.api("GET", "/auth/me", { as: "teacher" });
  expect(me.status).toBe(200);
  const created = await p.api("POST", "/courses", { as: "teacher", body: { name: "Networks" } });
  expect(created.status).toBe(201);
  const list = await p.api("GET", "/courses", { as: "teacher" });
  expect(list.body).toMatchObject({ total: 1 });
});

it("serves the OpenAPI description and the docs page, and no metrics on the API port", async () => {
  const spec = await p.api("GET", "/openapi.json");
  expect(spec.status).toBe(200);
  const paths = (spec.body as { paths: Record<string, unknown> }).paths;
  expect(Object.keys(paths)).toEqual(
    expect.arrayContaining(["/courses", "/courses/{id}", "/labs/{id}/approve", "/health"]),
  );

  const docs = await fetch(`${p.url}/api/docs`);
  expect(docs.status).toBe(200);
  expect(docs.headers.get("content-type")).toMatch(/text\/html/);
  expect(await docs.text()).toContain("/api/v1/openapi.json");

  // Metrics live on each node's METRICS_PORT (observability.test.ts), never on the public API port.
  expect((await fetch(`${p.url}/metrics`)).status).toBe(404);

  // Nothing else is routed outside /api/v1.
  expect((await fetch(`${p.url}/$node/list`)).status).toBe(404);
});
