/**
 * Pure rules of the tasks service: retry pacing of the outbox relay and of result application, and the
 * mapping from a Celery result to the `lab-instances.applyTaskResult` call. No I/O, no framework imports.
 */
import { CELERY_READY_STATES, isCeleryTaskName, type CeleryResult } from "./celery-protocol";
import type { ApplyTaskResultParams } from "../lab-instances/lab-instances.contract";
import type { TaskResultState } from "./tasks.contract";

export interface BackoffPolicy {
  /** Delay before the 2nd try (attempt 1 failed), before jitter. */
  baseMs: number;
  /** Upper bound of any delay. */
  capMs: number;
}

/** Outbox rows: 1 s, 2 s, 4 s … 60 s. */
export const PUBLISH_BACKOFF: BackoffPolicy = { baseMs: 1_000, capMs: 60_000 };
/** Broker (re)connection attempts: 1 s … 15 s, so a broker coming back is noticed within ~15 s. */
export const CONNECT_BACKOFF: BackoffPolicy = { baseMs: 1_000, capMs: 15_000 };
/** A result lab-instances refused or could not take: 1 s … 30 s. */
export const APPLY_BACKOFF: BackoffPolicy = { baseMs: 1_000, capMs: 30_000 };

/**
 * Delay after the `failures`-th consecutive failure (1-based): exponential, capped, with "equal jitter"
 * (half fixed, half random). The random half spreads the retries of rows that failed together (a broker
 * outage fails a whole batch at once) so they do not come back as one burst; the fixed half keeps the
 * growth, so a long outage is retried ever less often.
 */
export function backoffDelayMs(failures: number, policy: BackoffPolicy, random: () => number = Math.random): number {
  const n = Number.isFinite(failures) ? Math.max(1, Math.floor(failures)) : 1;
  // 2^(n-1) overflows to Infinity for huge n; min() with the cap keeps it finite.
  const ceiling = Math.min(policy.capMs, policy.baseMs * 2 ** (n - 1));
  const r = Math.min(Math.max(random(), 0), 1);
  return Math.round(ceiling / 2 + (ceiling / 2) * r);
}

/** last_error / result_error are for people reading the table: bounded, one line. */
export const MAX_ERROR_TEXT = 1_000;

/** Error-like: duck-typed, because errors made by Node internals fail `instanceof Error` in another realm (jest). */
function errorLike(err: unknown): { name: string; message: string; errors?: unknown } | null {
  if (typeof err !== "object" || err === null) return null;
  const e = err as { name?: unknown; message?: unknown; errors?: unknown };
  if (typeof e.message !== "string") return null;
  return { name: typeof e.name === "string" ? e.name : "Error", message: e.message, errors: e.errors };
}

export function errorText(err: unknown): string {
  let s: string;
  const e = errorLike(err);
  if (e) {
    s = e.message;
    // AggregateError (e.g. a connect that tried IPv4 and IPv6) has an empty message: use its parts.
    if (s.trim() === "" && Array.isArray(e.errors) && e.errors.length > 0) {
      s = e.errors.map((x) => errorText(x)).join("; ");
    }
    if (s.trim() === "") s = e.name;
  } else if (typeof err === "string") s = err;
  else {
    try {
      // undefined for undefined, functions and symbols (the typing says string).
      const json = JSON.stringify(err) as string | undefined;
      s = json ?? String(err);
    } catch {
      s = String(err);
    }
  }
  if (s.trim() === "") s = "unknown error";
  s = s.replace(/\s+/g, " ").trim();
  return s.length > MAX_ERROR_TEXT ? `${s.slice(0, MAX_ERROR_TEXT - 1)}…` : s;
}

const UUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/i;

/** Our task ids are uuids (task_outbox.id is a uuid column): anything else is not ours, and would not even bind. */
export function isTaskId(s: unknown): s is string {
  return typeof s === "string" && UUID_RE.test(s);
}

export const RESULT_KEY_PREFIX = "celery-task-meta-";
/** Pattern of every result channel of Celery's Redis backend (channel name = key name). */
export const RESULT_CHANNEL_PATTERN = `${RESULT_KEY_PREFIX}*`;

/** `celery-task-meta-<uuid>` → the uuid; anything else → null. */
export function taskIdFromResultChannel(channel: string): string | null {
  if (!channel.startsWith(RESULT_KEY_PREFIX)) return null;
  const id = channel.slice(RESULT_KEY_PREFIX.length);
  return isTaskId(id) ? id : null;
}

export function isReadyState(status: string): status is TaskResultState {
  return (CELERY_READY_STATES as readonly string[]).includes(status);
}

/** What the outbox knows about a task (the result itself does not say which instance it was for). */
export interface OutboxTaskRef {
  id: string;
  task_name: string;
  lab_instance_id: number | null;
}

export type ApplyDecision =
  | { kind: "apply"; params: ApplyTaskResultParams }
  /** Not final yet (PENDING, STARTED, RETRY…): wait for the next write. */
  | { kind: "wait" }
  /** Final, but there is nothing to apply it to: settle the row without calling. */
  | { kind: "settle"; status: string; reason: string };

/** Decides what to do with a parsed Celery result of an outbox row. */
export function decideResult(row: OutboxTaskRef, result: CeleryResult): ApplyDecision {
  if (result.taskId !== row.id) {
    return { kind: "settle", status: "MISMATCH", reason: `result is for task ${result.taskId}, not ${row.id}` };
  }
  if (!isReadyState(result.status)) return { kind: "wait" };
  if (!isCeleryTaskName(row.task_name)) {
    return { kind: "settle", status: result.status, reason: `unknown task name ${JSON.stringify(row.task_name)}` };
  }
  // The instance row was deleted (ON DELETE SET NULL): the result has nowhere to go.
  if (row.lab_instance_id === null) {
    return { kind: "settle", status: result.status, reason: "lab instance no longer exists" };
  }
  const params: ApplyTaskResultParams = {
    task_id: row.id,
    task_name: row.task_name,
    lab_instance_id: row.lab_instance_id,
    status: result.status,
  };
  if (result.status === "SUCCESS") params.result = result.result;
  else params.error = result.error ?? result.status;
  return { kind: "apply", params };
}

/**
 * Errors from `broker.call` that mean "the other side was not there or did not answer": worth retrying
 * soon. Branches on `type`/`code`/`name`, never instanceof (errors cross nodes as plain objects).
 */
export function isTransientCallError(err: unknown): boolean {
  if (!err || typeof err !== "object") return false;
  const e = err as { name?: unknown; type?: unknown; code?: unknown; retryable?: unknown };
  if (e.retryable === true) return true;
  const transientTypes = [
    "SERVICE_NOT_FOUND",
    "SERVICE_NOT_AVAILABLE",
    "REQUEST_TIMEOUT",
    "REQUEST_SKIPPED",
    "REQUEST_REJECTED",
  ];
  if (typeof e.type === "string" && transientTypes.includes(e.type)) return true;
  return typeof e.code === "number" && e.code >= 500;
}
