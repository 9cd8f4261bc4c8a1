/**
 * Pure rules of the tasks service: retry pacing, result → applyTaskResult mapping, the simulated runner's
 * decoding of our own encoded messages and its Celery-shaped results, and the Pump's scheduling.
 */
import { randomUUID } from "crypto";
import { encodeCeleryTask, parseCeleryResult, type CeleryResult } from "../../services/tasks/celery-protocol";
import {
  APPLY_BACKOFF,
  CONNECT_BACKOFF,
  MAX_ERROR_TEXT,
  PUBLISH_BACKOFF,
  backoffDelayMs,
  decideResult,
  errorText,
  isReadyState,
  isTaskId,
  isTransientCallError,
  taskIdFromResultChannel,
} from "../../services/tasks/relay.rules";
import {
  SIMULATED_FAILING_LAB_ID,
  SIMULATED_FAILURE_MESSAGE,
  celeryResultJson,
  decodeCeleryMessage,
  pyUtcIsoformat,
  shortTaskName,
  simulateTask,
} from "../../services/tasks/simulated-runner";
import { Pump } from "../../services/tasks/pump";

describe("backoffDelayMs", () => {
  const lo = () => 0;
  const hi = () => 1;

  it("doubles per failure between half and all of the ceiling", () => {
    expect([1, 2, 3, 4].map((n) => backoffDelayMs(n, PUBLISH_BACKOFF, lo))).toEqual([500, 1000, 2000, 4000]);
    expect([1, 2, 3, 4].map((n) => backoffDelayMs(n, PUBLISH_BACKOFF, hi))).toEqual([1000, 2000, 4000, 8000]);
  });

  it("is capped, also for absurd attempt counts", () => {
    expect(backoffDelayMs(7, PUBLISH_BACKOFF, hi)).toBe(60_000);
    expect(backoffDelayMs(7, PUBLISH_BACKOFF, lo)).toBe(30_000);
    expect(backoffDelayMs(1e9, PUBLISH_BACKOFF, hi)).toBe(60_000);
    expect(backoffDelayMs(5000, CONNECT_BACKOFF, hi)).toBe(15_000);
    expect(backoffDelayMs(50, APPLY_BACKOFF, hi)).toBe(30_000);
  });

  it("treats 0, negative and NaN attempts as the first failure; clamps a bad random()", () => {
    expect(backoffDelayMs(0, PUBLISH_BACKOFF, hi)).toBe(1000);
    expect(backoffDelayMs(-3, PUBLISH_BACKOFF, hi)).toBe(1000);
    expect(backoffDelayMs(Number.NaN, PUBLISH_BACKOFF, hi)).toBe(1000);
    expect(backoffDelayMs(1, PUBLISH_BACKOFF, () => 7)).toBe(1000);
    expect(backoffDelayMs(1, PUBLISH_BACKOFF, () => -1)).toBe(500);
  });

  it("spreads a batch that failed together (jitter)", () => {
    const delays = new Set(Array.from({ length: 50 }, () => backoffDelayMs(5, PUBLISH_BACKOFF)));
    expect(delays.size).toBeGreaterThan(10);
    for (const d of delays) {
      expect(d).toBeGreaterThanOrEqual(8_000);
      expect(d).toBeLessThanOrEqual(16_000);
    }
  });
});

describe("errorText", () => {
  it("is one bounded line", () => {
    expect(errorText(new Error("connect ECONNREFUSED\n  127.0.0.1:1"))).toBe("connect ECONNREFUSED 127.0.0.1:1");
    expect(errorText("x".repeat(5000))).toHaveLength(MAX_ERROR_TEXT);
    expect(errorText({ code: 1 })).toBe('{"code":1}');
  });

  it("names an error without a message (AggregateError of a dual-stack connect)", () => {
    const both = new AggregateError(
      [new Error("connect ECONNREFUSED ::1:1"), new Error("connect ECONNREFUSED 127.0.0.1:1")],
      "",
    );
    expect(errorText(both)).toBe("connect ECONNREFUSED ::1:1; connect ECONNREFUSED 127.0.0.1:1");
    expect(errorText(new AggregateError([], ""))).toBe("AggregateError");
    expect(errorText(undefined)).toBe("undefined");
  });

  it("reads errors of another realm (Node internals seen from jest) by shape, not instanceof", () => {
    expect(errorText({ name: "Error", message: "connect ECONNREFUSED 127.0.0.1:1", code: "ECONNREFUSED" })).toBe(
      "connect ECONNREFUSED 127.0.0.1:1",
    );
  });
});

describe("result channels", () => {
  it("maps celery-task-meta-<uuid> to the uuid and nothing else", () => {
    const id = randomUUID();
    expect(taskIdFromResultChannel(`celery-task-meta-${id}`)).toBe(id);
    expect(taskIdFromResultChannel(`celery-task-meta-not-a-uuid`)).toBeNull();
    expect(taskIdFromResultChannel(`celery-taskset-meta-${id}`)).toBeNull();
    expect(isTaskId(id.toUpperCase())).toBe(true);
    expect(isTaskId("'; DROP TABLE task_outbox; --")).toBe(false);
  });

  it("ready states are Celery's READY_STATES", () => {
    expect(["SUCCESS", "FAILURE", "REVOKED"].every(isReadyState)).toBe(true);
    expect(["PENDING", "STARTED", "RETRY", "RECEIVED"].some(isReadyState)).toBe(false);
  });
});

describe("decideResult", () => {
  const id = randomUUID();
  const row = { id, task_name: "start_lab", lab_instance_id: 42 };
  const res = (r: Partial<CeleryResult>): CeleryResult => ({ taskId: id, status: "SUCCESS", result: null, ...r });

  it("SUCCESS carries the worker's return value, no error", () => {
    const result = { status: "running", k8s_pod_name: "lab-42", connection_url: "https://x/42" };
    expect(decideResult(row, res({ result }))).toEqual({
      kind: "apply",
      params: { task_id: id, task_name: "start_lab", lab_instance_id: 42, status: "SUCCESS", result },
    });
  });

  it("FAILURE and REVOKED carry the error text, no result", () => {
    const d = decideResult(row, res({ status: "FAILURE", result: { exc_type: "X" }, error: "RuntimeError: boom" }));
    expect(d).toEqual({
      kind: "apply",
      params: {
        task_id: id,
        task_name: "start_lab",
        lab_instance_id: 42,
        status: "FAILURE",
        error: "RuntimeError: boom",
      },
    });
    const r = decideResult(
      { ...row, task_name: "stop_lab" },
      res({ status: "REVOKED", error: "TaskRevokedError: revoked" }),
    );
    expect(r).toMatchObject({
      kind: "apply",
      params: { task_name: "stop_lab", status: "REVOKED", error: "TaskRevokedError: revoked" },
    });
  });

  it("waits on states that are not final", () => {
    expect(decideResult(row, res({ status: "STARTED" }))).toEqual({ kind: "wait" });
    expect(decideResult(row, res({ status: "RETRY" }))).toEqual({ kind: "wait" });
  });

  it("settles without a call when there is nothing to apply to", () => {
    expect(decideResult({ ...row, lab_instance_id: null }, res({}))).toMatchObject({
      kind: "settle",
      status: "SUCCESS",
    });
    expect(decideResult({ ...row, task_name: "reboot_lab" }, res({}))).toMatchObject({ kind: "settle" });
    expect(decideResult(row, res({ taskId: randomUUID() }))).toMatchObject({ kind: "settle", status: "MISMATCH" });
  });
});

describe("isTransientCallError", () => {
  it("branches on type/code, not on the class", () => {
    expect(isTransientCallError({ name: "ServiceNotFoundError", type: "SERVICE_NOT_FOUND", code: 404 })).toBe(true);
    expect(isTransientCallError({ type: "REQUEST_TIMEOUT", code: 504 })).toBe(true);
    expect(isTransientCallError({ code: 503, type: "SERVICE_UNAVAILABLE", retryable: true })).toBe(true);
    expect(isTransientCallError({ code: 422, type: "VALIDATION_ERROR" })).toBe(false);
    expect(isTransientCallError({ code: 404, type: "NOT_FOUND" })).toBe(false);
    expect(isTransientCallError(null)).toBe(false);
  });
});

describe("simulated runner: decoding our own messages", () => {
  const id = randomUUID();
  const encoded = encodeCeleryTask({
    id,
    task: "celery_workers.start_lab",
    kwargs: { lab_instance_id: 7, lab_id: 3, student_id: 9 },
    queue: "celery",
    origin: "node-1",
  });

  it("reads back id, task and kwargs from the encoded body and headers", () => {
    expect(decodeCeleryMessage(encoded)).toEqual({
      id,
      task: "celery_workers.start_lab",
      args: [],
      kwargs: { lab_instance_id: 7, lab_id: 3, student_id: 9 },
      routingKey: "celery",
    });
  });

  it("rejects what a worker would reject", () => {
    const bad = (patch: (m: typeof encoded) => void) => {
      const m = { ...encoded, options: { ...encoded.options, headers: { ...encoded.options.headers } } };
      patch(m);
      return () => decodeCeleryMessage(m);
    };
    expect(bad((m) => (m.content = Buffer.from("[[], {}]")))).toThrow("[args, kwargs, embed]");
    expect(bad((m) => (m.content = Buffer.from("not json")))).toThrow("not JSON");
    expect(bad((m) => ((m.options as { correlationId: string }).correlationId = "other"))).toThrow("correlation_id");
    expect(bad((m) => ((m.options.headers as { task: string }).task = ""))).toThrow("task header");
  });

  it("maps full task names under the prefix", () => {
    expect(shortTaskName("celery_workers.stop_lab", "celery_workers")).toBe("stop_lab");
    expect(shortTaskName("other.stop_lab", "celery_workers")).toBeNull();
    expect(shortTaskName("cleanup_lab", "")).toBe("cleanup_lab");
    expect(shortTaskName("celery_workers.rm_rf", "celery_workers")).toBeNull();
  });

  it("start_lab → running with pod and URL; stop/cleanup → stopped; the failing lab id → RuntimeError", () => {
    const msg = decodeCeleryMessage(encoded);
    expect(simulateTask(msg, "celery_workers", "http://localhost:8000")).toEqual({
      status: "SUCCESS",
      result: {
        status: "running",
        k8s_pod_name: "lab-7",
        connection_url: `http://localhost:8000/simulated-lab/7/${msg.id}`,
      },
    });
    const stop = { ...msg, task: "celery_workers.stop_lab", kwargs: { lab_instance_id: 7 } };
    expect(simulateTask(stop, "celery_workers", "x")).toEqual({ status: "SUCCESS", result: { status: "stopped" } });
    const failing = { ...msg, kwargs: { ...msg.kwargs, lab_id: SIMULATED_FAILING_LAB_ID } };
    expect(simulateTask(failing, "celery_workers", "x")).toEqual({
      status: "FAILURE",
      excType: "RuntimeError",
      excMessage: SIMULATED_FAILURE_MESSAGE,
    });
    expect(simulateTask({ ...msg, kwargs: { lab_instance_id: 7 } }, "celery_workers", "x")).toMatchObject({
      status: "FAILURE",
      excType: "TypeError",
    });
    expect(simulateTask({ ...msg, task: "x.start_lab" }, "celery_workers", "x")).toMatchObject({
      excType: "NotRegistered",
    });
  });
});

describe("simulated runner: Celery-shaped results", () => {
  const id = randomUUID();
  const at = new Date("2024-05-01T12:34:56.789Z");

  it("writes the Redis backend's JSON, which parseCeleryResult reads", () => {
    const raw = celeryResultJson(id, { status: "SUCCESS", result: { status: "stopped" } }, at);
    expect(raw).toBe(
      `{"status": "SUCCESS", "result": {"status": "stopped"}, "traceback": null, "children": [], ` +
        `"date_done": "2024-05-01T12:34:56.789000", "task_id": "${id}"}`,
    );
    expect(parseCeleryResult(raw)).toEqual({
      taskId: id,
      status: "SUCCESS",
      result: { status: "stopped" },
      doneAt: at.getTime(),
    });
  });

  it("a failure is a serialized exception with a traceback", () => {
    const raw = celeryResultJson(id, { status: "FAILURE", excType: "RuntimeError", excMessage: "boom" }, at);
    const parsed = parseCeleryResult(raw);
    expect(parsed.status).toBe("FAILURE");
    expect(parsed.error).toBe("RuntimeError: boom");
    expect(parsed.result).toEqual({ exc_type: "RuntimeError", exc_message: ["boom"], exc_module: "builtins" });
    expect(parsed.traceback).toContain("RuntimeError: boom");
  });

  it("date_done is Python's utcnow().isoformat()", () => {
    expect(pyUtcIsoformat(at)).toBe("2024-05-01T12:34:56.789000");
  });
});

describe("Pump", () => {
  it("coalesces wakes during a round into one more round, never two at once", async () => {
    let concurrent = 0;
    let maxConcurrent = 0;
    let rounds = 0;
    let release!: () => void;
    const gate = new Promise<void>((r) => (release = r));
    const pump = new Pump({
      name: "t",
      intervalMs: 60_000,
      round: async () => {
        concurrent++;
        maxConcurrent = Math.max(maxConcurrent, concurrent);
        rounds++;
        if (rounds === 1) await gate;
        concurrent--;
        return false;
      },
      onError: () => undefined,
    });
    pump.start(); // round 1, blocked on the gate
    for (let i = 0; i < 10; i++) pump.wake();
    release();
    await pump.idle();
    expect(rounds).toBe(2);
    expect(maxConcurrent).toBe(1);
    await pump.stop();
  });

  it("runs again at once while a round reports more, contains throws, stops cleanly", async () => {
    const results = [true, true, false];
    const errors: unknown[] = [];
    let rounds = 0;
    const pump = new Pump({
      name: "t",
      intervalMs: 60_000,
      round: () => {
        rounds++;
        if (rounds === 4) return Promise.reject(new Error("db down"));
        return Promise.resolve(results.shift() ?? false);
      },
      onError: (e) => errors.push(e),
    });
    pump.start();
    await pump.idle();
    expect(rounds).toBe(3);
    pump.wake();
    await pump.idle();
    expect(errors).toHaveLength(1);
    await pump.stop();
    pump.wake();
    expect(rounds).toBe(4);
  });
});
