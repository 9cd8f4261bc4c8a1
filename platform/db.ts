/**
 * The Sequelize instance every service shares, and a PostgreSQL advisory-lock helper.
 *
 * Works against real PostgreSQL and against the embedded PGlite server (dev/embedded-postgres.ts).
 * PGlite differences that matter here (verified by experiment, PGlite 0.5.14 = PostgreSQL 18 in WASM):
 * - every socket connection shares ONE backend session: `SET …` on one connection changes all of them,
 *   startup parameters (statement_timeout, options) are ignored, and session advisory locks are re-entrant
 *   across connections and survive the connection that took them;
 * - one statement runs at a time, and while a connection has a transaction open the server serves only that
 *   connection: never wait on connection B while holding a transaction open on connection A (it hangs).
 */
import { Client, type ClientConfig } from "pg";
import { Sequelize, type Options } from "sequelize";

export interface CreateSequelizeOptions {
  /** Pool size of this node. */
  poolMax: number;
  /** SQL logger; logging is off when omitted. */
  logging?: (sql: string) => void;
  /**
   * Server-side statement timeout for every pooled connection (ms). Off by default: migrations and
   * long reports may legitimately run long. Ignored by PGlite (startup parameters are not applied).
   */
  statementTimeoutMs?: number;
  /** Shown in pg_stat_activity; helps tell the nodes of a cluster apart. */
  applicationName?: string;
}

export function createSequelize(url: string, opts: CreateSequelizeOptions): Sequelize {
  const dialectOptions: Record<string, unknown> = {
    application_name: opts.applicationName ?? "autolabs",
    // TCP keep-alive: a pooled connection whose peer vanished (failover, NAT timeout) errors out instead of hanging.
    keepAlive: true,
    // Fail a connection attempt instead of waiting forever on an unreachable server.
    connectionTimeoutMillis: 10_000,
  };
  if (opts.statementTimeoutMs !== undefined) dialectOptions.statement_timeout = opts.statementTimeoutMs;

  const options: Options = {
    dialect: "postgres",
    logging: opts.logging ? (sql: string) => opts.logging?.(sql) : false,
    // timestamptz columns are read and written as UTC instants; the session time zone is UTC.
    timezone: "+00:00",
    pool: {
      max: opts.poolMax,
      // No idle floor: an idle node holds no connections (PGlite's connection slots are few).
      min: 0,
      idle: 10_000,
      // A request waiting this long for a free connection fails instead of piling up.
      acquire: 30_000,
      evict: 1_000,
    },
    dialectOptions,
  };
  return new Sequelize(url, options);
}

/**
 * A stable 64-bit advisory-lock key from a readable name (FNV-1a, as a signed bigint so it fits `bigint`).
 * Names keep keys of different features from colliding by accident.
 */
export function advisoryLockKey(name: string): bigint {
  let h = 0xcbf29ce484222325n;
  for (const byte of Buffer.from(name, "utf8")) {
    h ^= BigInt(byte);
    h = (h * 0x100000001b3n) & 0xffffffffffffffffn;
  }
  return BigInt.asIntN(64, h);
}

/** pg client settings of the same server and credentials the Sequelize pool uses. */
function clientConfigOf(sequelize: Sequelize): ClientConfig {
  const c = sequelize.config;
  const dialectOptions = (c.dialectOptions ?? {}) as { ssl?: ClientConfig["ssl"] };
  return {
    host: c.host,
    port: c.port === undefined ? undefined : Number(c.port),
    user: c.username,
    password: c.password ?? undefined,
    database: c.database,
    ssl: dialectOptions.ssl ?? (c.ssl ? true : undefined),
    application_name: "autolabs-lock",
    connectionTimeoutMillis: 10_000,
  };
}

// In-process queue per key. PostgreSQL advisory locks exclude other sessions only; on PGlite all
// connections are one session, so without this two callers in the same process would both "get" the lock.
const localQueues = new Map<string, Promise<unknown>>();

export interface AdvisoryLockOptions {
  /** Called once if another session holds the lock and we have to wait for it. */
  onWait?: () => void;
}

/**
 * Runs `fn` while holding the session-level PostgreSQL advisory lock `key`, so only one node of a cluster
 * runs it at a time (others wait, then run). The lock lives on a dedicated connection outside the pool:
 * `fn` can use the whole pool (even a pool of 1), and if this process dies PostgreSQL drops the lock with
 * the connection. The lock connection never opens a transaction, so this is safe on PGlite too.
 */
export async function withAdvisoryLock<T>(
  sequelize: Sequelize,
  key: bigint | number | string,
  fn: () => Promise<T>,
  options: AdvisoryLockOptions = {},
): Promise<T> {
  const lockKey = typeof key === "string" ? advisoryLockKey(key) : BigInt(key);
  const localKey = lockKey.toString();

  const previous = localQueues.get(localKey) ?? Promise.resolve();
  const run = previous.catch(() => undefined).then(() => lockAndRun(sequelize, lockKey, fn, options));
  const tail = run.catch(() => undefined);
  localQueues.set(localKey, tail);
  try {
    return await run;
  } finally {
    // Forget the queue once it drained, so the map does not grow with every key ever used.
    if (localQueues.get(localKey) === tail) localQueues.delete(localKey);
  }
}

async function lockAndRun<T>(
  sequelize: Sequelize,
  key: bigint,
  fn: () => Promise<T>,
  options: AdvisoryLockOptions,
): Promise<T> {
  const client = new Client(clientConfigOf(sequelize));
  // A broken lock connection must not crash the process via an unhandled 'error' event.
  client.on("error", () => undefined);
  await client.connect();
  try {
    const tried = await client.query<{ locked: boolean }>("SELECT pg_try_advisory_lock($1::bigint) AS locked", [
      key.toString(),
    ]);
    if (!tried.rows[0]?.locked) {
      options.onWait?.();
      await client.query("SELECT pg_advisory_lock($1::bigint)", [key.toString()]);
    }
    try {
      return await fn();
    } finally {
      // Explicit unlock: on PGlite the lock would otherwise outlive this connection.
      await client.query("SELECT pg_advisory_unlock($1::bigint)", [key.toString()]).catch(() => undefined);
    }
  } finally {
    await client.end().catch(() => undefined);
  }
}
