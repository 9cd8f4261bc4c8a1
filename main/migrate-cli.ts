/**
 * npm run migrate -- up | down [--to <name>|0] | status
 *
 * Against DATABASE_URL; without it, against the embedded database in DATA_DIR (the PGlite server is started
 * for the command and stopped after it, so the platform itself must not be running on that dir).
 * Exit codes: 0 done, 1 failed, 2 bad usage.
 */
import { ConfigError, loadConfig } from "../platform/config";
import { createSequelize } from "../platform/db";
// dev/ is loaded (dynamic import) only when no DATABASE_URL is set: never in production.
import type { EmbeddedPostgres } from "../dev/embedded-postgres";
import { migrateDown, migrateUp, migrationStatus, type MigrationLogger } from "../platform/migrator";

const USAGE = `Usage: npm run migrate -- <command>

Commands:
  up                   apply every pending migration
  down                 revert the last applied migration
  down --to <name>     revert down to and including migration <name>
  down --to 0          revert every migration (drops the whole schema)
  status               list applied and pending migrations

Database: DATABASE_URL, or the embedded database in DATA_DIR (default .data) when DATABASE_URL is unset.`;

export type MigrateCommand = { kind: "up" } | { kind: "status" } | { kind: "down"; to?: string | 0 };

/** Parses argv (after the script name); undefined means bad usage. */
export function parseMigrateArgs(args: readonly string[]): MigrateCommand | undefined {
  const [cmd, ...rest] = args;
  if (cmd === "up" && rest.length === 0) return { kind: "up" };
  if (cmd === "status" && rest.length === 0) return { kind: "status" };
  if (cmd === "down") {
    if (rest.length === 0) return { kind: "down" };
    let to: string | undefined;
    if (rest.length === 2 && rest[0] === "--to") to = rest[1];
    else if (rest.length === 1 && rest[0].startsWith("--to=")) to = rest[0].slice("--to=".length);
    if (to === undefined || to === "") return undefined;
    return { kind: "down", to: to === "0" ? 0 : to };
  }
  return undefined;
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
