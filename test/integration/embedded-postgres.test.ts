/**
 * The embedded PostgreSQL (pglite-server child process): start on a temp dir, migrate, write, stop, restart on
 * the same dir and find the data; clear failures for a taken port or a data dir in use; the server dies with
 * its parent. Also pins the PGlite behaviours our code relies on or works around.
 */
import { spawn } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { createServer, type Server } from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { Client } from "pg";
import { QueryTypes } from "sequelize";
import { createSequelize } from "../../platform/db";
import { startEmbeddedPostgres, type EmbeddedPostgres } from "../../dev/embedded-postgres";
import { migrateUp } from "../../platform/migrator";
import { migrations } from "../../platform/migrations";
import { freePort } from "../support/net";

const ALL_MIGRATIONS = migrations.map((m) => m.name);

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}

async function waitFor(cond: () => boolean, timeoutMs: number): Promise<boolean> {
  const end = Date.now() + timeoutMs;
  while (Date.now() < end) {
    if (cond()) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return cond();
}

describe("embedded PostgreSQL (pglite-server)", () => {
  const dataDir = mkdtempSync(path.join(tmpdir(), "autolabs-embedded-pg-"));
  let server: EmbeddedPostgres | undefined;

  afterAll(async () => {
    await server?.stop();
    rmSync(dataDir, { recursive: true, force: true });
  });

  test("cold start, migrate, write; the dir and port are then guarded", async () => {
    const port = await freePort();
    let started = Date.now();
    server = await startEmbeddedPostgres({ dataDir, port, maxConnections: 10 });
    const coldMs = Date.now() - started;
    expect(server.url).toBe(`postgres://postgres@127.0.0.1:${port}/postgres`);
    expect(existsSync(path.join(dataDir, "pg", "PG_VERSION"))).toBe(true);

    const sequelize = createSequelize(server.url, { poolMax: 4 });
    try {
      started = Date.now();
      expect(await migrateUp(sequelize)).toEqual(ALL_MIGRATIONS);
      const migrateMs = Date.now() - started;
      console.log(`PGlite cold start (initdb) ${coldMs} ms, migrate up ${migrateMs} ms`);
      await sequelize.query(
        "INSERT INTO users (external_id, email, role) VALUES ('persisted', 'p@example.org', 'teacher')",
      );
      // More concurrent queries than pool slots: they queue in the pool, the server runs them one by one.
      const counts = await Promise.all(
        Array.from({ length: 12 }, () =>
          sequelize.query<{ n: string }>("SELECT count(*) AS n FROM users", { type: QueryTypes.SELECT }),
        ),
      );
      expect(counts.every((r) => r[0].n === "1")).toBe(true);
    } finally {
      await sequelize.close();
    }

    // A second server on the same dir would corrupt it: refused, naming the running pid.
    await expect(startEmbeddedPostgres({ dataDir, port: await freePort(), maxConnections: 4 })).rejects.toThrow(
      new RegExp(`in use by a running pglite-server \\(pid ${server.pid}\\)`),
    );
    // And the port is visibly taken.
    const other = mkdtempSync(path.join(tmpdir(), "autolabs-embedded-pg-other-"));
    try {
      await expect(startEmbeddedPostgres({ dataDir: other, port, maxConnections: 4 })).rejects.toThrow(
        /port 127\.0\.0\.1:\d+ is already in use/,
      );
    } finally {
      rmSync(other, { recursive: true, force: true });
    }

    const pid = server.pid;
    await server.stop();
    await server.stop(); // idempotent
    expect(alive(pid)).toBe(false);
    expect(existsSync(path.join(dataDir, "pglite-server.pid"))).toBe(false);
    server = undefined;
  });

  test("restart on the same dir: the data is there, migrations are not re-run", async () => {
    const started = Date.now();
    server = await startEmbeddedPostgres({ dataDir, port: await freePort(), maxConnections: 6 });
    console.log(`PGlite warm start ${Date.now() - started} ms`);
    const sequelize = createSequelize(server.url, { poolMax: 2 });
    try {
      expect(await migrateUp(sequelize)).toEqual([]);
      const rows = await sequelize.query<{ email: string; role: string }>(
        "SELECT email, role FROM users WHERE external_id = 'persisted'",
        { type: QueryTypes.SELECT },
      );
      expect(rows).toEqual([{ email: "p@example.org", role: "teacher" }]);
    } finally {
      await sequelize.close();
    }
  });

  test("PGlite quirks we rely on or work around", async () => {
    if (!server) throw new Error("server not running");
    const a = new Client({ connectionString: server.url });
    const b = new Client({ connectionString: server.url });
    await a.connect();
    await b.connect();
    try {
      // One backend for every connection: a session advisory lock excludes nobody (hence withAdvisoryLock's
      // in-process queue), and it outlives the connection that took it (hence the explicit unlock).
      const pids = [
        (await a.query("SELECT pg_backend_pid() AS p")).rows[0].p,
        (await b.query("SELECT pg_backend_pid() AS p")).rows[0].p,
      ];
      expect(pids[0]).toBe(pids[1]);
      await a.query("SELECT pg_advisory_lock(4242)");
      expect((await b.query("SELECT pg_try_advisory_lock(4242) AS ok")).rows[0].ok).toBe(true);
      await b.query("SELECT pg_advisory_unlock(4242)");
      await a.query("SELECT pg_advisory_unlock(4242)");
      // FOR UPDATE SKIP LOCKED parses and runs (trivially: only one transaction runs at a time).
      await a.query("BEGIN");
      const r = await a.query("SELECT id FROM users ORDER BY id LIMIT 1 FOR UPDATE SKIP LOCKED");
      expect(r.rowCount).toBe(1);
      await a.query("COMMIT");
    } finally {
      await a.end();
      await b.end();
    }
    await server.stop();
    server = undefined;
  });

  // Needs the compiled module (npm test compiles first): the watchdog is checked in a real parent process.
  const compiled = path.resolve(__dirname, "../../dist/dev/embedded-postgres.js");
  test("the server shuts itself down when its parent is killed", async () => {
    expect(existsSync(compiled)).toBe(true);
    const port = await freePort();
    const script = `
      const { startEmbeddedPostgres } = require(${JSON.stringify(compiled)});
      startEmbeddedPostgres({ dataDir: ${JSON.stringify(dataDir)}, port: ${port}, maxConnections: 4 })
        .then((s) => { console.log("READY " + s.pid); setInterval(() => {}, 60000); })
        .catch((e) => { console.error(e.message); process.exit(1); });`;
    const parent = spawn(process.execPath, ["-e", script], { stdio: ["ignore", "pipe", "pipe"] });
    let stderr = "";
    parent.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
    const childPid = await new Promise<number>((resolve, reject) => {
      let out = "";
      parent.stdout.on("data", (d: Buffer) => {
        out += d.toString();
        const m = /READY (\d+)/.exec(out);
        if (m) resolve(Number(m[1]));
      });
      parent.once("exit", (code) => reject(new Error(`parent exited early (${code}): ${stderr}`)));
    });
    expect(alive(childPid)).toBe(true);
    parent.kill("SIGKILL");
    expect(await waitFor(() => !alive(childPid), 10_000)).toBe(true);

    // The stale pid file left by the killed parent does not block the next start, and the data survived.
    server = await startEmbeddedPostgres({ dataDir, port: await freePort(), maxConnections: 4 });
    const c = new Client({ connectionString: server.url });
    await c.connect();
    try {
      const r = await c.query("SELECT count(*)::int AS n FROM users WHERE external_id = 'persisted'");
      expect(r.rows[0].n).toBe(1);
    } finally {
      await c.end();
    }
  });

  test("a port held by something else fails fast and clearly", async () => {
    const blocker: Server = createServer();
    await new Promise<void>((r) => blocker.listen(0, "127.0.0.1", () => r()));
    const addr = blocker.address();
    const port = typeof addr === "object" && addr ? addr.port : 0;
    const dir = mkdtempSync(path.join(tmpdir(), "autolabs-embedded-pg-port-"));
    try {
      await expect(startEmbeddedPostgres({ dataDir: dir, port, maxConnections: 4 })).rejects.toThrow(
        /EMBEDDED_PG_PORT/,
      );
    } finally {
      await new Promise((r) => blocker.close(r));
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
