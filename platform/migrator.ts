/**
 * Schema migrations (umzug + SequelizeStorage in table `schema_migrations`).
 *
 * Every node runs migrateUp() at start. The run is serialised by a PostgreSQL advisory lock: of several nodes
 * starting together one migrates, the others wait for it and then find nothing pending. On PGlite (one
 * session for all connections) the advisory lock excludes nothing, but withAdvisoryLock also queues callers
 * inside this process, and embedded mode is one process.
 */
import type { QueryInterface, Sequelize } from "sequelize";
import { SequelizeStorage, Umzug, type MigrateDownOptions, type MigrationMeta } from "umzug";
import { migrations } from "./migrations";
import { withAdvisoryLock } from "./db";

/** What we log through: console, a Moleculer logger, or anything with these methods. */
export interface MigrationLogger {
  info(...args: unknown[]): void;
  warn(...args: unknown[]): void;
  error(...args: unknown[]): void;
  debug(...args: unknown[]): void;
}

export const MIGRATIONS_TABLE = "schema_migrations";
/** Advisory-lock name of the migration run (hashed to a 64-bit key). */
export const MIGRATION_LOCK = "autolabs:schema-migrations";

export type Migrator = Umzug<QueryInterface>;

/** Umzug logs structured records ({event, name, durationSeconds}); render them as one readable line. */
function umzugLogger(logger: MigrationLogger) {
  const line = (r: Record<string, unknown>): string => {
    const duration = typeof r.durationSeconds === "number" ? ` (${r.durationSeconds.toFixed(3)} s)` : "";
    const text = (v: unknown): string => (typeof v === "string" ? v : "");
    return `migration ${text(r.name)}: ${text(r.event)}${duration}`;
  };
  return {
    info: (r: Record<string, unknown>) => logger.info(line(r)),
    warn: (r: Record<string, unknown>) => logger.warn(line(r)),
    error: (r: Record<string, unknown>) => logger.error(line(r)),
    debug: (r: Record<string, unknown>) => logger.debug(line(r)),
  };
}

export function createMigrator(sequelize: Sequelize, logger?: MigrationLogger): Migrator {
  return new Umzug<QueryInterface>({
    migrations: [...migrations],
    context: sequelize.getQueryInterface(),
    // timestamps: schema_migrations also records when each migration ran (createdAt).
    storage: new SequelizeStorage({ sequelize, tableName: MIGRATIONS_TABLE, timestamps: true }),
    logger: logger ? umzugLogger(logger) : undefined,
  });
}

/** Runs `fn` while no other node (and no other caller in this process) migrates. */
export function withMigrationLock<T>(sequelize: Sequelize, fn: () => Promise<T>, logger?: MigrationLogger): Promise<T> {
  return withAdvisoryLock(sequelize, MIGRATION_LOCK, fn, {
    onWait: () => logger?.info("another node is migrating the database: waiting for it"),
  });
}

/** Applies every pending migration; returns the names applied (empty when the schema was current). */
export async function migrateUp(sequelize: Sequelize, logger?: MigrationLogger): Promise<string[]> {
  const applied = await withMigrationLock(sequelize, () => createMigrator(sequelize, logger).up(), logger);
  return applied.map((m: MigrationMeta) => m.name);
}

/** Reverts the last migration, or down to `to` (0 = all). Returns the names reverted. */
export async function migrateDown(
  sequelize: Sequelize,
  opts: { to?: string | 0 } = {},
  logger?: MigrationLogger,
): Promise<string[]> {
  const options: MigrateDownOptions = opts.to === undefined ? {} : { to: opts.to };
  const reverted = await withMigrationLock(sequelize, () => createMigrator(sequelize, logger).down(options), logger);
  return reverted.map((m: MigrationMeta) => m.name);
}

export interface MigrationStatus {
  executed: string[];
  pending: string[];
}

export async function migrationStatus(sequelize: Sequelize): Promise<MigrationStatus> {
  const migrator = createMigrator(sequelize);
  const [executed, pending] = [await migrator.executed(), await migrator.pending()];
  return { executed: executed.map((m) => m.name), pending: pending.map((m) => m.name) };
}
