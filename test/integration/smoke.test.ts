import { startTestPlatform, type TestPlatform } from "../support/platform";

let p: TestPlatform;
beforeAll(async () => {
  p = await startTestPlatform({ SERVICES: "api-gateway,auth,courses,labs" });
});
afterAll(async () => {
  await p?.stop();
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
