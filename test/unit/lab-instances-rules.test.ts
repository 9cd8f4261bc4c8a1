import {
  ACTIVE_STATUSES,
  FINAL_STATUSES,
  INSTANCE_STATUSES,
  decide,
  errorText,
  isFinal,
  lifetimeSeconds,
  parseStartResult,
  connectionPort,
  resultEvent,
  statusRank,
  stopAnswer,
  type InstanceEvent,
  type InstanceStatus,
} from "../../services/lab-instances/lab-instances.rules";
import { TASK_NAMES, TASK_RESULT_STATES, type TaskName } from "../../services/tasks/tasks.contract";

/**
 * DESIGN's lifecycle: the oracle `decide` and `statusRank` are checked against. `expired` is final: the
 * lifetime ran out, cleanup_lab removes the pod, and the cleanup's success is recorded as stopped_at without overwriting *why* the instance ended (DESIGN's
 * "expired (then stopped)" is read as "the pod is then stopped"). Final statuses never change.
 */
const TRANSITIONS: { readonly [S in InstanceStatus]: readonly InstanceStatus[] } = {
  pending: ["running", "stopping", "failed"],
  running: ["stopping", "failed", "expired"],
  stopping: ["stopped", "failed"],
  stopped: [],
  failed: [],
  expired: [],
};

const canTransition = (from: InstanceStatus, to: InstanceStatus): boolean => TRANSITIONS[from].includes(to);

const TASKS = TASK_NAMES;
const STATES = TASK_RESULT_STATES;
const EVENTS: InstanceEvent[] = [
  { kind: "stop" },
  { kind: "start_timed_out", timeoutS: 300 },
  { kind: "lifetime_exceeded" },
  ...TASKS.flatMap((task) =>
    STATES.map((state): InstanceEvent => ({ kind: "result", task, state, error: "RuntimeError: boom" })),
  ),
];

describe("lifecycle table", () => {
  it("ranks grow strictly along every allowed transition (SSE ids never go backwards)", () => {
    for (const from of INSTANCE_STATUSES) {
      for (const to of TRANSITIONS[from]) expect(statusRank(to)).toBeGreaterThan(statusRank(from));
    }
  });

  it("active and final partition the statuses", () => {
    for (const s of INSTANCE_STATUSES) expect(ACTIVE_STATUSES.includes(s)).toBe(!isFinal(s));
  });
});

describe("decide", () => {
  it("every outcome for every status × event is an allowed transition (never backwards)", () => {
    for (const s of INSTANCE_STATUSES) {
      for (const e of EVENTS) {
        const o = decide(s, e);
        if (o.to !== undefined) expect([s, e, canTransition(s, o.to)]).toEqual([s, e, true]);
        if (isFinal(s)) expect(o.to).toBeUndefined();
      }
    }
  });

  it("stop: pending and running go to stopping with stop_lab; others are left alone", () => {
    expect(decide("pending", { kind: "stop" })).toEqual({ to: "stopping", enqueue: "stop_lab" });
    expect(decide("running", { kind: "stop" })).toEqual({ to: "stopping", enqueue: "stop_lab" });
    for (const s of ["stopping", "stopped", "failed", "expired"] as InstanceStatus[]) {
      const o = decide(s, { kind: "stop" });
      expect(o.to).toBeUndefined();
      expect(o.enqueue).toBeUndefined();
    }
  });

  it("start SUCCESS: pending → running; duplicate is a no-op; late → cleanup_lab without a status change", () => {
    const ok: InstanceEvent = { kind: "result", task: "start_lab", state: "SUCCESS" };
    expect(decide("pending", ok)).toEqual({ to: "running" });
    expect(decide("running", ok)).toEqual({ ignored: "duplicate start result" });
    for (const s of ["stopping", "stopped", "failed", "expired"] as InstanceStatus[]) {
      const o = decide(s, ok);
      expect(o.to).toBeUndefined();
      expect(o.enqueue).toBe("cleanup_lab");
    }
  });

  it("start FAILURE: pending → failed with the error and a cleanup; later statuses ignore it", () => {
    const bad: InstanceEvent = {
      kind: "result",
      task: "start_lab",
      state: "FAILURE",
      error: "RuntimeError: no node fits",
    };
    expect(decide("pending", bad)).toEqual({
      to: "failed",
      error: "RuntimeError: no node fits",
      enqueue: "cleanup_lab",
    });
    expect(decide("pending", { kind: "result", task: "start_lab", state: "REVOKED" }).error).toBe(
      "start_lab was revoked",
    );
    for (const s of ["running", "stopping", "stopped", "failed", "expired"] as InstanceStatus[]) {
      expect(decide(s, bad).to).toBeUndefined();
      expect(decide(s, bad).enqueue).toBeUndefined();
    }
  });

  it("stop and cleanup results finish a stopping instance; on a final one they only record the pod gone", () => {
    for (const task of ["stop_lab", "cleanup_lab"] as TaskName[]) {
      expect(decide("stopping", { kind: "result", task, state: "SUCCESS" })).toEqual({ to: "stopped", podGone: true });
      for (const s of FINAL_STATUSES) {
        const o = decide(s, { kind: "result", task, state: "SUCCESS" });
        expect(o.to).toBeUndefined();
        expect(o.podGone).toBe(true);
      }
      expect(decide("running", { kind: "result", task, state: "SUCCESS" }).to).toBeUndefined();
    }
    expect(decide("expired", { kind: "result", task: "cleanup_lab", state: "SUCCESS" }).to).toBeUndefined();
  });

  it("a failed stop fails the instance and tries a cleanup; a failed cleanup changes nothing", () => {
    expect(
      decide("stopping", { kind: "result", task: "stop_lab", state: "FAILURE", error: "ApiException: 500" }),
    ).toEqual({
      to: "failed",
      error: "ApiException: 500",
      enqueue: "cleanup_lab",
    });
    for (const s of INSTANCE_STATUSES) {
      const o = decide(s, { kind: "result", task: "cleanup_lab", state: "FAILURE" });
      expect(o.to).toBeUndefined();
      expect(o.enqueue).toBeUndefined();
    }
  });

  it("sweeper events act only on the status they are about", () => {
    expect(decide("pending", { kind: "start_timed_out", timeoutS: 300 })).toEqual({
      to: "failed",
      error: "start timed out after 300 s",
      enqueue: "cleanup_lab",
    });
    expect(decide("running", { kind: "lifetime_exceeded" })).toEqual({ to: "expired", enqueue: "cleanup_lab" });
    expect(decide("running", { kind: "start_timed_out", timeoutS: 1 }).to).toBeUndefined();
    expect(decide("pending", { kind: "lifetime_exceeded" }).to).toBeUndefined();
    expect(decide("stopping", { kind: "lifetime_exceeded" }).to).toBeUndefined();
  });
});

describe("stop answers", () => {
  it("202 for stop/already, 409 for an instance that ended another way", () => {
    expect(stopAnswer("pending")).toBe("stop");
    expect(stopAnswer("running")).toBe("stop");
    expect(stopAnswer("stopping")).toBe("already");
    expect(stopAnswer("stopped")).toBe("already");
    expect(stopAnswer("failed")).toBe("conflict");
    expect(stopAnswer("expired")).toBe("conflict");
  });
});

describe("times", () => {
  it("lifetime: the lab's own, else the default", () => {
    expect(lifetimeSeconds(600, 14400)).toBe(600);
    expect(lifetimeSeconds(null, 14400)).toBe(14400);
    expect(lifetimeSeconds(undefined, 14400)).toBe(14400);
    expect(lifetimeSeconds(0, 14400)).toBe(14400);
  });
});

describe("worker results", () => {
  it("accepts the DESIGN start result", () => {
    expect(
      parseStartResult({ status: "running", k8s_pod_name: "lab-12", connection_url: "https://labs.example.test/i/12" }),
    ).toEqual({ ok: true, k8s_pod_name: "lab-12", connection_url: "https://labs.example.test/i/12", port: null });
  });

  it("takes the worker's port when it sends one (an integer 1..65535), refuses a bad one", () => {
    const base = { status: "running", k8s_pod_name: "p", connection_url: "ssh://lab.example.test" };
    expect(parseStartResult({ ...base, port: 2222 })).toMatchObject({ ok: true, port: 2222 });
    expect(parseStartResult({ ...base, port: null })).toMatchObject({ ok: true, port: null });
    for (const port of [0, 65536, 22.5, "22", true]) expect(parseStartResult({ ...base, port }).ok).toBe(false);
  });

  it("connection port: the worker's, else the URL's explicit one, else the scheme's default", () => {
    expect(connectionPort("https://x.test/i/1", 8443)).toBe(8443);
    expect(connectionPort("https://x.test:9443/i/1", null)).toBe(9443);
    expect(connectionPort("http://x.test:8080", null)).toBe(8080);
    expect(connectionPort("https://x.test/i/1", null)).toBe(443);
    expect(connectionPort("http://x.test", null)).toBe(80);
    expect(connectionPort("https://x.test:443/", null)).toBe(443);
    expect(connectionPort("wss://x.test", null)).toBe(443);
    expect(connectionPort("ssh://x.test", null)).toBe(22);
    expect(connectionPort("ssh://x.test:2200", null)).toBe(2200);
    expect(connectionPort("vnc://x.test", null)).toBe(5900);
    expect(connectionPort("rdp://x.test", null)).toBe(3389);
    expect(connectionPort("not a url", null)).toBeNull();
  });

  it("refuses unusable or unsafe start results", () => {
    for (const r of [
      null,
      "running",
      [],
      { status: "pending", k8s_pod_name: "p", connection_url: "https://x" },
      { k8s_pod_name: "", connection_url: "https://x" },
      { k8s_pod_name: "p" },
      { k8s_pod_name: "p", connection_url: "not a url" },
      { k8s_pod_name: "p", connection_url: "javascript:alert(1)" },
      { k8s_pod_name: "p", connection_url: "data:text/html,hi" },
      { k8s_pod_name: "p".repeat(254), connection_url: "https://x" },
      { k8s_pod_name: "p", connection_url: `https://x/${"a".repeat(2100)}` },
    ]) {
      expect(parseStartResult(r).ok).toBe(false);
    }
  });

  it("an unusable start SUCCESS becomes a failed start", () => {
    const { event, start } = resultEvent(
      "start_lab",
      "SUCCESS",
      { k8s_pod_name: "p", connection_url: "javascript:x" },
      undefined,
    );
    expect(start).toBeUndefined();
    expect(event).toMatchObject({ kind: "result", task: "start_lab", state: "FAILURE" });
    expect(decide("pending", event)).toMatchObject({ to: "failed", enqueue: "cleanup_lab" });
    expect((decide("pending", event).error ?? "").startsWith("InvalidResult: ")).toBe(true);
  });

  it("error texts are never empty and bounded", () => {
    expect(errorText(undefined, "start_lab failed")).toBe("start_lab failed");
    expect(errorText("   ", "x")).toBe("x");
    expect(errorText("E".repeat(5000), "x").length).toBe(2000);
  });
});
