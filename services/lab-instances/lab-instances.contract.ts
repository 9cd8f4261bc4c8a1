/**
 * What other services may use of `lab-instances`: its action and event names, the params and answer of
 * `applyTaskResult` (called by tasks' relay), the public JSON of an instance and the lifecycle order that
 * SSE streams rely on.
 */
import type { TaskName, TaskResultState } from "../tasks/tasks.contract";
import type { InstanceStatus } from "./lab-instances.rules";
import type { LabInstanceRow, LabInstanceView } from "./lab-instances.rows";

export { ACTIVE_STATUSES, isFinal, statusRank, type InstanceStatus } from "./lab-instances.rules";
export type { LabInstanceRow, LabInstanceView } from "./lab-instances.rows";
export { countActiveInstances, deleteInstances, type InstancesOf } from "./lab-instances.repository";

export const LAB_INSTANCES_ACTIONS = {
  list: "lab-instances.list",
  create: "lab-instances.create",
  get: "lab-instances.get",
  applyTaskResult: "lab-instances.applyTaskResult",
  stop: "lab-instances.stop",
  /** System only: one expiry sweep now, answers SweepReport. */
  sweep: "lab-instances.sweep",
  /** System only: instances by student, active or stuck, answers InspectedInstance[]. */
  inspect: "lab-instances.inspect",
} as const;

export interface SweepReport {
  /** false: another node holds the sweep lock and swept this round. */
  swept: boolean;
  timed_out: number[];
  expired: number[];
}

/** An instance as `lab-instances.inspect` shows it: how long it has been in its status. */
export interface InspectedInstance extends LabInstanceRow {
  status_age_s: number;
}

/**
 * Broadcast on every status change, with the instance's public JSON (LabInstanceView) plus `course_owner_id`
 * (so a gateway decides, with decideLabInstance, which callers' streams show it; not sent to clients).
 */
export const STATUS_CHANGED_EVENT = "lab-instances.status-changed";
export type StatusChanged = LabInstanceView & { course_owner_id: number };

/** Params of `lab-instances.applyTaskResult`. */
export interface ApplyTaskResultParams {
  task_id: string;
  task_name: TaskName;
  lab_instance_id: number;
  status: TaskResultState;
  /** SUCCESS only: the worker's return value. */
  result?: unknown;
  /** FAILURE / REVOKED only: "<ExcType>: <message>". */
  error?: string;
}

export interface ApplyTaskResultAnswer {
  /** Something was written (a status change, a task, stopped_at); false: the result changed nothing. */
  applied: boolean;
  /** Status after applying; null when the instance no longer exists. */
  status: InstanceStatus | null;
  note?: string;
}
