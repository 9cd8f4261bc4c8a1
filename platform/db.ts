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
import { Sequelize, type Options, type Transaction } from "sequelize";

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
  /**
   * Run the statements of `statementRunnerOf` as named prepared statements (see createStatementRunner).
   * Off by default: only for a real PostgreSQL server, never for PGlite.
   */
  preparedStatements?: boolean;
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
  const sequelize = new Sequelize(url, options);
  runners.set(sequelize, createStatementRunner(sequelize, { named: opts.preparedStatements === true }));
  // Statements through Sequelize (transactions, migrations); the runner counts its own.
  sequelize.addHook("beforeQuery", () => {
    countOf(sequelize).n++;
  });
  return sequelize;
}

const counts = new WeakMap<Sequelize, { n: number }>();

function countOf(sequelize: Sequelize): { n: number } {
  let c = counts.get(sequelize);
  if (!c) counts.set(sequelize, (c = { n: 0 }));
  return c;
}

/** SQL statements this pool has sent since it was created (database_queries_total). */
export function statementsRun(sequelize: Sequelize): number {
  return countOf(sequelize).n;
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

/** What the runner needs of a pooled connection: node-postgres's Client. */
interface PgConnection {
  query(config: { name?: string; text: string; values: unknown[] }): Promise<{ rows: Record<string, unknown>[] }>;
  _invalid?: boolean;
}
/** Sequelize internals the runner uses (untyped in its .d.ts): its pool and its Postgres query class. */
interface SequelizeInternals {
  connectionManager: {
    getConnection(options: { type: string }): Promise<PgConnection>;
    releaseConnection(connection: PgConnection): void;
  };
  dialect: {
    Query: {
      new (
        connection: PgConnection,
        sequelize: Sequelize,
        options: object,
      ): {
        formatError(err: Error, stack?: string): Error;
      };
      formatBindParameters(sql: string, values: object, dialect: string): [string, unknown[]];
    };
  };
}

interface CompiledStatement {
  /** Positional SQL ($1, $2, … in order of first use), as Sequelize would send it. */
  text: string;
  /** Bind names, in positional order. */
  names: string[];
  /** Name of the server-side prepared statement; undefined: an unnamed statement each time. */
  name: string | undefined;
}

/**
 * Distinct statement texts prepared per connection. The services build their SQL from constant fragments
 * and allow-listed sort fields, a few hundred texts at most; past the cap, statements run unnamed.
 */
const MAX_PREPARED_STATEMENTS = 1000;
/** The errors after which Sequelize stops reusing a connection (its postgres Query.run). */
const BROKEN_CONNECTION =
  /Unable to set non-blocking to true|SSL SYSCALL error: EOF detected|Local: Authentication failure/i;

const runners = new WeakMap<Sequelize, StatementRunner>();

/** The statement runner of this pool (unnamed statements for a pool not made by createSequelize). */
export function statementRunnerOf(sequelize: Sequelize): StatementRunner {
  let runner = runners.get(sequelize);
  if (runner === undefined) {
    runner = createStatementRunner(sequelize, { named: false });
    runners.set(sequelize, runner);
  }
  return runner;
}

export interface StatementRunner {
  /**
   * Rows of a statement: same SQL dialect, binds, rows and errors as `sequelize.query` with QueryTypes.SELECT
   * (RETURNING rows for a write). Inside `transaction` it runs on that transaction's connection.
   */
  query<T extends object>(sql: string, bind: Record<string, unknown>, transaction?: Transaction): Promise<T[]>;
}

/** Sequelize's transaction as the runner uses it: its connection, and whether it already ended (untyped). */
interface TransactionInternals {
  id: string;
  connection?: PgConnection;
  finished?: string;
}

/**
 * Runs statements on a connection of Sequelize's own pool with node-postgres directly: the hot reads were
 * paying more for Sequelize's per-call work (option merging, SQL rewriting, a stack trace per query, result
 * copying) than for PostgreSQL. `named`: each distinct text becomes a prepared statement on every
 * connection, so PostgreSQL parses and plans it once per connection instead of on every call (the plan
 * cache then decides between custom and generic plans, as for any prepared statement). Never named on
 * PGlite: its connections share one session, where a second connection's PREPARE of a name fails.
 * Same answers as sequelize.query with QueryTypes.SELECT: named binds rewritten by Sequelize's own
 * function, NUL in strings escaped as Sequelize does, rows as plain objects with its type parsers (they
 * belong to the connection), errors turned into Sequelize's errors by its own formatError.
 */
export function createStatementRunner(sequelize: Sequelize, opts: { named: boolean }): StatementRunner {
  const internals = sequelize as unknown as SequelizeInternals;
  const compiled = new Map<string, CompiledStatement>();
  const count = countOf(sequelize);
  // Records the names instead of values: formatBindParameters then yields them in positional order.
  const nameOfEachBind = new Proxy({}, { get: (_t, key) => (typeof key === "string" ? key : undefined) });

  function compile(sql: string): CompiledStatement {
    let c = compiled.get(sql);
    if (c !== undefined) return c;
    const [text, names] = internals.dialect.Query.formatBindParameters(sql.trim(), nameOfEachBind, "postgres");
    const cacheable = compiled.size < MAX_PREPARED_STATEMENTS;
    c = { text, names: names as string[], name: opts.named && cacheable ? `autolabs_${compiled.size + 1}` : undefined };
    if (cacheable) compiled.set(sql, c);
    return c;
  }

  return {
    async query<T extends object>(sql: string, bind: Record<string, unknown>, transaction?: Transaction): Promise<T[]> {
      const statement = compile(sql);
      count.n++;
      const values = statement.names.map((key) => {
        const v = bind[key];
        if (v === undefined) throw new Error(`Named bind parameter "$${key}" has no value in the given object.`);
        return typeof v === "string" && v.includes("\0") ? v.replace(/\0/g, "\\0") : v;
      });
      const tx = transaction as unknown as TransactionInternals | undefined;
      if (tx?.finished !== undefined) {
        // sequelize.query's own refusal: a statement after commit/rollback would run outside the transaction.
        const e = new Error(`${tx.finished} has been called on this transaction(${tx.id}), you can no longer use it.`);
        throw Object.assign(e, { sql: statement.text });
      }
      const owned = tx?.connection === undefined;
      const connection = tx?.connection ?? (await internals.connectionManager.getConnection({ type: "SELECT" }));
      try {
        const result = await connection.query({ name: statement.name, text: statement.text, values });
        return result.rows as T[];
      } catch (err) {
        const e = err as Error & { code?: string; sql?: string; parameters?: unknown[] };
        if (e.code === "ECONNRESET" || BROKEN_CONNECTION.test(String(e)) || e.message === "Query read timeout") {
          connection._invalid = true;
        }
        e.sql = statement.text;
        e.parameters = values;
        throw new internals.dialect.Query(connection, sequelize, {}).formatError(e, e.stack);
      } finally {
        // A transaction's connection goes back to the pool when the transaction ends, not after each statement.
        if (owned) internals.connectionManager.releaseConnection(connection);
      }
    },
  };
}
