/** Sequelize models of the tables the courses service owns (schema: migrations/). */
import { DataTypes, Model, type ModelStatic, type Sequelize } from "sequelize";

export interface CourseRow {
  id: number;
  name: string;
  description: string;
  owner_id: number;
  created_at: Date;
  updated_at: Date;
}

export type CourseModel = ModelStatic<Model<CourseRow, Partial<CourseRow>>>;

export function defineCourseModels(sequelize: Sequelize): CourseModel {
  sequelize.define(
    "course_student",
    {
      course_id: { type: DataTypes.INTEGER, primaryKey: true },
      student_id: { type: DataTypes.INTEGER, primaryKey: true },
      assigned_at: { type: DataTypes.DATE },
    },
    { tableName: "course_students", timestamps: false },
  );
  sequelize.define(
    "course_lab",
    {
      course_id: { type: DataTypes.INTEGER, primaryKey: true },
      lab_id: { type: DataTypes.INTEGER, primaryKey: true },
    },
    { tableName: "course_labs", timestamps: false },
  );
  return sequelize.define<Model<CourseRow, Partial<CourseRow>>>(
    "course",
    {
      id: { type: DataTypes.INTEGER, primaryKey: true, autoIncrement: true },
      name: { type: DataTypes.TEXT, allowNull: false },
      description: { type: DataTypes.TEXT, allowNull: false, defaultValue: "" },
      owner_id: { type: DataTypes.INTEGER, allowNull: false },
      created_at: { type: DataTypes.DATE },
      updated_at: { type: DataTypes.DATE },
    },
    { tableName: "courses", timestamps: false },
  );
}
