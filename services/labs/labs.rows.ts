/** Sequelize model of the labs table (schema: migrations/). */
import { DataTypes, Model, type ModelStatic, type Sequelize } from "sequelize";
import type { LabResources, LabStatus } from "./labs.rules";

export interface LabRow {
  id: number;
  name: string;
  description: string;
  docker_image: string;
  resources: LabResources;
  network_isolated: boolean;
  max_lifetime_s: number | null;
  status: LabStatus;
  rejection_reason: string | null;
  created_by: number;
  approved_by: number | null;
  created_at: Date;
  updated_at: Date;
}

export type LabModel = ModelStatic<Model<LabRow, Partial<LabRow>>>;

export function defineLabModel(sequelize: Sequelize): LabModel {
  return sequelize.define<Model<LabRow, Partial<LabRow>>>(
    "lab",
    {
      id: { type: DataTypes.INTEGER, primaryKey: true, autoIncrement: true },
      name: { type: DataTypes.TEXT, allowNull: false },
      description: { type: DataTypes.TEXT, allowNull: false },
      docker_image: { type: DataTypes.TEXT, allowNull: false },
      resources: { type: DataTypes.JSONB, allowNull: false },
      network_isolated: { type: DataTypes.BOOLEAN, allowNull: false },
      max_lifetime_s: { type: DataTypes.INTEGER },
      status: { type: DataTypes.TEXT, allowNull: false },
      rejection_reason: { type: DataTypes.TEXT },
      created_by: { type: DataTypes.INTEGER, allowNull: false },
      approved_by: { type: DataTypes.INTEGER },
      created_at: { type: DataTypes.DATE },
      updated_at: { type: DataTypes.DATE },
    },
    { tableName: "labs", timestamps: false },
  );
}
