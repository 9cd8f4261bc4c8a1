/**
 * Runs test/celery_worker/labs_worker.py (a real Celery worker, Debian's
 * python3-celery) as a child process for conformance tests.
 */
import { startReadyChild } from "../../platform/child-process";
import { join } from "path";

export const CELERY_WORKER_DIR = join(__dirname, "..", "celery_worker");

/** labs_worker.py: start_lab with this lab_id fails with RuntimeError(FAIL_MESSAGE). */
export const FAILING_LAB_ID = 999999;
export const FAILING_LAB_MESSAGE = "simulated failure: lab 999999 cannot be scheduled";

export interface CeleryWorkerOptions {
  /** The only queue the worker consumes (-Q). */
  queue: string;
  brokerUrl?: string;
  resultBackend?: string;
  taskPrefix?: string;
  /** Debian's interpreter: the pyenv python3 on PATH has no celery. */
  python?: string;
  readyTimeoutMs?: number;
}

export interface CeleryWorker {
  readonly pid: number;
  /** Everything the worker printed so far (bounded), for failure messages. */
  output(): string;
  /** SIGTERM (warm shutdown), then SIGKILL after timeoutMs. Idempotent. */
  stop(timeoutMs?: number): Promise<void>;
}

export async function startCeleryWorker(opts: CeleryWorkerOptions): Promise<CeleryWorker> {
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    CELERY_BROKER_URL: opts.brokerUrl ?? "amqp://guest:guest@127.0.0.1:5672//",
    CELERY_RESULT_BACKEND: opts.resultBackend ?? "redis://127.0.0.1:6379/5",
    CELERY_TASK_PREFIX: opts.taskPrefix ?? "celery_workers",
    AUTOLABS_PARENT_PID: String(process.pid),
    PYTHONUNBUFFERED: "1",
    PYTHONDONTWRITEBYTECODE: "1", // no __pycache__ in the source tree
  };
  delete env.PYTHONHOME; // would point Debian's python at another installation
  const args = [
    "-m",
    "celery",
    "-A",
    "labs_worker",
    "worker",
    "--pool=solo",
    "-Q",
    opts.queue,
    "--loglevel=INFO",
    // Unique node name so workers of parallel test files don't clash; no
    // mingle/gossip/heartbeat: they only slow startup and add broker traffic.
    "-n",
    `autolabs-${opts.queue}@%h`,
    "--without-mingle",
    "--without-gossip",
    "--without-heartbeat",
  ];
  const child = await startReadyChild({
    name: "celery worker",
    command: opts.python ?? "/usr/bin/python3",
    args,
    cwd: CELERY_WORKER_DIR,
    env,
    // Celery logs "<nodename> ready." once its consumer is running.
    ready: / ready\.\s*$/,
    timeoutMs: opts.readyTimeoutMs ?? 30_000,
  });
  return {
    pid: child.child.pid ?? -1,
    output: () => child.output(),
    stop: (timeoutMs = 10_000) => child.stop(timeoutMs),
  };
}
