/**
 * Embedded PostgreSQL for embedded mode: PGlite (PostgreSQL compiled to WASM) served over the PostgreSQL
 * wire protocol by `pglite-server` (@electric-sql/pglite-socket), run as a child process so its
 * one-query-at-a-time WASM engine never blocks the app's event loop. The app then talks to it with the same
 * `pg`/Sequelize code as to a real server.
 *
 * Measured here (2 vCPU): a cold start on an empty dir (initdb) takes ~6 s, a warm start ~1.4 s, a clean
 * stop ~1.3 s. Data lives in <dataDir>/pg and survives restarts, including a SIGKILL of the server
 * (PostgreSQL crash recovery on the next start).
 *
 * Child lifetime (the server must never outlive the app, or it keeps the port and the data dir):
 * - stop() sends SIGTERM (pglite-server closes the database cleanly), SIGKILL after a timeout;
 * - on the parent's 'exit' (normal exit, process.exit(), uncaught exception) the child gets SIGTERM;
 * - if the parent dies without running JS (SIGKILL, OOM kill, crash) a watchdog preloaded into the child
 *   notices it was re-parented (ppid changed, checked every 500 ms) and shuts itself down cleanly.
 * The child runs in its own process group (detached) so a terminal's Ctrl-C reaches only the app, which
 * then closes its pool before calling stop(): the database never disappears under a graceful shutdown.
 * Not covered: a parent killed while the child is being SIGKILLed itself, or a frozen (SIGSTOPped) parent.
 *
 * pglite-server itself does not lock its data dir (two servers on one dir corrupt it), so we keep a pid
 * file beside it and refuse to start while the pid it names is alive.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { createServer } from "node:net";
import path from "node:path";
import { Client } from "pg";

export interface EmbeddedPostgresLogger {
  info(...args: unknown[]): void;
  warn(...args: unknown[]): void;
  debug(...args: unknown[]): void;
}

export interface EmbeddedPostgresOptions {
  /** The app's data dir; the database goes to <dataDir>/pg. */
  dataDir: string;
  port: number;
  /** Connection slots of the server: at least the app's pool size + a few (migration lock, CLI, psql). */
  maxConnections: number;
  logger?: EmbeddedPostgresLogger;
  /** How long to wait for the first successful query (a cold start runs initdb). Default 120 s. */
  startTimeoutMs?: number;
  /** How long stop() waits after SIGTERM before SIGKILL. Default 15 s. */
  stopTimeoutMs?: number;
}

export interface EmbeddedPostgres {
  /** postgres://postgres@127.0.0.1:<port>/postgres (PGlite accepts any credentials). */
  url: string;
  /** Process id of the pglite-server child. */
  pid: number;
  /** Stops the server and waits until it exited (data flushed). Idempotent. */
  stop(): Promise<void>;
}

const HOST = "127.0.0.1";
const PID_FILE = "pglite-server.pid";
/** Keep this many lines of the child's output for error messages. */
const OUTPUT_LINES = 40;

/** Preloaded into the child (node --import): exits cleanly once the parent is gone. Plain JS, no deps. */
const WATCHDOG = [
  "const parent = process.ppid;",
  "setInterval(() => {",
  "  if (process.ppid !== parent) {",
  "    console.error('pglite-server: parent process gone, shutting down');",
  "    process.kill(process.pid, 'SIGTERM');",
  "  }",
  "}, 500).unref();",
].join("\n");

function serverScript(): string {
  // The package exports only "."; its bin script sits next to the CommonJS entry point.
  const entry = require.resolve("@electric-sql/pglite-socket");
  return path.join(path.dirname(entry), "scripts", "server.js");
}

function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    // EPERM: it exists but belongs to someone else.
    return (e as NodeJS.ErrnoException).code === "EPERM";
  }
}

/** The pid a previous server left in the pid file, if that process still runs pglite-server. */
function runningServerPid(pidFile: string): number | undefined {
  if (!existsSync(pidFile)) return undefined;
  const pid = Number(readFileSync(pidFile, "utf8").trim());
  if (!Number.isInteger(pid) || pid <= 0 || !isAlive(pid)) return undefined;
  try {
    // Linux: guard against a recycled pid that now belongs to an unrelated process.
    const cmdline = readFileSync(`/proc/${pid}/cmdline`, "utf8");
    if (!cmdline.includes("pglite")) return undefined;
  } catch {
    // No /proc (macOS): trust the liveness check.
  }
  return pid;
}

function portIsFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const probe = createServer();
    probe.once("error", () => resolve(false));
    probe.listen(port, HOST, () => probe.close(() => resolve(true)));
  });
}

async function canQuery(url: string): Promise<boolean> {
  const client = new Client({ connectionString: url, connectionTimeoutMillis: 3_000 });
  client.on("error", () => undefined);
  try {
    await client.connect();
    await client.query("SELECT 1");
    return true;
  } catch {
    return false;
  } finally {
    await client.end().catch(() => undefined);
  }
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export async function startEmbeddedPostgres(opts: EmbeddedPostgresOptions): Promise<EmbeddedPostgres> {
  const { port, maxConnections, logger } = opts;
  if (!Number.isInteger(maxConnections) || maxConnections < 2) {
    throw new Error(`embedded PostgreSQL: maxConnections must be an integer >= 2, got ${maxConnections}`);
  }
  const dataDir = path.resolve(opts.dataDir);
  const dbDir = path.join(dataDir, "pg");
  const pidFile = path.join(dataDir, PID_FILE);
  mkdirSync(dataDir, { recursive: true });

  const previous = runningServerPid(pidFile);
  if (previous !== undefined) {
    throw new Error(
      `embedded PostgreSQL: ${dbDir} is in use by a running pglite-server (pid ${previous}), probably left by a ` +
        `previous run or another instance of the platform. Stop it (kill ${previous}) or use another DATA_DIR.`,
    );
  }
  if (!(await portIsFree(port))) {
    throw new Error(
      `embedded PostgreSQL: port ${HOST}:${port} is already in use (a previous embedded PostgreSQL or another ` +
        `server). Stop it or choose another port with EMBEDDED_PG_PORT.`,
    );
  }

  const coldStart = !existsSync(path.join(dbDir, "PG_VERSION"));
  const started = Date.now();
  logger?.info(
    `embedded PostgreSQL (PGlite) starting on ${HOST}:${port}, data in ${dbDir}` +
      (coldStart ? " (first start: initialising the database, this takes a few seconds)" : ""),
  );

  const child: ChildProcess = spawn(
    process.execPath,
    [
      "--import",
      `data:text/javascript,${encodeURIComponent(WATCHDOG)}`,
      serverScript(),
      `--db=${dbDir}`,
      `--host=${HOST}`,
      `--port=${port}`,
      `--max-connections=${maxConnections}`,
    ],
    { stdio: ["ignore", "pipe", "pipe"], detached: true },
  );
  if (child.pid === undefined) {
    // spawn() reports failure asynchronously through 'error'; wait for it to get the reason.
    const err = await new Promise<Error>((resolve) => child.once("error", resolve));
    throw new Error(`embedded PostgreSQL: cannot start ${process.execPath}: ${err.message}`);
  }
  const pid = child.pid;
  writeFileSync(pidFile, `${pid}\n`);

  // Keep the tail of the child's output for error messages; drain both pipes so the child never blocks.
  const output: string[] = [];
  const collect = (stream: NodeJS.ReadableStream | null, level: "debug" | "warn") => {
    stream?.setEncoding("utf8");
    stream?.on("data", (chunk: string) => {
      for (const line of chunk.split("\n")) {
        if (!line.trim()) continue;
        output.push(line);
        if (output.length > OUTPUT_LINES) output.shift();
        // stdout is one line per client connection: debug. stderr is worth seeing.
        logger?.[level](`pglite-server: ${line}`);
      }
    });
  };
  collect(child.stdout, "debug");
  collect(child.stderr, "warn");

  let exited: { code: number | null; signal: NodeJS.Signals | null } | undefined;
  const exitPromise = new Promise<void>((resolve) => {
    child.once("exit", (code, signal) => {
      exited = { code, signal };
      resolve();
    });
  });

  // Last resort on the parent's way out: synchronous, so it runs even from process.exit().
  const killOnExit = () => {
    if (!exited) child.kill("SIGTERM");
  };
  process.on("exit", killOnExit);

  const forget = () => {
    process.removeListener("exit", killOnExit);
    // Only remove the pid file if it is still ours.
    try {
      if (readFileSync(pidFile, "utf8").trim() === String(pid)) rmSync(pidFile);
    } catch {
      /* already gone */
    }
  };

  let stopping: Promise<void> | undefined;
  const stop = (): Promise<void> => {
    stopping ??= (async () => {
      if (!exited) {
        child.kill("SIGTERM");
        const timeoutMs = opts.stopTimeoutMs ?? 15_000;
        let timer: NodeJS.Timeout | undefined;
        const timedOut = await Promise.race([
          exitPromise.then(() => false),
          new Promise<boolean>((r) => (timer = setTimeout(() => r(true), timeoutMs))),
        ]);
        clearTimeout(timer); // a pending timer would keep the process (and jest) alive
        // `exited` is set by the exit listener while we awaited; the narrowing from `if (!exited)` is stale.
        // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- set asynchronously
        if (timedOut && !exited) {
          logger?.warn(`embedded PostgreSQL did not stop within ${timeoutMs} ms: killing it`);
          child.kill("SIGKILL");
          await exitPromise;
        }
      }
      forget();
      logger?.info("embedded PostgreSQL stopped");
    })();
    return stopping;
  };

  const url = `postgres://postgres@${HOST}:${port}/postgres`;
  const deadline = started + (opts.startTimeoutMs ?? 120_000);
  for (;;) {
    if (exited) {
      forget();
      throw new Error(
        `embedded PostgreSQL: pglite-server exited during start-up (code ${exited.code}, signal ${exited.signal}). ` +
          `Its output:\n${output.join("\n")}`,
      );
    }
    if (await canQuery(url)) break;
    if (Date.now() > deadline) {
      await stop();
      throw new Error(
        `embedded PostgreSQL: pglite-server did not accept connections on ${HOST}:${port} within ` +
          `${opts.startTimeoutMs ?? 120_000} ms. Its output:\n${output.join("\n")}`,
      );
    }
    await sleep(100);
  }
  logger?.info(`embedded PostgreSQL ready at ${url} in ${((Date.now() - started) / 1000).toFixed(1)} s (pid ${pid})`);
  return { url, pid, stop };
}
