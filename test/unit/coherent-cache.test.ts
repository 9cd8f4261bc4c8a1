/**
 * The read-populate race, on the embedded mode's Memory cacher: a fill computed before an invalidation is
 * never stored after it, and hits/misses are counted. (The Redis cacher's script is exercised by the
 * integration tests in test/integration/cache-coherence.test.ts.)
 */
import { ServiceBroker } from "moleculer";
import { CoherentMemoryCacher, readThrough } from "../../platform/coherent-cache";

let broker: ServiceBroker;
let cacher: CoherentMemoryCacher;
let db: { value: string };
let reads: number;

beforeEach(async () => {
  cacher = new CoherentMemoryCacher({ ttl: 60, clone: true });
  broker = new ServiceBroker({ logger: false, cacher });
  db = { value: "before" };
  reads = 0;
  broker.createService({
    name: "things",
    actions: {
      get: {
        cache: { keys: ["#user.id", "id"], ttl: 60 },
        handler() {
          reads++;
          return { value: db.value };
        },
      },
    },
  });
  await broker.start();
});

afterEach(() => broker.stop());

const get = (user: number) =>
  broker.call<{ value: string }, { id: number }>("things.get", { id: 1 }, { meta: { user: { id: user } } });

it("serves a hit from the cache, keyed per caller", async () => {
  expect(await get(1)).toEqual({ value: "before" });
  expect(await get(1)).toEqual({ value: "before" });
  expect(await get(2)).toEqual({ value: "before" });
  expect(reads).toBe(2);
  expect(cacher.stats.snapshot().scopes.things).toEqual({ hits: 1, misses: 2, dropped: 0 });
});

it("refuses a fill computed before an invalidation that landed while it was computed", async () => {
  let proceed!: () => void;
  const gate = new Promise<void>((r) => (proceed = r));
  let computing!: () => void;
  const started = new Promise<void>((r) => (computing = r));
  // A reader that read "before" and stores its answer only after the writer's commit and invalidation.
  const reader = readThrough(cacher, "things", "things.get:k", 60, async () => {
    const seen = db.value;
    computing();
    await gate;
    return { value: seen };
  });
  await started;
  db.value = "after";
  await cacher.invalidate("things", ["things.**"]);
  proceed();
  expect(await reader).toEqual({ value: "before" });
  expect(await cacher.get("things.get:k")).toBeUndefined();
  expect(cacher.stats.snapshot().scopes.things?.dropped).toBe(1);
});

it("an invalidation drops what is cached; the next read sees the write", async () => {
  await get(1);
  db.value = "after";
  await cacher.invalidate("things", ["things.**"]);
  expect(await get(1)).toEqual({ value: "after" });
});

it("bypasses the cache when a call asks for it ($cache: false)", async () => {
  await get(1);
  db.value = "after";
  expect(await broker.call("things.get", { id: 1 }, { meta: { user: { id: 1 }, $cache: false } })).toEqual({
    value: "after",
  });
});
