/**
 * lab_instances reads and writes that the owners of courses and labs make inside their own transaction
 * (a course or lab is deleted, or a lab detached, only when none of its instances is active; finished ones
 * go with it). lab-instances owns the table: these are the only writes to it from outside this folder.
 * Exposed through lab-instances.contract.ts.
 */
import { QueryTypes, type Sequelize, type Transaction } from "sequelize";
import { ACTIVE_STATUSES } from "./lab-instances.rules";

/** The instances of a course, of a lab, or of a lab in a course. */
export type InstancesOf = { course_id: number; lab_id?: number } | { course_id?: number; lab_id: number };

/** Constant SQL text: the statuses are ours, never input. */
const ACTIVE_SQL = `(${ACTIVE_STATUSES.map((s) => `'${s}'`).join(", ")})`;

function whereOf(of: InstancesOf): { where: string; bind: Record<string, number> } {
  const parts: string[] = [];
  const bind: Record<string, number> = {};
  if (of.course_id !== undefined) {
    parts.push("course_id = $course");
    bind.course = of.course_id;
  }
  if (of.lab_id !== undefined) {
    parts.push("lab_id = $lab");
    bind.lab = of.lab_id;
  }
  return { where: parts.join(" AND "), bind };
}

export async function countActiveInstances(
  sequelize: Sequelize,
  of: InstancesOf,
  transaction?: Transaction,
): Promise<number> {
  const { where, bind } = whereOf(of);
  const [row] = await sequelize.query<{ n: string }>(
    `SELECT count(*) AS n FROM lab_instances WHERE ${where} AND status IN ${ACTIVE_SQL}`,
    { bind, type: QueryTypes.SELECT, transaction },
  );
  return Number(row.n); // an aggregate without GROUP BY: always one row
}

/**
 * Deletes the instances (`finished`: only those no longer active) before their course or lab goes: they are
 * its history only, and left in place their foreign key would refuse the owner's DELETE.
 */
export async function deleteInstances(
  sequelize: Sequelize,
  of: InstancesOf,
  which: "finished" | "all",
  transaction: Transaction,
): Promise<void> {
  const { where, bind } = whereOf(of);
  const status = which === "finished" ? ` AND status NOT IN ${ACTIVE_SQL}` : "";
  await sequelize.query(`DELETE FROM lab_instances WHERE ${where}${status}`, { bind, transaction });
}
