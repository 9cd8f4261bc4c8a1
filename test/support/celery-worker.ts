/**
 * Runs test/celery_worker/labs_worker.py (a real Celery worker, Debian's
 * python3-celery) as a child process for conformance tests.
 */
import { ChildProcess, spawn } from "child_process";
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

const OUTPUT_LIMIT = 64 * 1024;

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
    "-m", "celery", "-A", "labs_worker", "worker",
    "--pool=solo", "-Q", opts.queue, "--loglevel=INFO",
    // Unique node name so workers of parallel test files don't clash; no
    // mingle/gossip/heartbeat: they only slow startup and add broker traffic.
    "-n", `autolabs-${opts.queue}@%h`,
    "--without-mingle", "--without-gossip", "--without-heartbeat",
  ];
  const child = spawn(opts.python ?? "/usr/bin/python3", args, {
    cwd: CELERY_WORKER_DIR,
    env,
    stdio: ["ignore", "pipe", "pipe"],
  });

  let output = "";
  const append = (chunk: Buffer): void => {
    output += chunk.toString("utf8");
    if (output.length > OUTPUT_LIMIT) output = output.slice(-OUTPUT_LIMIT);
  };
  child.stdout?.on("data", append);
  child.stderr?.on("data", append);

  const exited = new Promise<void>((resolve) => {
    if (child.exitCode !== null || child.signalCode !== null) resolve();
    else child.once("exit", () => resolve());
  });

  const handle: CeleryWorker = {
    pid: child.pid ?? -1,
    output: () => output,
    stop: (timeoutMs = 10_000) => stopChild(child, exited, timeoutMs),
  };

  try {
    await waitReady(child, () => output, opts.readyTimeoutMs ?? 30_000);
  } catch (e) {
    await handle.stop(2_000);
    throw e;
  }
  return handle;
}

function waitReady(child: ChildProcess, output: () => string, timeoutMs: number): Promise<void> {
  return new Promise<void>((resolve, reject) => {
    const tail = (): string => output().slice(-4000);
    // Celery logs "<nodename> ready." once its consumer is running.
    const check = (): void => {
      if (/ ready\.\s*$/m.test(output())) finish();
    };
    const onExit = (code: number | null, signal: NodeJS.Signals | null): void =>
      finish(new Error(`celery worker exited before ready (code ${code}, signal ${signal}):\n${tail()}`));
    const onError = (err: Error): void => finish(new Error(`cannot start celery worker: ${err.message}`));
    const timer = setTimeout(
      () => finish(new Error(`celery worker not ready after ${timeoutMs} ms:\n${tail()}`)),
      timeoutMs,
    );
    function finish(err?: Error): void {
      clearTimeout(timer);
      child.stdout?.off("data", check);
      child.stderr?.off("data", check);
      child.off("exit", onExit);
      child.off("error", onError);
      if (err) reject(err);
      else resolve();
    }
    child.stdout?.on("data", check);
    child.stderr?.on("data", check);
    child.once("exit", onExit);
    child.once("error", onError);
    check();
  });
}

async function stopChild(child: ChildProcess, exited: Promise<void>, timeoutMs: number): Promise<void> {
  if (child.exitCode !== null || child.signalCode !== null) return;
  child.kill("SIGTERM");
  let timer: NodeJS.Timeout | undefined;
  const timedOut = await Promise.race([
    exited.then(() => false),
    new Promise<boolean>((resolve) => {
      timer = setTimeout(() => resolve(true), timeoutMs);
    }),
  ]);
  clearTimeout(timer);
  if (timedOut && child.exitCode === null && child.signalCode === null) {
    child.kill("SIGKILL");
    await exited;
  }
}
