/**
 * A fingerprint of every domain table (row count and a hash of the rows), to prove that a refused request
 * changed nothing. users leaves out the columns any authenticated request may bump (last_login_at, updated_at).
 */
import { QueryTypes, type Sequelize } from "sequelize";

const SNAPSHOT_TABLES: readonly [string, string][] = [
  ["users", "SELECT id, external_id, email, name, role, created_at FROM users"],
  ["courses", "SELECT * FROM courses"],
  ["course_students", "SELECT * FROM course_students"],
  ["course_labs", "SELECT * FROM course_labs"],
  ["labs", "SELECT * FROM labs"],
  ["lab_instances", "SELECT * FROM lab_instances"],
  ["access_requests", "SELECT * FROM access_requests"],
  ["task_outbox", "SELECT * FROM task_outbox"],
];

const SNAPSHOT_SQL = SNAPSHOT_TABLES.map(
  ([name, select]) =>
    `SELECT '${name}' AS t, count(*)::int AS n,
            md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) AS h FROM (${select}) x`,
).join(" UNION ALL ");

/** Table name → "<rows> rows, <hash>". */
export type TableSnapshot = Map<string, string>;

export async function tableSnapshot(sequelize: Sequelize): Promise<TableSnapshot> {
  const rows = await sequelize.query<{ t: string; n: number; h: string }>(SNAPSHOT_SQL, { type: QueryTypes.SELECT });
  return new Map(rows.map((r) => [r.t, `${r.n} rows, ${r.h}`]));
}

/** The tables whose fingerprint differs between two snapshots, each with its before → after. */
export function changedTables(before: TableSnapshot, after: TableSnapshot): string[] {
  return [...after.keys()]
    .filter((t) => before.get(t) !== after.get(t))
    .map((t) => `${t} (${before.get(t)} → ${after.get(t)})`);
}

/** Transactions of other sessions on this database (an event handler of an allowed write still writing). */
async function openTransactions(sequelize: Sequelize): Promise<number> {
  const [row] = await sequelize.query<{ n: number }>(
    `SELECT count(*)::int AS n FROM pg_stat_activity
      WHERE datname = current_database() AND pid <> pg_backend_pid() AND xact_start IS NOT NULL`,
    { type: QueryTypes.SELECT },
  );
  return row.n;
}

/**
 * A snapshot once the event handlers of an earlier allowed write have finished writing (removing a student
 * stops their instances in an event handler, after the answer): no transaction open and the tables unchanged
 * over three consecutive looks.
 */
export async function settledTableSnapshot(sequelize: Sequelize): Promise<TableSnapshot> {
  let last = await tableSnapshot(sequelize);
  let stable = 0;
  for (let i = 0; i < 200 && stable < 3; i++) {
    await new Promise((r) => setTimeout(r, 20));
    const next = await tableSnapshot(sequelize);
    const same = changedTables(last, next).length === 0;
    stable = same && (await openTransactions(sequelize)) === 0 ? stable + 1 : 0;
    last = next;
  }
  if (stable < 3) throw new Error("the database never settled after an allowed write");
  return last;
}
