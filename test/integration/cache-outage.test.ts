/**
 * The Redis cacher degrades instead of failing: with Redis frozen or gone, requests are answered from the
 * database; an invalidation missed during the outage empties the cache when Redis answers again, so no
 * entry cached before the outage is served after it. Uses a Redis server of its own on a free port.
 */
import { spawn, type ChildProcess } from "node:child_process";
import Redis from "ioredis";
import { startTestPlatform, type TestPlatform } from "../support/platform";
import { freePort } from "../support/net";

let redisProc: ChildProcess;
let redisPort: number;
let p: TestPlatform;

async function startRedis(port: number): Promise<ChildProcess> {
  const proc = spawn("redis-server", ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"], { stdio: "ignore" });
  const client = new Redis({ port, lazyConnect: true, retryStrategy: () => 100, maxRetriesPerRequest: 0 });
  client.on("error", () => undefined);
  for (let i = 0; i < 50; i++) {
    try {
      await client.connect().catch(() => undefined);
      if ((await client.ping()) === "PONG") break;
    } catch {
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  client.disconnect();
  return proc;
}

async function cachedKeys(): Promise<string[]> {
  const c = new Redis({ port: redisPort });
  try {
    return await c.keys("*");
  } finally {
    c.disconnect();
  }
}

const totalCourses = async () => {
  const r = await p.api("GET", "/courses", { as: "teacher" });
  expect(r.status).toBe(200);
  return (r.body as { total: number }).total;
};

beforeAll(async () => {
  redisPort = await freePort();
  redisProc = await startRedis(redisPort);
  const url = `redis://127.0.0.1:${redisPort}/0`;
  p = await startTestPlatform({ CACHER: url, REDIS_URL: url, SERVICES: "api-gateway,auth,courses,labs" });
});

afterAll(async () => {
  await p?.stop();
  redisProc?.kill("SIGCONT");
  redisProc?.kill("SIGKILL");
});

it("keeps answering correctly while Redis is frozen, and drops what it could not invalidate", async () => {
  expect((await p.api("POST", "/courses", { as: "teacher", body: { name: "Before the outage" } })).status).toBe(201);
  expect(await totalCourses()).toBe(1);
  expect((await cachedKeys()).some((k) => k.includes("courses.list"))).toBe(true);

  redisProc.kill("SIGSTOP");
  try {
    expect((await p.api("POST", "/courses", { as: "teacher", body: { name: "During the outage" } })).status).toBe(201);
    expect(await totalCourses()).toBe(2);
  } finally {
    redisProc.kill("SIGCONT");
  }
  // Redis still holds the list cached with one course; the missed invalidation must not let it through.
  expect(await totalCourses()).toBe(2);
  expect((await p.api("GET", "/courses", { as: "teacher" })).status).toBe(200);
});

it("answers without Redis at all, and health names Redis as failed", async () => {
  redisProc.kill("SIGKILL");
  await new Promise((r) => redisProc.once("exit", r));
  expect((await p.api("POST", "/courses", { as: "teacher", body: { name: "Redis gone" } })).status).toBe(201);
  expect(await totalCourses()).toBe(3);
  const health = await p.api("GET", "/health");
  expect(health.status).toBe(503);
  expect(health.body).toMatchObject({ status: "unhealthy", checks: { database: "ok" } });
  expect((health.body as { checks: { redis: string } }).checks.redis).toMatch(/^failed/);
});
