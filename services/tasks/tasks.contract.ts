/**
 * What other services may use of `tasks`: the task names, the result states a worker reports, and the
 * outbox. A service that starts a task writes it through `enqueueTask` inside its own transaction (the
 * outbox is tasks' table; the caller's transaction makes the task and the caller's change commit together)
 * and broadcasts TASKS_ENQUEUED_EVENT after the commit to wake the relay.
 */
export { CELERY_TASK_NAMES as TASK_NAMES, type CeleryTaskName as TaskName } from "./celery-protocol";
export { TASKS_ENQUEUED_EVENT, enqueueTask, type TasksEnqueued } from "./outbox";
export { SIMULATED_LAB_PATH } from "./simulated-runner";

/** The final states of a task's result that are applied to its object. */
export type TaskResultState = "SUCCESS" | "FAILURE" | "REVOKED";
export const TASK_RESULT_STATES: readonly TaskResultState[] = ["SUCCESS", "FAILURE", "REVOKED"];

/** Operator and health actions, system only. `health` answers TasksHealth (this node's relay and broker). */
export const TASKS_ACTIONS = { health: "tasks.health", outbox: "tasks.outbox", retry: "tasks.retry" } as const;
export type { OutboxEntry } from "./outbox";
export type { TasksHealth } from "./tasks.service";
