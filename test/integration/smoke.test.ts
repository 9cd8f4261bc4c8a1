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

it("serves the OpenAPI description, the docs page and Prometheus metrics", async () => {
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

  const metrics = await fetch(`${p.url}/metrics`);
  expect(metrics.status).toBe(200);
  expect(metrics.headers.get("content-type")).toMatch(/text\/plain/);
  const text = await metrics.text();
  expect(text).toMatch(/^moleculer_request_total\{.*action="courses\.list".*\} \d+$/m);
  // Nothing that describes the host: command line, host name, OS user, addresses.
  expect(text).toMatch(/^process_memory_rss\b/m);
  for (const family of ["process_arguments", "process_pid", "os_hostname", "os_user_", "os_network_", "os_cpu_info_"]) {
    expect(text).not.toMatch(new RegExp(`^${family}`, "m"));
  }

  // Nothing else is routed outside /api/v1.
  expect((await fetch(`${p.url}/$node/list`)).status).toBe(404);
});
