/**
 * The statement runner (platform/db.ts) answers exactly as sequelize.query with QueryTypes.SELECT:
 * the same rows and types, the same treatment of binds (repeated names, `$$`, NUL in strings, a missing
 * value) and the same Sequelize errors; on a real PostgreSQL each distinct text is prepared once per
 * connection.
 */
import { QueryTypes, type Sequelize } from "sequelize";
import { createSequelize, statementRunnerOf } from "../../platform/db";
import { createTestDatabase, type TestDatabase } from "../support/platform";
import { ifAssigned } from "../support/cleanup";

let db: TestDatabase;
let sequelize: Sequelize;

beforeAll(async () => {
  db = await createTestDatabase();
  // One connection: what one statement prepared, the next one sees.
  sequelize = createSequelize(db.url, { poolMax: 1, preparedStatements: true });
  await sequelize.query(
    `INSERT INTO users (external_id, email, name, role) VALUES ('ext-1', 'a@example.com', 'Ann', 'teacher')`,
  );
});

afterAll(async () => {
  await ifAssigned(sequelize)?.close();
  await ifAssigned(db)?.drop();
});

const viaSequelize = (sql: string, bind: Record<string, unknown>) =>
  sequelize.query<Record<string, unknown>>(sql, { bind, type: QueryTypes.SELECT });
const viaRunner = (sql: string, bind: Record<string, unknown>) =>
  statementRunnerOf(sequelize).query<Record<string, unknown>>(sql, bind);

it.each<[string, string, Record<string, unknown>]>([
  [
    "a row with timestamps, a bigint count and a repeated bind",
    `SELECT id, email, role, created_at, count(*) OVER () AS n, $r::text AS again FROM users
      WHERE role = $r AND external_id = $ext`,
    { r: "teacher", ext: "ext-1", unused: 1 },
  ],
  ["NUL in a string value (Sequelize sends it as \\0)", "SELECT $s::text AS s", { s: "a\0b" }],
  ["no rows", "SELECT id FROM users WHERE id = $id", { id: 2_000_000 }],
  [
    "arrays and JSON",
    "SELECT $ids::int[] AS ids, $doc::jsonb AS doc",
    { ids: [3, 1, 2], doc: JSON.stringify({ a: [1] }) },
  ],
])("%s: the same rows as sequelize.query", async (_name, sql, bind) => {
  const expected = await viaSequelize(sql, bind);
  expect(await viaRunner(sql, bind)).toEqual(expected);
  // Second run: the prepared statement this time.
  expect(await viaRunner(sql, bind)).toEqual(expected);
});

it("prepares each distinct text once per connection", async () => {
  const sql = "SELECT name FROM users WHERE external_id = $ext";
  await viaRunner(sql, { ext: "ext-1" });
  await viaRunner(sql, { ext: "ext-1" });
  const prepared = await viaRunner("SELECT statement FROM pg_prepared_statements WHERE statement LIKE $p", {
    p: "SELECT name FROM users WHERE external_id = $1%",
  });
  expect(prepared).toHaveLength(1);
});

it("`$$` is rewritten to `$` as Sequelize does (so dollar quoting fails in both)", async () => {
  const sql = "SELECT $$x$$ AS dollar";
  const fromSequelize = await viaSequelize(sql, {}).catch((e: unknown) => e);
  const fromRunner = await viaRunner(sql, {}).catch((e: unknown) => e);
  expect(fromRunner).toMatchObject({ name: (fromSequelize as Error).name, message: (fromSequelize as Error).message });
});

it("a missing bind value fails as in Sequelize", async () => {
  const sql = "SELECT id FROM users WHERE id = $id";
  await expect(viaSequelize(sql, {})).rejects.toThrow('Named bind parameter "$id" has no value in the given object.');
  await expect(viaRunner(sql, {})).rejects.toThrow('Named bind parameter "$id" has no value in the given object.');
});

it("database errors arrive as the same Sequelize errors, the pg error as parent", async () => {
  const insert = `INSERT INTO users (external_id, email, name, role) VALUES ($ext, 'b@example.com', 'Bo', 'student')
                  RETURNING id`;
  const fromSequelize = await viaSequelize(insert, { ext: "ext-1" }).catch((e: unknown) => e);
  const fromRunner = await viaRunner(insert, { ext: "ext-1" }).catch((e: unknown) => e);
  expect(fromRunner).toMatchObject({
    name: "SequelizeUniqueConstraintError",
    parent: { code: "23505", constraint: (fromSequelize as { parent: { constraint: string } }).parent.constraint },
  });
  expect((fromRunner as Error).name).toBe((fromSequelize as Error).name);
  const bad = await viaRunner("SELECT no_such_column FROM users", {}).catch((e: unknown) => e);
  expect(bad).toMatchObject({ name: "SequelizeDatabaseError", parent: { code: "42703" } });
  // The connection is still good afterwards.
  expect(await viaRunner("SELECT 1 AS one", {})).toEqual([{ one: 1 }]);
});
