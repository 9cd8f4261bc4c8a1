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
