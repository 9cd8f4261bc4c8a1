/**
 * npm run migrate -- up | down [--to <name>|0] | status | wait [--timeout <s>]
 *
 * Against DATABASE_URL; without it, against the embedded database in DATA_DIR (the PGlite server is started
 * for the command and stopped after it, so the platform itself must not be running on that dir).
 * Exit codes: 0 done, 1 failed (for wait: still pending at the timeout), 2 bad usage.
 */
import type { Sequelize } from "sequelize";
import { ConfigError, loadConfig } from "../platform/config";
import { createSequelize } from "../platform/db";
// dev/ is loaded (dynamic import) only when no DATABASE_URL is set: never in production.
import type { EmbeddedPostgres } from "../dev/embedded-postgres";
import { migrateDown, migrateUp, migrationStatus, pendingMigrations, type MigrationLogger } from "../platform/migrator";
import { requireDevTree } from "./dev-tree";
import { USAGE, parseMigrateArgs } from "./migrate-args";

/** How often `wait` looks. */
const WAIT_POLL_MS = 2_000;

/**
 * Polls until no migration of this build is pending. An unreachable database is waited for too (a pod may
 * start before its network or the database is ready); at the deadline the last reason is reported.
 */
async function waitForSchema(sequelize: Sequelize, timeoutS: number): Promise<number> {
  const deadline = Date.now() + timeoutS * 1000;
  let last = "";
  for (;;) {
    let state: string;
    try {
      const pending = await pendingMigrations(sequelize);
      if (pending.length === 0) {
        console.log("Schema is up to date.");
        return 0;
      }
      state = `${pending.length} migration(s) pending (${pending.join(", ")}): waiting for the migration job`;
    } catch (err) {
      state = `database not readable: ${err instanceof Error ? err.message : String(err)}`;
    }
    if (state !== last) console.log(state);
    last = state;
    if (Date.now() >= deadline) {
      console.error(`Gave up after ${timeoutS} s: ${state}`);
      return 1;
    }
    await new Promise((resolve) => setTimeout(resolve, WAIT_POLL_MS));
  }
}

const logger: MigrationLogger = {
  info: (...a) => console.log(...a),
  warn: (...a) => console.warn(...a),
  error: (...a) => console.error(...a),
  debug: () => undefined,
};

async function main(argv: readonly string[]): Promise<number> {
  const command = parseMigrateArgs(argv);
  if (!command) {
    console.error(argv.length ? `Unknown command: ${argv.join(" ")}\n\n${USAGE}` : USAGE);
    return 2;
  }
  const config = loadConfig();

  let embedded: EmbeddedPostgres | undefined;
  let url = config.databaseUrl;
  if (url === undefined) {
    requireDevTree("DATABASE_URL");
    const { startEmbeddedPostgres } = await import("../dev/embedded-postgres");
    embedded = await startEmbeddedPostgres({
      dataDir: config.dataDir,
      port: config.embeddedPgPort,
      maxConnections: config.databasePoolMax + 5,
      logger,
    });
    url = embedded.url;
  }
  const sequelize = createSequelize(url, { poolMax: config.databasePoolMax });
  try {
    const started = Date.now();
    switch (command.kind) {
      case "up": {
        const applied = await migrateUp(sequelize, logger);
        console.log(applied.length ? `Applied ${applied.length} migration(s).` : "Schema is up to date.");
        break;
      }
      case "down": {
        const reverted = await migrateDown(sequelize, { to: command.to }, logger);
        console.log(reverted.length ? `Reverted ${reverted.length} migration(s).` : "Nothing to revert.");
        break;
      }
      case "wait":
        return await waitForSchema(sequelize, command.timeoutS);
      case "status": {
        const { executed, pending } = await migrationStatus(sequelize);
        for (const name of executed) console.log(`applied  ${name}`);
        for (const name of pending) console.log(`pending  ${name}`);
        console.log(`${executed.length} applied, ${pending.length} pending`);
        break;
      }
    }
    if (command.kind !== "status") console.log(`Done in ${((Date.now() - started) / 1000).toFixed(2)} s.`);
    return 0;
  } finally {
    await sequelize.close().catch(() => undefined);
    await embedded?.stop();
  }
}

// Runs on load, with no require.main check: main/run.js (the npm scripts' launcher) loads it with require().
main(process.argv.slice(2)).then(
  (code) => process.exit(code),
  (err: unknown) => {
    // A config error already names the variable; anything else: the message, no stack for expected failures.
    if (err instanceof ConfigError) console.error(err.message);
    else console.error(`Migration failed: ${err instanceof Error ? err.message : String(err)}`);
    process.exit(1);
  },
);
