/** Row types of the lab_instances table (schema: platform/migrations/; queried with SQL, no ORM models). */
import type { InstanceStatus } from "./lab-instances.rules";

/** A lab_instances row, as the API shows it (snake_case, ISO times once serialised). */
export interface LabInstanceRow {
  id: number;
  lab_id: number;
  course_id: number;
  student_id: number;
  status: InstanceStatus;
  /** The start_lab task's Celery id (stop/cleanup task ids live in task_outbox rows of this instance). */
  celery_task_id: string | null;
  k8s_pod_name: string | null;
  connection_url: string | null;
  error: string | null;
  created_at: Date;
  started_at: Date | null;
  stopped_at: Date | null;
  expires_at: Date | null;
  updated_at: Date;
}

export const INSTANCE_COLUMNS = [
  "id",
  "lab_id",
  "course_id",
  "student_id",
  "status",
  "celery_task_id",
  "k8s_pod_name",
  "connection_url",
  "error",
  "created_at",
  "started_at",
  "stopped_at",
  "expires_at",
  "updated_at",
] as const satisfies readonly (keyof LabInstanceRow)[];

/**
 * What the API answers for an instance (lists, single gets, starts, stops, the status-changed broadcast): the
 * row plus the names a dashboard shows beside it, joined in the same statement (no N+1).
 */
export interface LabInstanceView extends LabInstanceRow {
  lab_name: string;
  course_name: string;
}

export const INSTANCE_VIEW_COLUMNS = [
  ...INSTANCE_COLUMNS,
  "lab_name",
  "course_name",
] as const satisfies readonly (keyof LabInstanceView)[];

/** The connection answer (GET /lab-instances/{id}/connection): only while running. */
export interface LabInstanceConnection {
  id: number;
  status: InstanceStatus;
  connection_url: string | null;
  /** The worker's port, else the URL's explicit port, else its scheme's default. */
  port: number | null;
  k8s_pod_name: string | null;
  started_at: Date | null;
  expires_at: Date | null;
}
