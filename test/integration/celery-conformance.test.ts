/**
 * Conformance against a real Celery worker: our encoded messages, published
 * with amqplib to the real RabbitMQ, are executed by Celery (Debian's
 * python3-celery) and their results read back from the real Redis backend.
 * Needs RabbitMQ at 127.0.0.1:5672 and Redis at 127.0.0.1:6379 (db 5).
 */
import { randomUUID } from "crypto";
import { hostname } from "os";
import * as amqp from "amqplib";
import Redis from "ioredis";
import {
  CeleryResult,
  CeleryTaskKwargs,
  CeleryTaskName,
  celeryQueueDeclaration,
  celeryTaskFullName,
  encodeCeleryTask,
  parseCeleryResult,
  resultKey,
} from "../../services/tasks/celery-protocol";
import { CeleryWorker, FAILING_LAB_ID, FAILING_LAB_MESSAGE, startCeleryWorker } from "../support/celery-worker";
import { ifAssigned } from "../support/cleanup";

const AMQP_URL = process.env.TEST_AMQP_URL ?? "amqp://guest:guest@127.0.0.1:5672";
const REDIS_URL = process.env.TEST_REDIS_URL ?? "redis://127.0.0.1:6379/5";
const PREFIX = "celery_workers";
// Unique per run so this can run beside other tests (and other runs of itself).
const QUEUE = `autolabs.test.celery.${process.pid}.${randomUUID().slice(0, 8)}`;
const RESULT_TIMEOUT_MS = 20_000;

let conn: amqp.ChannelModel;
let ch: amqp.ConfirmChannel;
let redis: Redis;
let sub: Redis;
let worker: CeleryWorker | undefined;
const waiters = new Map<string, (message: string) => void>();
const usedKeys: string[] = [];

beforeAll(async () => {
  conn = await amqp.connect(AMQP_URL);
  ch = await conn.createConfirmChannel();
  const d = celeryQueueDeclaration(QUEUE);
  await ch.assertExchange(d.exchange.name, d.exchange.type, d.exchange.options);
  await ch.assertQueue(d.queue.name, d.queue.options);
  await ch.bindQueue(d.binding.queue, d.binding.exchange, d.binding.routingKey);

  redis = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 2 });
  sub = new Redis(REDIS_URL, { lazyConnect: true, maxRetriesPerRequest: 2 });
  await Promise.all([redis.connect(), sub.connect()]);
  sub.on("message", (channel: string, message: string) => waiters.get(channel)?.(message));

  worker = await startCeleryWorker({ queue: QUEUE, taskPrefix: PREFIX });
}, 60_000);

afterAll(async () => {
  await worker?.stop();
  // Each step guarded: cleanup must not mask the real failure.
  const steps: (() => Promise<unknown>)[] = [
    async () => ifAssigned(ch)?.deleteQueue(QUEUE),
    async () => ifAssigned(ch)?.deleteExchange(QUEUE),
    async () => ifAssigned(conn)?.close(),
    async () => (usedKeys.length > 0 ? ifAssigned(redis)?.del(...usedKeys) : undefined),
    async () => ifAssigned(redis)?.quit(),
    async () => ifAssigned(sub)?.quit(),
  ];
  for (const step of steps) {
    try {
      await step();
    } catch {
      // already gone
    }
  }
}, 30_000);

function publish(msg: ReturnType<typeof encodeCeleryTask>): Promise<void> {
  return new Promise((resolve, reject) => {
    ch.publish(msg.exchange, msg.routingKey, msg.content, msg.options, (err: Error | null) =>
      err ? reject(err) : resolve(),
    );
  });
}

/** Publishes one task and returns its result, as pushed on pub/sub and stored under the key. */
async function runTask<N extends CeleryTaskName>(
  name: N,
  kwargs: CeleryTaskKwargs[N],
): Promise<{ id: string; result: CeleryResult }> {
  const id = randomUUID();
  const key = resultKey(id);
  usedKeys.push(key);
  const msg = encodeCeleryTask({
    id,
    task: celeryTaskFullName(PREFIX, name),
    kwargs: { ...kwargs },
    queue: QUEUE,
    origin: `jest-${process.pid}@${hostname()}`,
  });

  let timer: NodeJS.Timeout | undefined;
  const pushed = new Promise<string>((resolve, reject) => {
    waiters.set(key, resolve);
    timer = setTimeout(
      () =>
        reject(
          new Error(
            `no result for ${name}[${id}] in ${RESULT_TIMEOUT_MS} ms; worker output:\n` +
              (worker?.output().slice(-4000) ?? ""),
          ),
        ),
      RESULT_TIMEOUT_MS,
    );
  });
  // Subscribe before publishing, or a fast worker's publish could be missed.
  await sub.subscribe(key);
  try {
    await publish(msg);
    const message = await pushed;
    const stored = await redis.get(key);
    expect(stored).toBe(message); // the key and the channel carry the same JSON
    return { id, result: parseCeleryResult(stored as string) };
  } finally {
    clearTimeout(timer);
    waiters.delete(key);
    await sub.unsubscribe(key);
  }
}

describe("Celery conformance (real worker, RabbitMQ, Redis)", () => {
  it("start_lab succeeds with the worker's pod and URL", async () => {
    const { id, result } = await runTask("start_lab", { lab_instance_id: 70001, lab_id: 7, student_id: 1001 });
    expect(result).toEqual({
      taskId: id,
      status: "SUCCESS",
      result: {
        status: "running",
        k8s_pod_name: "lab-70001",
        connection_url: "https://labs.example.test/i/70001",
      },
    });
  });

  it("a failing start_lab comes back as FAILURE with the exception", async () => {
    const { id, result } = await runTask("start_lab", { lab_instance_id: 2, lab_id: FAILING_LAB_ID, student_id: 3 });
    expect(result.taskId).toBe(id);
    expect(result.status).toBe("FAILURE");
    expect(result.error).toBe(`RuntimeError: ${FAILING_LAB_MESSAGE}`);
    expect(result.traceback).toContain("RuntimeError");
  });

  it("stop_lab succeeds", async () => {
    const { result } = await runTask("stop_lab", { lab_instance_id: 70001 });
    expect(result.status).toBe("SUCCESS");
    expect(result.result).toEqual({ status: "stopped" });
  });

  it("cleanup_lab succeeds", async () => {
    const { result } = await runTask("cleanup_lab", { lab_instance_id: 2 });
    expect(result.status).toBe("SUCCESS");
    expect(result.result).toEqual({ status: "stopped" });
  });

  it("the worker received every task and left nothing on the queue", async () => {
    expect(worker?.output()).toContain("celery_workers.start_lab[");
    const q = await ch.checkQueue(QUEUE);
    expect(q.messageCount).toBe(0);
  });
});
