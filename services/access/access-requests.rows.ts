/** Sequelize model of the access_requests table (schema: migrations/). */
import { DataTypes, Model, type ModelStatic, type Sequelize } from "sequelize";
import type { AccessRequestStatus } from "./access-requests.rules";

export interface AccessRequestRow {
  id: number;
  student_id: number;
  course_id: number;
  message: string | null;
  status: AccessRequestStatus;
  decided_by: number | null;
  decision_reason: string | null;
  created_at: Date;
  decided_at: Date | null;
}

/**
 * What the API answers: the row plus what a UI shows beside it, joined in the same query (no N+1).
 * Course fields are null when there is no such course, or (for the requesting student) while the student
 * may not see it; decided_by too, then.
 */
export interface AccessRequestView extends AccessRequestRow {
  course_name: string | null;
  course_owner_id: number | null;
  student_name: string | null;
  student_email: string | null;
  decided_by_name: string | null;
}

export type AccessRequestModel = ModelStatic<Model<AccessRequestRow, Partial<AccessRequestRow>>>;

export function defineAccessRequestModel(sequelize: Sequelize): AccessRequestModel {
  return sequelize.define<Model<AccessRequestRow, Partial<AccessRequestRow>>>(
    "access_request",
    {
      id: { type: DataTypes.INTEGER, primaryKey: true, autoIncrement: true },
      student_id: { type: DataTypes.INTEGER, allowNull: false },
      course_id: { type: DataTypes.INTEGER, allowNull: false },
      message: { type: DataTypes.TEXT },
      status: { type: DataTypes.TEXT, allowNull: false },
      decided_by: { type: DataTypes.INTEGER },
      decision_reason: { type: DataTypes.TEXT },
      created_at: { type: DataTypes.DATE },
      decided_at: { type: DataTypes.DATE },
    },
    { tableName: "access_requests", timestamps: false },
  );
}
