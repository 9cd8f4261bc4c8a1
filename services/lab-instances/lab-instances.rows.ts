/** Sequelize model of the lab_instances table (schema: migrations/). */
import { DataTypes, Model, type ModelStatic, type Sequelize } from "sequelize";
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

export type LabInstanceModel = ModelStatic<Model<LabInstanceRow, Partial<LabInstanceRow>>>;

export function defineLabInstanceModel(sequelize: Sequelize): LabInstanceModel {
  return sequelize.define<Model<LabInstanceRow, Partial<LabInstanceRow>>>(
    "lab_instance",
    {
      id: { type: DataTypes.INTEGER, primaryKey: true, autoIncrement: true },
      lab_id: { type: DataTypes.INTEGER, allowNull: false },
      course_id: { type: DataTypes.INTEGER, allowNull: false },
      student_id: { type: DataTypes.INTEGER, allowNull: false },
      status: { type: DataTypes.TEXT, allowNull: false },
      celery_task_id: { type: DataTypes.UUID },
      k8s_pod_name: { type: DataTypes.TEXT },
      connection_url: { type: DataTypes.TEXT },
      error: { type: DataTypes.TEXT },
      created_at: { type: DataTypes.DATE },
      started_at: { type: DataTypes.DATE },
      stopped_at: { type: DataTypes.DATE },
      expires_at: { type: DataTypes.DATE },
      updated_at: { type: DataTypes.DATE },
    },
    { tableName: "lab_instances", timestamps: false },
  );
}
