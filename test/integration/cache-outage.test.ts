/**
 * The Redis cacher degrades instead of failing: with Redis frozen or gone, requests are answered from the
 * database; an invalidation missed during the outage empties the cache when Redis answers again, so no
 * entry cached before the outage is served after it. Uses a Redis server of its own on a free port.
 */
import Redis from "ioredis";
import { startTestPlatform, type TestPlatform } from "../support/platform";
import { startOwnRedis, type OwnRedis } from "../support/redis-server";
import { ifAssigned } from "../support/cleanup";

let redis: OwnRedis;
let p: TestPlatform;

async function cachedKeys(): Promise<string[]> {
  const c = new Redis({ port: redis.port });
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
  redis = await startOwnRedis();
  const url = redis.url();
  p = await startTestPlatform({ CACHER: url, REDIS_URL: url, SERVICES: "api-gateway,auth,courses,labs" });
});

afterAll(async () => {
  await ifAssigned(p)?.stop();
  await ifAssigned(redis)?.kill();
});

it("keeps answering correctly while Redis is frozen, and drops what it could not invalidate", async () => {
  expect((await p.api("POST", "/courses", { as: "teacher", body: { name: "Before the outage" } })).status).toBe(201);
  expect(await totalCourses()).toBe(1);
  expect((await cachedKeys()).some((k) => k.includes("courses.list"))).toBe(true);

  redis.freeze();
  try {
    expect((await p.api("POST", "/courses", { as: "teacher", body: { name: "During the outage" } })).status).toBe(201);
    expect(await totalCourses()).toBe(2);
  } finally {
    redis.resume();
  }
  // Redis still holds the list cached with one course; the missed invalidation must not let it through.
  expect(await totalCourses()).toBe(2);
  expect((await p.api("GET", "/courses", { as: "teacher" })).status).toBe(200);
});

it("answers without Redis at all, and health names Redis as failed", async () => {
  await redis.kill();
  expect((await p.api("POST", "/courses", { as: "teacher", body: { name: "Redis gone" } })).status).toBe(201);
  expect(await totalCourses()).toBe(3);
  const health = await p.api("GET", "/health");
  expect(health.status).toBe(503);
  expect(health.body).toMatchObject({ status: "unhealthy", checks: { database: "ok" } });
  expect((health.body as { checks: { redis: string } }).checks.redis).toMatch(/^failed/);
});
