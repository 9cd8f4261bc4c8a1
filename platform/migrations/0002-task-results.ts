/**
 * Result tracking on task_outbox (tasks service): the outbox row of a task also records whether the task's
 * Celery result has been applied to its lab instance. The result consumer's periodic reconcile reads the
 * result keys of published rows not applied yet, so a result published while no tasks node listened (or
 * while lab-instances was unavailable) is still applied later.
 *
 * - result_applied_at: when the result stage of this row finished (applied, or settled without a call:
 *   see result_status). NULL on a published row = still waiting for its result.
 * - result_status: the Celery state that was applied (SUCCESS | FAILURE | REVOKED), or NO_RESULT when the
 *   reconcile gave up (no result within its horizon; Celery's own result_expires is a day), or MISMATCH.
 * - result_lease_until: one tasks node at a time applies a given result (every node receives the pub/sub
 *   message); the lease also paces retries after a failed apply. A lease, not a row lock held across the
 *   remote call: on PGlite an open transaction would block the very call it waits for.
 * - result_attempts / result_error: failed apply calls, for operators.
 */
import type { QueryInterface } from "sequelize";
import type { MigrationFn } from "umzug";

const UP: readonly string[] = [
  `ALTER TABLE task_outbox
     ADD COLUMN result_applied_at  timestamptz,
     ADD COLUMN result_status      text,
     ADD COLUMN result_lease_until timestamptz,
     ADD COLUMN result_attempts    integer NOT NULL DEFAULT 0,
     ADD COLUMN result_error       text,
     ADD CONSTRAINT task_outbox_result_attempts_check CHECK (result_attempts >= 0)`,
  // The reconcile's query: published rows still waiting for their result, oldest first (keyset on
  // published_at, id). Partial, so it holds only rows in flight, not the whole history.
  `CREATE INDEX task_outbox_awaiting_result_idx ON task_outbox (published_at, id)
     WHERE published_at IS NOT NULL AND result_applied_at IS NULL`,
];

const DOWN: readonly string[] = [
  `DROP INDEX task_outbox_awaiting_result_idx`,
  `ALTER TABLE task_outbox
     DROP CONSTRAINT task_outbox_result_attempts_check,
     DROP COLUMN result_error,
     DROP COLUMN result_attempts,
     DROP COLUMN result_lease_until,
     DROP COLUMN result_status,
     DROP COLUMN result_applied_at`,
];

async function runAll(qi: QueryInterface, statements: readonly string[]): Promise<void> {
  await qi.sequelize.transaction(async (transaction) => {
    for (const sql of statements) await qi.sequelize.query(sql, { transaction });
  });
}

export const up: MigrationFn<QueryInterface> = ({ context }) => runAll(context, UP);
export const down: MigrationFn<QueryInterface> = ({ context }) => runAll(context, DOWN);
