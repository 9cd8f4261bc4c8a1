/**
 * `npm test` (after tsc; run as dist/test/support/test-run.js [jest args]): makes the tests pass by themselves
 * on a fresh Debian machine that has only Node.js, and never touches a developer's databases.
 *
 * 1. Installs the Debian packages the tests use when any is missing (apt-get as root; otherwise it says what
 *    to install and stops).
 * 2. For each of PostgreSQL, Redis and RabbitMQ the environment does not name (TEST_PG_ADMIN_URL,
 *    TEST_REDIS_URL, TEST_AMQP_URL), starts a throwaway server of its own on a free port, data in a temp dir,
 *    even when the machine runs one on the default port: a few seconds of start-up buys tests that cannot see
 *    or damage anyone's data. The servers reach jest through those same variables (test/support/servers.ts).
 * 3. Runs jest (--runInBand) with the arguments given, then stops the servers and exits with jest's status.
 *
 * A run of unit tests only (every path argument under test/unit) needs none of this and starts nothing.
 */
import { execFileSync, spawn } from "node:child_process";
import { startThrowawayPostgres, startThrowawayRabbit, type ThrowawayServer } from "./throwaway-servers";
import { startOwnRedis } from "./redis-server";

const DEBIAN_PACKAGES = [
  "python3-celery",
  "python3-redis",
  "chromium",
  "postgresql",
  "redis-server",
  "rabbitmq-server",
];

const log = (msg: string) => {
  process.stderr.write(`[test-run] ${msg}\n`);
};

function missingDebianPackages(): string[] | undefined {
  try {
    execFileSync("dpkg-query", ["--version"], { stdio: "ignore" });
  } catch {
    return undefined; // not Debian: the packages are the developer's business
  }
  return DEBIAN_PACKAGES.filter((pkg) => {
    try {
      const status = execFileSync("dpkg-query", ["-W", "-f=${Status}", pkg], { encoding: "utf8", stdio: "pipe" });
      return !status.includes("install ok installed");
    } catch {
      return true; // dpkg-query exits non-zero for a package it has never heard of
    }
  });
}

function installDebianPackages(): void {
  const missing = missingDebianPackages();
  if (missing === undefined) {
    log(`no dpkg here: make sure these (or their equivalents) are installed: ${DEBIAN_PACKAGES.join(" ")}`);
    return;
  }
  if (!missing.length) return;
  if (process.getuid?.() !== 0) {
    log(`missing Debian packages: ${missing.join(" ")}`);
    log(`install them, then run the tests again: sudo apt-get install -y ${missing.join(" ")}`);
    process.exit(1);
  }
  log(`installing ${missing.join(" ")}`);
  const env = { ...process.env, DEBIAN_FRONTEND: "noninteractive" };
  execFileSync("apt-get", ["update", "-q"], { stdio: "inherit", env });
  execFileSync("apt-get", ["install", "-y", "-q", "--no-install-recommends", ...missing], { stdio: "inherit", env });
}

interface Started {
  name: string;
  destroy(): Promise<void>;
}

/** Starts what the environment does not name, in parallel; sets the TEST_* variables jest will read. */
async function startServers(): Promise<Started[]> {
  const started: Started[] = [];
  const t0 = performance.now();
  const jobs: Promise<void>[] = [];
  const own = (name: string, variable: string, start: () => Promise<{ url: string; destroy(): Promise<void> }>) => {
    const given = process.env[variable];
    if (given) {
      log(`${name}: ${variable} (${given.replace(/\/\/[^@/]*@/, "//…@")})`);
      return;
    }
    jobs.push(
      start().then((s) => {
        process.env[variable] = s.url;
        started.push({ name, destroy: () => s.destroy() });
        log(`${name}: throwaway server at ${s.url} (${Math.round(performance.now() - t0)} ms)`);
      }),
    );
  };
  own("PostgreSQL", "TEST_PG_ADMIN_URL", startThrowawayPostgres);
  own("Redis", "TEST_REDIS_URL", async () => {
    const redis = await startOwnRedis();
    return { url: redis.url(3), destroy: () => redis.kill() };
  });
  own("RabbitMQ", "TEST_AMQP_URL", (): Promise<ThrowawayServer> => startThrowawayRabbit());
  const results = await Promise.allSettled(jobs);
  const failed = results.find((r): r is PromiseRejectedResult => r.status === "rejected");
  if (failed) {
    await stopServers(started);
    throw failed.reason;
  }
  return started;
}

async function stopServers(started: Started[]): Promise<void> {
  await Promise.allSettled(started.map((s) => s.destroy()));
  if (started.length) log(`stopped ${started.map((s) => s.name).join(", ")}; their directories are removed`);
}

function runJest(args: string[]): Promise<number> {
  const child = spawn(process.execPath, [require.resolve("jest/bin/jest"), "--runInBand", ...args], {
    stdio: "inherit",
    env: process.env,
  });
  // Ctrl-C reaches jest through the terminal's process group; a SIGTERM sent to this script alone is passed on.
  // Either way this script waits for jest, then stops the servers.
  for (const signal of ["SIGINT", "SIGTERM"] as const) process.on(signal, () => child.kill(signal));
  return new Promise((resolve) => child.once("exit", (code, signal) => resolve(code ?? (signal ? 1 : 0))));
}

async function main(): Promise<void> {
  const args = process.argv.slice(2);
  const paths = args.filter((a) => !a.startsWith("-"));
  const unitOnly = paths.length > 0 && paths.every((p) => /^(\.\/)?test\/unit(\/|$)/.test(p));
  let started: Started[] = [];
  if (!unitOnly) {
    installDebianPackages();
    started = await startServers();
  }
  let status: number;
  try {
    status = await runJest(args);
  } finally {
    await stopServers(started);
  }
  process.exit(status);
}

main().catch((err: unknown) => {
  log(err instanceof Error ? (err.stack ?? err.message) : String(err));
  process.exit(1);
});
