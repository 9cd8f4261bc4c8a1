/**
 * The course catalog (courses service): `listed` courses are shown to every signed-in user in
 * `GET /courses/catalog`, so a student can find a course to ask to join. Off by default: a course is private
 * until its owner (or an admin) lists it.
 *
 * The partial index serves the catalog's one query (listed rows, newest first by default) and holds only
 * listed courses.
 */
import type { QueryInterface } from "sequelize";
import type { MigrationFn } from "umzug";

const UP: readonly string[] = [
  `ALTER TABLE courses ADD COLUMN listed boolean NOT NULL DEFAULT false`,
  `CREATE INDEX courses_listed_idx ON courses (created_at, id) WHERE listed`,
];

const DOWN: readonly string[] = [`DROP INDEX courses_listed_idx`, `ALTER TABLE courses DROP COLUMN listed`];

async function runAll(qi: QueryInterface, statements: readonly string[]): Promise<void> {
  await qi.sequelize.transaction(async (transaction) => {
    for (const sql of statements) await qi.sequelize.query(sql, { transaction });
  });
}

export const up: MigrationFn<QueryInterface> = ({ context }) => runAll(context, UP);
export const down: MigrationFn<QueryInterface> = ({ context }) => runAll(context, DOWN);
