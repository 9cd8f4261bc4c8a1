/**
 * The W3C trace context of the request that enqueued a task (`traceparent`, null when tracing is off): the
 * relay publishes the row later, from another request or a timer, and copies it into the Celery message's
 * headers so the worker's spans join the trace of the start or stop that asked for them.
 */
import type { QueryInterface } from "sequelize";
import type { MigrationFn } from "umzug";

export const up: MigrationFn<QueryInterface> = async ({ context }) => {
  await context.sequelize.query(`ALTER TABLE task_outbox ADD COLUMN traceparent text`);
};
export const down: MigrationFn<QueryInterface> = async ({ context }) => {
  await context.sequelize.query(`ALTER TABLE task_outbox DROP COLUMN traceparent`);
};
