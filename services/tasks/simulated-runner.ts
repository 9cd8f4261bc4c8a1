/**
 * Embedded mode's stand-in for the Celery workers (no CELERY_BROKER_URL): it takes the very messages the
 * relay would publish to RabbitMQ (encodeCeleryTask output), decodes them as a worker would (body JSON,
 * headers), "runs" the task after a delay and stores a result in the JSON shape Celery's Redis backend
 * stores, in an in-memory result store the ordinary result consumer reads (push and reconcile alike).
 * Nothing is started anywhere: connection URLs point at the gateway's simulated-lab page,
 * /simulated-lab/<instance id>/<start task id> (the task id makes the URL unguessable, as a real lab's is).
 */
import {
  canonicalKwargs,
  isCeleryTaskName,
  pyJsonDumps,
  type CeleryTaskName,
  type EncodedCeleryTask,
} from "./celery-protocol";
import { errorText } from "./relay.rules";
import type { PublishOutcome, ResultSource, ResultSourceState, TaskPublisher } from "./transport";

/** Like test/celery_worker/labs_worker.py: start_lab of this lab id fails, to exercise FAILURE end to end. */
export const SIMULATED_FAILING_LAB_ID = 999999;
/** Where simulated connection URLs point; the gateway serves the simulated-lab page there (embedded mode only). */
export const SIMULATED_LAB_PATH = "/simulated-lab";
export const SIMULATED_FAILURE_MESSAGE = `simulated failure: lab ${SIMULATED_FAILING_LAB_ID} cannot be scheduled`;

// ---------------------------------------------------------------------------
// Pure: decoding a message, the simulated outcome, Celery's stored result JSON
// ---------------------------------------------------------------------------

export interface DecodedCeleryMessage {
  id: string;
  /** Full task name from the `task` header. */
  task: string;
  args: unknown[];
  kwargs: Record<string, unknown>;
  routingKey: string;
}

function isRecord(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/** Compared as plain strings: a message may come from anywhere, whatever its type says. */
function expectOption(what: string, actual: string, expected: string): void {
  if (actual !== expected) throw new Error(`unsupported ${what} ${actual}`);
}

/** What a Celery worker reads from a protocol v2 message; throws on anything a worker would reject. */
export function decodeCeleryMessage(msg: EncodedCeleryTask): DecodedCeleryMessage {
  const { options } = msg;
  expectOption("content type", options.contentType, "application/json");
  expectOption("content encoding", options.contentEncoding, "utf-8");
  const headers: Record<string, unknown> = { ...options.headers };
  if (headers.lang !== "py") throw new Error("not a protocol v2 message (lang header)");
  const { id, task } = headers;
  if (typeof id !== "string" || id === "") throw new Error("message without a task id header");
  if (typeof task !== "string" || task === "") throw new Error("message without a task header");
  if (options.correlationId !== id) throw new Error("correlation_id differs from the task id");
  let body: unknown;
  try {
    body = JSON.parse(msg.content.toString("utf8"));
  } catch (e) {
    throw new Error(`body is not JSON: ${errorText(e)}`, { cause: e });
  }
  if (!Array.isArray(body) || body.length !== 3) throw new Error("body is not [args, kwargs, embed]");
  const [args, kwargs, embed] = body as [unknown, unknown, unknown];
  if (!Array.isArray(args) || !isRecord(kwargs) || !isRecord(embed))
    throw new Error("body is not [args, kwargs, embed]");
  return { id, task, args, kwargs, routingKey: msg.routingKey };
}

export type SimulatedOutcome =
  { status: "SUCCESS"; result: Record<string, unknown> } | { status: "FAILURE"; excType: string; excMessage: string };

/** The short name of a full task name under `prefix`, or null if it is not one of ours. */
export function shortTaskName(task: string, prefix: string): CeleryTaskName | null {
  const short = prefix === "" ? task : task.startsWith(`${prefix}.`) ? task.slice(prefix.length + 1) : null;
  return short !== null && isCeleryTaskName(short) ? short : null;
}

/** What the real worker would answer, minus Kubernetes. */
export function simulateTask(message: DecodedCeleryMessage, prefix: string, publicUrl: string): SimulatedOutcome {
  const name = shortTaskName(message.task, prefix);
  // A worker without the task registered answers NotRegistered; with wrong arguments, TypeError.
  if (name === null) return { status: "FAILURE", excType: "NotRegistered", excMessage: `'${message.task}'` };
  if (message.args.length > 0) {
    return { status: "FAILURE", excType: "TypeError", excMessage: `${name}() takes no positional arguments` };
  }
  let kwargs;
  try {
    kwargs = canonicalKwargs(name, message.kwargs);
  } catch (e) {
    return { status: "FAILURE", excType: "TypeError", excMessage: errorText(e) };
  }
  if (name === "start_lab") {
    const { lab_instance_id: id, lab_id: labId } = kwargs as { lab_instance_id: number; lab_id: number };
    if (labId === SIMULATED_FAILING_LAB_ID) {
      return { status: "FAILURE", excType: "RuntimeError", excMessage: SIMULATED_FAILURE_MESSAGE };
    }
    return {
      status: "SUCCESS",
      result: {
        status: "running",
        k8s_pod_name: `lab-${id}`,
        connection_url: `${publicUrl}${SIMULATED_LAB_PATH}/${id}/${message.id}`,
      },
    };
  }
  return { status: "SUCCESS", result: { status: "stopped" } };
}

/** Python's datetime.utcnow().isoformat(): microseconds, no zone (what Celery 5.2 writes as date_done). */
export function pyUtcIsoformat(d: Date): string {
  return `${d.toISOString().slice(0, 23)}000`;
}

/**
 * The value Celery's Redis backend stores at celery-task-meta-<id> (and publishes on that channel):
 * `{"status", "result", "traceback", "children", "date_done", "task_id"}`, json.dumps spacing; a failure's
 * result is the serialized exception `{"exc_type", "exc_message": [args], "exc_module"}`.
 */
export function celeryResultJson(taskId: string, outcome: SimulatedOutcome, now: Date = new Date()): string {
  const failed = outcome.status === "FAILURE";
  const meta = {
    status: outcome.status,
    result: failed
      ? {
          exc_type: outcome.excType,
          exc_message: [outcome.excMessage],
          exc_module: outcome.excType === "NotRegistered" ? "celery.exceptions" : "builtins",
        }
      : outcome.result,
    traceback: failed
      ? `Traceback (most recent call last):\n  File "<simulated lab runner>", line 1, in <module>\n${outcome.excType}: ${outcome.excMessage}\n`
      : null,
    children: [],
    date_done: pyUtcIsoformat(now),
    task_id: taskId,
  };
  return pyJsonDumps(meta);
}

// ---------------------------------------------------------------------------
// The in-memory result store (stands in for Redis)
// ---------------------------------------------------------------------------

export interface MemoryResultStoreOptions {
  /** Results older than this are dropped (Celery's result_expires: a day). */
  ttlMs: number;
  /** And at most this many are kept (oldest dropped first). */
  maxEntries: number;
}

export class MemoryResultStore implements ResultSource {
  private readonly results = new Map<string, { raw: string; at: number }>();
  private listener: ((taskId: string, raw: string) => void) | null = null;

  constructor(private readonly opts: MemoryResultStoreOptions = { ttlMs: 86_400_000, maxEntries: 10_000 }) {}

  state(): ResultSourceState {
    return "simulated";
  }

  // The Redis source's interface; nothing here awaits or throws.
  start(onResult: (taskId: string, raw: string) => void): Promise<void> {
    this.listener = onResult;
    return Promise.resolve();
  }

  /** SET + PUBLISH, as the Redis backend does. */
  put(taskId: string, raw: string): void {
    this.results.delete(taskId); // re-insert: Map order is age order
    this.results.set(taskId, { raw, at: Date.now() });
    this.evict();
    this.listener?.(taskId, raw);
  }

  get(taskIds: readonly string[]): Promise<(string | null)[]> {
    this.evict();
    return Promise.resolve(taskIds.map((id) => this.results.get(id)?.raw ?? null));
  }

  close(): Promise<void> {
    this.listener = null;
    this.results.clear();
    return Promise.resolve();
  }

  private evict(): void {
    const oldest = Date.now() - this.opts.ttlMs;
    for (const [id, r] of this.results) {
      if (this.results.size <= this.opts.maxEntries && r.at >= oldest) break;
      this.results.delete(id);
    }
  }
}

// ---------------------------------------------------------------------------
// The simulated runner (a TaskPublisher)
// ---------------------------------------------------------------------------

export interface SimulatedRunnerOptions {
  store: MemoryResultStore;
  /** CELERY_TASK_PREFIX: tasks under another prefix are "not registered", as on a real worker. */
  taskPrefix: string;
  /** Base of the simulated connection URLs (the gateway). */
  publicUrl: string;
  /** How long a simulated task "runs". */
  delayMs: number;
  onError?: (message: string) => void;
}

export class SimulatedRunner implements TaskPublisher {
  private readonly timers = new Set<NodeJS.Timeout>();
  private closed = false;

  constructor(private readonly opts: SimulatedRunnerOptions) {}

  state() {
    return "simulated" as const;
  }

  lastError(): string | null {
    return null;
  }

  ready(): Promise<boolean> {
    if (this.closed) return Promise.reject(new Error("simulated runner stopped"));
    return Promise.resolve(false);
  }

  /** "Publishing" is accepting the message into this process; the broker confirm is immediate. */
  publishBatch(messages: readonly EncodedCeleryTask[]): Promise<PublishOutcome[]> {
    return Promise.resolve(
      messages.map((m) => {
        if (this.closed) return { ok: false, error: "simulated runner stopped" };
        let decoded: DecodedCeleryMessage;
        try {
          decoded = decodeCeleryMessage(m);
        } catch (e) {
          // A real broker would take it and the worker would drop it: say so loudly, never hide it.
          this.opts.onError?.(`simulated runner cannot read message ${m.options.correlationId}: ${errorText(e)}`);
          return { ok: true };
        }
        const timer = setTimeout(() => {
          this.timers.delete(timer);
          if (this.closed) return;
          const outcome = simulateTask(decoded, this.opts.taskPrefix, this.opts.publicUrl);
          this.opts.store.put(decoded.id, celeryResultJson(decoded.id, outcome));
        }, this.opts.delayMs);
        // The "worker" must not keep the process alive on its own.
        timer.unref();
        this.timers.add(timer);
        return { ok: true };
      }),
    );
  }

  /** Tasks not finished are dropped; on the next start the service sends them again (requeueUnfinished). */
  close(): Promise<void> {
    this.closed = true;
    for (const t of this.timers) clearTimeout(t);
    this.timers.clear();
    return Promise.resolve();
  }
}
