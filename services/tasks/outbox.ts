/**
 * The transactional outbox (task_outbox): enqueueTask() is the producer side other services call inside
 * their own transaction; the rest is the SQL of the tasks service's relay and result consumer.
 *
 * A row stores the SHORT task name ("start_lab"); the full Celery name (`<CELERY_TASK_PREFIX>.<name>`) is
 * computed when the row is published, so rows waiting out a broker outage go out under the prefix the
 * workers of the moment register, and the result mapping needs no prefix arithmetic.
 *
 * PGlite caveat: inside a transaction every query passes the transaction (a query on another pooled
 * connection would wait for the transaction to end, which waits for it: a hang).
 */
import { randomUUID } from "node:crypto";
import type { Sequelize, Transaction } from "sequelize";
import { statementRunnerOf } from "../../platform/db";
import { canonicalKwargs, type CeleryTaskKwargs, type CeleryTaskName } from "./celery-protocol";

/** Emit (broadcast) after the enqueuing transaction committed: relays wake at once instead of at their next poll. */
export const TASKS_ENQUEUED_EVENT = "tasks.enqueued";
/** Its payload: nothing; the relay reads the outbox itself. */
export type TasksEnqueued = Record<string, never>;

export interface EnqueueTask<N extends CeleryTaskName> {
  name: N;
  kwargs: CeleryTaskKwargs[N];
  labInstanceId: number;
  /** CELERY_QUEUE (config.celeryQueue): the routing key the row is published with. */
  queue: string;
  /** W3C trace context of the enqueuing request (platform/tracing.ts traceparentOf), null when not traced. */
  traceparent?: string | null;
}

/**
 * Records a task in the caller's transaction and returns its id (uuid4), which is also the Celery task id:
 * store it as lab_instances.celery_task_id in the same transaction. The row becomes visible to the relay
 * when the caller commits; if the caller rolls back, the task never existed. Invalid kwargs throw here, in
 * the caller's transaction, rather than failing at publish time.
 */
export async function enqueueTask<N extends CeleryTaskName>(
  sequelize: Sequelize,
  transaction: Transaction,
  task: EnqueueTask<N>,
): Promise<string> {
  const kwargs = canonicalKwargs(task.name, task.kwargs);
  if (!Number.isSafeInteger(task.labInstanceId) || task.labInstanceId < 1) {
    throw new TypeError("labInstanceId must be a positive integer");
  }
  if (typeof task.queue !== "string" || task.queue === "") throw new TypeError("queue must be a non-empty string");
  const id = randomUUID();
  await run(
    sequelize,
    `INSERT INTO task_outbox (id, task_name, kwargs, queue, lab_instance_id, traceparent)
     VALUES ($id, $name, $kwargs::jsonb, $queue, $labInstanceId, $traceparent)`,
    {
      id,
      name: task.name,
      kwargs: JSON.stringify(kwargs),
      queue: task.queue,
      labInstanceId: task.labInstanceId,
      traceparent: task.traceparent ?? null,
    },
    transaction,
  );
  return id;
}

/**
 * Every statement here goes through the platform's statement runner (named prepared statements on the pool's
 * connections, the transaction's connection when given): Sequelize's query path cost more than the statement.
 */
function run<T extends object>(
  sequelize: Sequelize,
  sql: string,
  bind: Record<string, unknown>,
  transaction?: Transaction,
): Promise<T[]> {
  return statementRunnerOf(sequelize).query<T>(sql, bind, transaction);
}

// ---------------------------------------------------------------------------
// Relay
// ---------------------------------------------------------------------------

export interface OutboxRow {
  id: string;
  task_name: string;
  kwargs: unknown;
  queue: string;
  attempts: number;
  lab_instance_id: number | null;
  traceparent: string | null;
}

export interface OutboxProbe {
  /** Some unpublished row is due now. */
  due: boolean;
  /** Some row is unpublished at all (due or backing off). */
  waiting: boolean;
}

export interface OutboxBacklog {
  unpublished: number;
  /** Age of the oldest unpublished row, seconds (0 when none). */
  oldest_unpublished_s: number;
  /** Published rows whose result is not applied yet. */
  awaiting_result: number;
}

/** The outbox in numbers (health, readiness, metrics). Both counts walk the partial indexes of rows in flight. */
export async function outboxBacklog(sequelize: Sequelize): Promise<OutboxBacklog> {
  // extract() is numeric and counts are bigint: pg hands them over as strings.
  const [row] = await run<{ unpublished: string; oldest_s: string | null; awaiting: string }>(
    sequelize,
    `SELECT (SELECT count(*) FROM task_outbox WHERE published_at IS NULL) AS unpublished,
            (SELECT extract(epoch FROM now() - min(created_at)) FROM task_outbox WHERE published_at IS NULL) AS oldest_s,
            (SELECT count(*) FROM task_outbox WHERE published_at IS NOT NULL AND result_applied_at IS NULL) AS awaiting`,
    {},
  );
  // Scalar subqueries only: always one row.
  return {
    unpublished: Number(row.unpublished),
    oldest_unpublished_s: Math.max(0, Number(row.oldest_s ?? 0)),
    awaiting_result: Number(row.awaiting),
  };
}

/** Cheap look before taking a transaction (and before connecting to a broker for nothing). */
export async function probeOutbox(sequelize: Sequelize): Promise<OutboxProbe> {
  const rows = await run<{ due: boolean; waiting: boolean }>(
    sequelize,
    `SELECT EXISTS (SELECT 1 FROM task_outbox WHERE published_at IS NULL AND next_attempt_at <= now()) AS due,
            EXISTS (SELECT 1 FROM task_outbox WHERE published_at IS NULL) AS waiting`,
    {},
  );
  return { due: rows[0]?.due, waiting: rows[0]?.waiting };
}

/**
 * Claims up to `limit` due rows, locked for this transaction; SKIP LOCKED lets every relay replica claim
 * disjoint rows, so one row is published by one relay. Oldest first. A row is held back while an older
 * row of the same lab instance is still unpublished (e.g. a start_lab backing off after a failed publish):
 * a worker must not see stop_lab before the start_lab it stops. That older row is never skipped by this
 * check just because another relay has it locked: it is unpublished until that relay commits.
 */
export async function claimDueRows(
  sequelize: Sequelize,
  transaction: Transaction,
  limit: number,
): Promise<OutboxRow[]> {
  return run<OutboxRow>(
    sequelize,
    `SELECT t.id, t.task_name, t.kwargs, t.queue, t.attempts, t.lab_instance_id, t.traceparent
       FROM task_outbox t
      WHERE t.published_at IS NULL
        AND t.next_attempt_at <= now()
        AND NOT EXISTS (SELECT 1 FROM task_outbox o
                         WHERE o.lab_instance_id = t.lab_instance_id
                           AND o.published_at IS NULL
                           AND o.created_at < t.created_at)
      ORDER BY t.created_at
      LIMIT $limit::integer
      FOR UPDATE OF t SKIP LOCKED`,
    { limit },
    transaction,
  );
}

export async function markPublished(
  sequelize: Sequelize,
  transaction: Transaction,
  ids: readonly string[],
): Promise<void> {
  if (ids.length === 0) return;
  await run(
    sequelize,
    `UPDATE task_outbox SET published_at = now(), last_error = NULL WHERE id = ANY($ids::uuid[])`,
    { ids: [...ids] },
    transaction,
  );
}

export interface PublishFailure {
  id: string;
  error: string;
  delayMs: number;
}

/** One statement for the whole batch: attempts + 1, the error, the next try after each row's own delay. */
export async function markFailed(
  sequelize: Sequelize,
  transaction: Transaction,
  failures: readonly PublishFailure[],
): Promise<void> {
  if (failures.length === 0) return;
  await run(
    sequelize,
    `UPDATE task_outbox t
        SET attempts = t.attempts + 1,
            last_error = f.error,
            next_attempt_at = now() + f.delay_ms * interval '1 millisecond'
       FROM unnest($ids::uuid[], $errors::text[], $delays::integer[]) AS f(id, error, delay_ms)
      WHERE t.id = f.id`,
    {
      ids: failures.map((f) => f.id),
      errors: failures.map((f) => f.error),
      delays: failures.map((f) => f.delayMs),
    },
    transaction,
  );
}

/**
 * The broker is reachable again: rows backing off from the outage are due now, not in up to a minute.
 * Returns how many rows were made due.
 */
export async function makeWaitingRowsDue(sequelize: Sequelize): Promise<number> {
  const rows = await run<{ id: string }>(
    sequelize,
    `UPDATE task_outbox SET next_attempt_at = now()
      WHERE published_at IS NULL AND next_attempt_at > now()
      RETURNING id`,
    {},
  );
  return rows.length;
}

/**
 * Simulated runner only: its "broker" is this process's memory, so tasks it accepted but had not finished
 * when the process ended are gone. Send them again, as a durable queue would redeliver them.
 */
export async function requeueUnfinished(sequelize: Sequelize, horizonS: number): Promise<number> {
  const rows = await run<{ id: string }>(
    sequelize,
    `UPDATE task_outbox SET published_at = NULL, next_attempt_at = now()
      WHERE published_at IS NOT NULL AND result_applied_at IS NULL
        AND published_at > now() - $horizon::integer * interval '1 second'
      RETURNING id`,
    { horizon: horizonS },
  );
  return rows.length;
}

// ---------------------------------------------------------------------------
// Results
// ---------------------------------------------------------------------------

export interface LeasedTask {
  id: string;
  task_name: string;
  lab_instance_id: number | null;
  result_attempts: number;
}

/**
 * Takes the right to apply this task's result for `leaseS` seconds, or returns null when the row is not
 * ours, already applied, or leased by another node (every node gets the pub/sub message). Autocommit: no
 * transaction is held across the remote call.
 */
export async function leaseResult(sequelize: Sequelize, id: string, leaseS: number): Promise<LeasedTask | null> {
  const rows = await run<LeasedTask>(
    sequelize,
    `UPDATE task_outbox
        SET result_lease_until = now() + $lease::integer * interval '1 second'
      WHERE id = $id
        AND result_applied_at IS NULL
        AND (result_lease_until IS NULL OR result_lease_until <= now())
      RETURNING id, task_name, lab_instance_id, result_attempts`,
    { id, lease: leaseS },
  );
  return rows[0] ?? null;
}

/** The result is applied (or settled without a call, with `note` saying why). */
export async function markResultApplied(
  sequelize: Sequelize,
  id: string,
  status: string,
  note: string | null,
): Promise<void> {
  await run(
    sequelize,
    `UPDATE task_outbox
        SET result_applied_at = now(), result_status = $status, result_error = $note, result_lease_until = NULL
      WHERE id = $id AND result_applied_at IS NULL`,
    { id, status, note },
  );
}

/** The apply call failed: keep the row waiting, retry after `delayMs` (the lease paces the reconcile). */
export async function markApplyFailed(sequelize: Sequelize, id: string, error: string, delayMs: number): Promise<void> {
  await run(
    sequelize,
    `UPDATE task_outbox
        SET result_attempts = result_attempts + 1, result_error = $error,
            result_lease_until = now() + $delay::integer * interval '1 millisecond'
      WHERE id = $id AND result_applied_at IS NULL`,
    { id, error, delay: delayMs },
  );
}

/** Releases a lease taken for a result that turned out not to be final (nothing applied, no failure). */
export async function releaseLease(sequelize: Sequelize, id: string): Promise<void> {
  await run(
    sequelize,
    `UPDATE task_outbox SET result_lease_until = NULL WHERE id = $id AND result_applied_at IS NULL`,
    { id },
  );
}

export interface AwaitingRow {
  id: string;
  /** published_at as PostgreSQL text: keeps the microseconds a JS Date would drop (the keyset needs them). */
  published_key: string;
}

/**
 * One page of published rows still waiting for their result and not leased, oldest first, after `cursor`
 * (keyset on published_at, id: the reconcile walks every waiting row, not only the oldest page).
 */
export async function awaitingResults(
  sequelize: Sequelize,
  horizonS: number,
  limit: number,
  cursor: AwaitingRow | null,
): Promise<AwaitingRow[]> {
  return run<AwaitingRow>(
    sequelize,
    `SELECT id, published_at::text AS published_key FROM task_outbox
      WHERE published_at IS NOT NULL AND result_applied_at IS NULL
        AND published_at > now() - $horizon::integer * interval '1 second'
        AND (result_lease_until IS NULL OR result_lease_until <= now())
        AND ($afterAt::timestamptz IS NULL OR (published_at, id) > ($afterAt::timestamptz, $afterId::uuid))
      ORDER BY published_at, id
      LIMIT $limit::integer`,
    { horizon: horizonS, limit, afterAt: cursor?.published_key ?? null, afterId: cursor?.id ?? null },
  );
}

/**
 * Rows published longer ago than the horizon without a result: the worker lost them or the result key
 * expired. lab-instances' own timeouts have long since failed their instances; stop polling for them.
 */
export async function settleExpiredResults(sequelize: Sequelize, horizonS: number): Promise<number> {
  const rows = await run<{ id: string }>(
    sequelize,
    `UPDATE task_outbox
        SET result_applied_at = now(), result_status = 'NO_RESULT', result_error = $note, result_lease_until = NULL
      WHERE published_at IS NOT NULL AND result_applied_at IS NULL
        AND published_at <= now() - $horizon::integer * interval '1 second'
      RETURNING id`,
    { horizon: horizonS, note: `no result within ${horizonS} s of publishing` },
  );
  return rows.length;
}

// ---------------------------------------------------------------------------
// Operators (the REPL's `outbox`, `outbox retry`)
// ---------------------------------------------------------------------------

export interface OutboxEntry {
  id: string;
  task_name: string;
  lab_instance_id: number | null;
  created_at: Date;
  /** Seconds since the row was written. */
  age_s: number;
  attempts: number;
  next_attempt_at: Date;
  last_error: string | null;
  published_at: Date | null;
  result_status: string | null;
  result_error: string | null;
  result_attempts: number;
}

/** The newest rows, or (unsent) the unpublished ones oldest first: the backlog an operator looks at. */
export async function listOutbox(
  sequelize: Sequelize,
  opts: { unsent: boolean; limit: number },
): Promise<OutboxEntry[]> {
  return run<OutboxEntry>(
    sequelize,
    `SELECT id, task_name, lab_instance_id, created_at, extract(epoch FROM now() - created_at)::integer AS age_s,
            attempts, next_attempt_at, last_error, published_at, result_status, result_error, result_attempts
       FROM task_outbox
      WHERE NOT $unsent::boolean OR published_at IS NULL
      ORDER BY CASE WHEN $unsent::boolean THEN created_at END ASC, created_at DESC
      LIMIT $limit::integer`,
    { unsent: opts.unsent, limit: opts.limit },
  );
}

/**
 * An operator's retry, now: an unpublished row becomes due (the relay publishes it on its next round), a
 * published row whose result was not applied loses its lease (the reconcile reads its result again).
 * "done": the row's result is applied, nothing to retry; null: no such row.
 */
export async function retryOutboxRow(sequelize: Sequelize, id: string): Promise<"publish" | "result" | "done" | null> {
  const rows = await run<{ unpublished: boolean }>(
    sequelize,
    `UPDATE task_outbox
        SET next_attempt_at = CASE WHEN published_at IS NULL THEN now() ELSE next_attempt_at END,
            result_lease_until = CASE WHEN published_at IS NULL THEN result_lease_until END
      WHERE id = $id AND result_applied_at IS NULL
      RETURNING published_at IS NULL AS unpublished`,
    { id },
  );
  if (rows[0]) return rows[0].unpublished ? "publish" : "result";
  const exists = await run(sequelize, `SELECT 1 FROM task_outbox WHERE id = $id`, { id });
  return exists.length ? "done" : null;
}
