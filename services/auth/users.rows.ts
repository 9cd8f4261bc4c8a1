/** Sequelize model of the users table (schema: migrations/). Rows mirror the IdP's accounts. */
import { DataTypes, Model, type ModelStatic, type Sequelize } from "sequelize";
import type { Role } from "../../lib/principal";

export interface UserRow {
  id: number;
  /** The IdP's `sub`; never sent to clients (selected explicitly where needed). */
  external_id?: string;
  email: string | null;
  name: string | null;
  role: Role;
  created_at: Date;
  updated_at: Date;
  last_login_at: Date | null;
}

export type UserModel = ModelStatic<Model<UserRow, Partial<UserRow>>>;

export function defineUserModel(sequelize: Sequelize): UserModel {
  return sequelize.define<Model<UserRow, Partial<UserRow>>>(
    "user",
    {
      id: { type: DataTypes.INTEGER, primaryKey: true, autoIncrement: true },
      external_id: { type: DataTypes.TEXT, allowNull: false, unique: true },
      email: { type: DataTypes.TEXT },
      name: { type: DataTypes.TEXT },
      role: { type: DataTypes.TEXT, allowNull: false },
      created_at: { type: DataTypes.DATE },
      updated_at: { type: DataTypes.DATE },
      last_login_at: { type: DataTypes.DATE },
    },
    { tableName: "users", timestamps: false },
  );
}
