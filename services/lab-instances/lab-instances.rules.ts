/**
 * Lab instance lifecycle (DESIGN "Lab instance lifecycle") as pure decisions: which status an instance
 * moves to when something happens to it, and which Celery task goes out with the change.
 *
 *   pending → running → stopping → stopped;  pending|running|stopping → failed;  running → expired
 *
 * The service asks `decide(current, event)` inside a transaction that holds the instance row, then writes
 * the outcome with an UPDATE conditional on `current`. Every outcome only ever moves forward along the
 * lifecycle above (the unit tests check every status × event against DESIGN's table), so a late,
 * duplicated or reordered worker result can never move an instance backwards.
 *
 * Pure: no moleculer, no sequelize.
 */

import type { TaskName, TaskResultState } from "../tasks/tasks.contract";

/**
 * The seed lists pending, running, stopped, failed; `stopping` (stop_lab sent, the pod not yet gone) and
 * `expired` (its lifetime ran out) are ours, and every enum a client sees (list filter, rows) has all six.
 */
export type InstanceStatus = "pending" | "running" | "stopping" | "stopped" | "failed" | "expired";
export const INSTANCE_STATUSES: readonly InstanceStatus[] = [
  "pending",
  "running",
  "stopping",
  "stopped",
  "failed",
  "expired",
];

/** Statuses that hold a pod (or may soon): the partial unique index and the per-student cap count these. */
export const ACTIVE_STATUSES: readonly InstanceStatus[] = ["pending", "running", "stopping"];
/** Nothing happens to an instance in these any more (only its pod's cleanup is recorded, as stopped_at). */
export const FINAL_STATUSES: readonly InstanceStatus[] = ["stopped", "failed", "expired"];

export const isFinal = (s: InstanceStatus): boolean => FINAL_STATUSES.includes(s);

/**
 * Position of a status along the lifecycle: strictly increasing along every allowed transition (the tests
 * prove it). The SSE stream uses it as the event id, so the same change has the same id on every gateway
 * node, a reconnecting client's Last-Event-ID says how far it got, and a broadcast that arrives out of
 * order (an older status after a newer one) is recognised and dropped.
 */
export function statusRank(s: InstanceStatus): number {
  switch (s) {
    case "pending":
      return 1;
    case "running":
      return 2;
    case "stopping":
      return 3;
    default:
      return 4;
  }
}

/** What can happen to an instance. */
export type InstanceEvent =
  /** A user (or the system, e.g. the student left the course) asks to stop it. */
  | { kind: "stop" }
  /** A worker's result for one of the instance's tasks. */
  | { kind: "result"; task: TaskName; state: TaskResultState; error?: string }
  /** Sweeper: pending for longer than LAB_START_TIMEOUT_S. */
  | { kind: "start_timed_out"; timeoutS: number }
  /** Sweeper: running past expires_at. */
  | { kind: "lifetime_exceeded" };

export interface Outcome {
  /** New status; absent when the status stays. */
  to?: InstanceStatus;
  /** Task to enqueue in the same transaction. */
  enqueue?: "stop_lab" | "cleanup_lab";
  /** Error text to record with a move to failed. */
  error?: string;
  /** The pod is known to be gone: record stopped_at (if not yet set). */
  podGone?: boolean;
  /** Why nothing changed (logs, 409 details). */
  ignored?: string;
}

export const ERROR_MAX_LENGTH = 2000;

/** A worker's error text as stored: never empty, never unbounded. */
export function errorText(error: string | undefined, fallback: string): string {
  const t = (error ?? "").trim();
  const text = t === "" ? fallback : t;
  return text.length > ERROR_MAX_LENGTH ? `${text.slice(0, ERROR_MAX_LENGTH - 1)}…` : text;
}

function resultOutcome(current: InstanceStatus, task: TaskName, state: TaskResultState, error?: string): Outcome {
  const ok = state === "SUCCESS";
  const failure = () => errorText(error, state === "REVOKED" ? `${task} was revoked` : `${task} failed`);
  switch (task) {
    case "start_lab":
      if (ok) {
        if (current === "pending") return { to: "running" };
        if (current === "running") return { ignored: "duplicate start result" };
        // The pod came up after the instance was given up (stop requested, timed out, failed):
        // the pod exists now and nobody will use it. cleanup_lab removes it; the status stays.
        return { enqueue: "cleanup_lab", ignored: `late start result for a ${current} instance: cleanup scheduled` };
      }
      // A start that failed half-way may have created some of pod, service and network policy:
      // cleanup_lab (idempotent on the worker side) removes whatever is there.
      if (current === "pending") return { to: "failed", error: failure(), enqueue: "cleanup_lab" };
      // Stopping: the stop_lab already on its way finishes the instance; anything else is past this.
      return { ignored: `start ${state} for a ${current} instance` };

    case "stop_lab":
      if (ok) {
        if (current === "stopping") return { to: "stopped", podGone: true };
        if (isFinal(current)) return { podGone: true, ignored: `stop result for a ${current} instance` };
        return { ignored: `stop result for a ${current} instance` };
      }
      // The pod may still be there: the instance is over for the student (no endless "stopping" that
      // blocks a restart), and cleanup_lab gets a second go at the resources.
      if (current === "stopping") return { to: "failed", error: failure(), enqueue: "cleanup_lab" };
      return { ignored: `stop ${state} for a ${current} instance` };

    case "cleanup_lab":
      if (ok) {
        // Cleanup for a stopping instance (a late start seen while stopping) also ends it.
        if (current === "stopping") return { to: "stopped", podGone: true };
        if (isFinal(current)) return { podGone: true };
        return { ignored: `cleanup result for a ${current} instance` };
      }
      // Nothing more to try automatically: the operator sees it in the log.
      return { ignored: `cleanup ${state} for a ${current} instance` };
  }
}

/** The one place that says what an event does to an instance in `current`. */
export function decide(current: InstanceStatus, event: InstanceEvent): Outcome {
  switch (event.kind) {
    case "stop":
      if (current === "pending" || current === "running") return { to: "stopping", enqueue: "stop_lab" };
      return { ignored: current === "stopping" ? "already stopping" : `already ${current}` };
    case "result":
      return resultOutcome(current, event.task, event.state, event.error);
    case "start_timed_out":
      if (current !== "pending") return { ignored: `not pending (${current})` };
      return { to: "failed", error: `start timed out after ${event.timeoutS} s`, enqueue: "cleanup_lab" };
    case "lifetime_exceeded":
      if (current !== "running") return { ignored: `not running (${current})` };
      return { to: "expired", enqueue: "cleanup_lab" };
  }
}

/**
 * How `POST /lab-instances/{id}/stop` answers, given the status found:
 * - pending|running: stop it (202);
 * - stopping|stopped: nothing to do, the caller's intent already holds: 202 with the instance as it is
 *   (a retried request after a lost answer must not fail);
 * - failed|expired: 409, the instance ended some other way and there is nothing to stop.
 */
export type StopAnswer = "stop" | "already" | "conflict";
export function stopAnswer(current: InstanceStatus): StopAnswer {
  if (current === "pending" || current === "running") return "stop";
  if (current === "stopping" || current === "stopped") return "already";
  return "conflict";
}

/** Lifetime of a running instance: the lab's max_lifetime_s, else LAB_MAX_LIFETIME_S. */
export function lifetimeSeconds(labMaxLifetimeS: number | null | undefined, defaultS: number): number {
  return typeof labMaxLifetimeS === "number" && Number.isInteger(labMaxLifetimeS) && labMaxLifetimeS > 0
    ? labMaxLifetimeS
    : defaultS;
}

// ---------------------------------------------------------------------------------------------------------
// Worker results
// ---------------------------------------------------------------------------------------------------------

export const POD_NAME_MAX = 253;
export const CONNECTION_URL_MAX = 2048;
/**
 * Schemes a connection URL may use. The frontend renders it as a link: `javascript:`, `data:` and the like
 * from a misbehaving worker must never reach a student's browser.
 */
export const CONNECTION_URL_SCHEMES = ["http:", "https:", "ws:", "wss:", "ssh:", "vnc:", "rdp:"] as const;

/** What a successful start records: the pod, where to connect, and the worker's port when it sent one. */
export interface StartFields {
  k8s_pod_name: string;
  connection_url: string;
  /** null: the worker sent none (DESIGN's payload has none); the connection answer derives it from the URL. */
  port: number | null;
}
export type StartResult = ({ ok: true } & StartFields) | { ok: false; problem: string };

/** Ports a scheme implies when its URL names none (WHATWG URL leaves `port` empty for http/https/ws/wss defaults). */
const DEFAULT_PORTS: Record<(typeof CONNECTION_URL_SCHEMES)[number], number> = {
  "http:": 80,
  "https:": 443,
  "ws:": 80,
  "wss:": 443,
  "ssh:": 22,
  "vnc:": 5900,
  "rdp:": 3389,
};

/**
 * The port of a connection (the seed: "connection details (URL, port)"): the worker's own when it sent one,
 * else the URL's explicit port, else its scheme's default. null only for a URL that is not one we store.
 */
export function connectionPort(url: string, workerPort: number | null): number | null {
  if (workerPort !== null) return workerPort;
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return null;
  }
  if (parsed.port !== "") return Number(parsed.port);
  const scheme = CONNECTION_URL_SCHEMES.find((s) => s === parsed.protocol);
  return scheme === undefined ? null : DEFAULT_PORTS[scheme];
}

/**
 * start_lab's SUCCESS value: `{"status": "running", "k8s_pod_name", "connection_url"}` (DESIGN "Results"), and
 * optionally `port` (an integer 1..65535) when the worker exposes the lab on a port its URL does not name.
 */
export function parseStartResult(result: unknown): StartResult {
  if (result === null || typeof result !== "object" || Array.isArray(result)) {
    return { ok: false, problem: "start_lab returned no result object" };
  }
  const r = result as Record<string, unknown>;
  if (r.status !== undefined && r.status !== "running") {
    return {
      ok: false,
      problem: `start_lab returned status ${JSON.stringify(r.status).slice(0, 50)}, expected "running"`,
    };
  }
  const pod = r.k8s_pod_name;
  if (typeof pod !== "string" || pod.trim() === "" || pod.length > POD_NAME_MAX) {
    return { ok: false, problem: "start_lab returned no valid k8s_pod_name" };
  }
  const url = r.connection_url;
  if (typeof url !== "string" || url.length > CONNECTION_URL_MAX) {
    return { ok: false, problem: "start_lab returned no valid connection_url" };
  }
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    return { ok: false, problem: "start_lab returned a connection_url that is not a URL" };
  }
  if (!(CONNECTION_URL_SCHEMES as readonly string[]).includes(parsed.protocol)) {
    return { ok: false, problem: `start_lab returned a connection_url with scheme ${parsed.protocol.slice(0, 20)}` };
  }
  const port = r.port ?? null;
  const validPort = typeof port === "number" && Number.isInteger(port) && port >= 1 && port <= 65535;
  if (port !== null && !validPort) {
    return { ok: false, problem: "start_lab returned a port that is not an integer 1..65535" };
  }
  return { ok: true, k8s_pod_name: pod.trim(), connection_url: url, port: validPort ? port : null };
}

/**
 * A worker's result as a lifecycle event. A SUCCESS of start_lab whose value is unusable (no pod name, no
 * or unsafe URL) counts as a failed start: the instance could never be connected to.
 */
export function resultEvent(
  task: TaskName,
  state: TaskResultState,
  result: unknown,
  error: string | undefined,
): { event: InstanceEvent; start?: StartFields } {
  if (task === "start_lab" && state === "SUCCESS") {
    const parsed = parseStartResult(result);
    if (!parsed.ok)
      return { event: { kind: "result", task, state: "FAILURE", error: `InvalidResult: ${parsed.problem}` } };
    return {
      event: { kind: "result", task, state },
      start: { k8s_pod_name: parsed.k8s_pod_name, connection_url: parsed.connection_url, port: parsed.port },
    };
  }
  return { event: { kind: "result", task, state, error } };
}
