/**
 * A PostgreSQL and a RabbitMQ of a test's own, on free ports in a temp dir, for failure tests that stop and
 * restart the server under load: the machine's shared servers are never touched. Both are real server
 * processes (Debian's binaries), so a restart is what an operator's restart is: connections drop, the port
 * refuses, the same data comes back. destroy() kills what is left and removes the directory (call it in
 * afterAll; a failed start cleans up by itself).
 */
import { execFile, execFileSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { chownSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { startReadyChild, type ReadyChild } from "../../platform/child-process";
import { freePort } from "./net";

const run = promisify(execFile);

export interface ThrowawayServer {
  port: number;
  url: string;
  /** Stops the server the way an operator's restart does (clients are disconnected); the data stays. */
  stop(): Promise<void>;
  /** Starts it again on the same port and data; resolves once it accepts connections. */
  start(): Promise<void>;
  /** Everything this server printed in its current run (for failure messages). */
  output(): string;
  /** Stops it (hard if need be) and removes its directory. Idempotent. */
  destroy(): Promise<void>;
}

/** Sends `signal`, then SIGKILL after graceMs; resolves once the process is gone. */
async function signalAndWait(server: ReadyChild, signal: NodeJS.Signals, graceMs: number): Promise<void> {
  const child = server.child;
  if (child.exitCode !== null || child.signalCode !== null) return;
  const exited = new Promise<void>((resolve) => child.once("exit", () => resolve()));
  child.kill(signal);
  const killer = setTimeout(() => child.kill("SIGKILL"), graceMs);
  await exited;
  clearTimeout(killer);
}

/* ───────────────────────────── PostgreSQL ───────────────────────────── */

function postgresBinDir(): string {
  const root = "/usr/lib/postgresql";
  const versions = existsSync(root) ? readdirSync(root).filter((v) => /^\d+$/.test(v)) : [];
  if (!versions.length) throw new Error(`no PostgreSQL server binaries under ${root} (Debian's postgresql package)`);
  return join(root, versions.sort((a, b) => Number(b) - Number(a))[0], "bin");
}

/** postgres refuses to run as root: as root, run it as the `postgres` user. */
function postgresUser(): { uid: number; gid: number } | undefined {
  if (process.getuid?.() !== 0) return undefined;
  const id = (flag: string) => Number(execFileSync("id", [flag, "postgres"], { encoding: "utf8" }).trim());
  return { uid: id("-u"), gid: id("-g") };
}

/** An own PostgreSQL cluster (trust auth, user postgres, fsync off): `url` points at its `postgres` database. */
export async function startThrowawayPostgres(): Promise<ThrowawayServer> {
  const bin = postgresBinDir();
  const user = postgresUser();
  const dir = mkdtempSync(join(tmpdir(), "autolabs-pg-"));
  const data = join(dir, "data");
  if (user) chownSync(dir, user.uid, user.gid);
  const port = await freePort();
  let server: ReadyChild | undefined;
  const start = async () => {
    server = await startReadyChild({
      name: "throwaway postgres",
      command: join(bin, "postgres"),
      // The socket in our own dir: /var/run/postgresql belongs to the shared server.
      args: ["-D", data, "-p", String(port), "-k", dir, "-c", "listen_addresses=127.0.0.1", "-c", "fsync=off"],
      env: { PATH: process.env.PATH ?? "", LANG: "C.UTF-8" },
      ready: /database system is ready to accept connections/,
      timeoutMs: 30_000,
      ...user,
    });
  };
  const destroy = async () => {
    if (server) await signalAndWait(server, "SIGQUIT", 2_000);
    server = undefined;
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    const initdbArgs = ["-D", data, "-U", "postgres", "-A", "trust", "-E", "UTF8", "--locale=C.UTF-8", "--no-sync"];
    await run(join(bin, "initdb"), initdbArgs, { env: { PATH: process.env.PATH ?? "" }, ...user });
    await start();
  } catch (err) {
    await destroy();
    throw err;
  }
  return {
    port,
    url: `postgres://postgres@127.0.0.1:${port}/postgres`,
    // SIGINT is PostgreSQL's fast shutdown (pg_ctl -m fast): sessions are ended, not waited for.
    async stop() {
      if (server) await signalAndWait(server, "SIGINT", 10_000);
    },
    start,
    output: () => server?.output() ?? "",
    destroy,
  };
}

/* ───────────────────────────── RabbitMQ ───────────────────────────── */

const RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server";

/** An own RabbitMQ node (no plugins, guest/guest); boots in a few seconds, restarts keep its durable queues. */
export async function startThrowawayRabbit(): Promise<ThrowawayServer> {
  if (!existsSync(RABBITMQ_SERVER)) throw new Error(`${RABBITMQ_SERVER} missing (Debian's rabbitmq-server package)`);
  const dir = mkdtempSync(join(tmpdir(), "autolabs-rmq-"));
  const [port, distPort] = [await freePort(), await freePort()];
  const pidFile = join(dir, "beam.pid");
  writeFileSync(join(dir, "enabled_plugins"), "[].\n");
  // No disk alarm: a nearly full test disk must not block publishers (that would be another test).
  writeFileSync(join(dir, "rabbitmq.conf"), `listeners.tcp.default = ${port}\ndisk_free_limit.absolute = 1MB\n`);
  const env: NodeJS.ProcessEnv = {
    PATH: process.env.PATH ?? "",
    // The Erlang cookie is created in HOME: our own, never the shared node's.
    HOME: dir,
    RABBITMQ_NODENAME: `autolabs-t-${randomBytes(4).toString("hex")}@localhost`,
    RABBITMQ_NODE_PORT: String(port),
    RABBITMQ_DIST_PORT: String(distPort),
    RABBITMQ_MNESIA_BASE: join(dir, "mnesia"),
    RABBITMQ_LOG_BASE: join(dir, "log"),
    RABBITMQ_ENABLED_PLUGINS_FILE: join(dir, "enabled_plugins"),
    RABBITMQ_CONFIG_FILE: join(dir, "rabbitmq.conf"),
    RABBITMQ_PID_FILE: pidFile,
  };
  let server: ReadyChild | undefined;
  // After boot the node logs to files, not to stdout: a failure message needs their end.
  const logTail = () => {
    const logs = join(dir, "log");
    if (!existsSync(logs)) return "";
    return readdirSync(logs)
      .filter((f) => f.endsWith(".log"))
      .map((f) => `${f}:\n${readFileSync(join(logs, f), "utf8").slice(-6000)}`)
      .join("\n");
  };
  const start = async () => {
    try {
      server = await startReadyChild({
        name: "throwaway rabbitmq",
        command: RABBITMQ_SERVER,
        args: [],
        env,
        cwd: dir,
        ready: /Starting broker\.\.\. completed/,
        timeoutMs: 90_000,
      });
    } catch (err) {
      killBeam();
      throw new Error(`${(err as Error).message}\n${logTail()}`, { cause: err });
    }
  };
  // The script traps SIGTERM and stops the Erlang node cleanly; if that hangs, the node itself is killed.
  const stop = async () => {
    if (!server) return;
    await signalAndWait(server, "SIGTERM", 20_000);
    killBeam();
  };
  function killBeam() {
    if (!existsSync(pidFile)) return;
    const pid = Number(readFileSync(pidFile, "utf8").trim());
    // Only our own node: the pid file may be stale and the pid reused by now.
    const cmdline = pid > 0 && existsSync(`/proc/${pid}/cmdline`) ? readFileSync(`/proc/${pid}/cmdline`, "utf8") : "";
    if (cmdline.includes(String(env.RABBITMQ_NODENAME))) process.kill(pid, "SIGKILL");
    rmSync(pidFile, { force: true });
  }
  const destroy = async () => {
    await stop().catch(() => undefined);
    killBeam();
    server = undefined;
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await start();
  } catch (err) {
    await destroy();
    throw err;
  }
  const output = () => server?.output() ?? "";
  return { port, url: `amqp://guest:guest@127.0.0.1:${port}`, stop, start, output, destroy };
}
