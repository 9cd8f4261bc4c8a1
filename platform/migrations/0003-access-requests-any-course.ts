/**
 * An access request may name any course id, existing or not (services/access/access.service.ts): a student
 * who asks for a course they cannot see must learn nothing about it, not even whether it exists, so a
 * request for an id that names no course is recorded like any other (it stays pending until its student
 * cancels it; nobody else sees it but admins). The foreign key to courses would tell the two apart, so it goes.
 *
 * Without it, deleting a course no longer deletes its requests: they stay as their students' history and are
 * void like requests for an unknown id. A request counts for a course only if it was made after the course
 * was created (the join in the service), so a request for an id nobody uses yet never reaches its future owner.
 */
import type { QueryInterface } from "sequelize";
import type { MigrationFn } from "umzug";

const UP: readonly string[] = [`ALTER TABLE access_requests DROP CONSTRAINT access_requests_course_id_fkey`];

const DOWN: readonly string[] = [
  // The key cannot come back over requests for courses that do not exist.
  `DELETE FROM access_requests ar WHERE NOT EXISTS (SELECT 1 FROM courses c WHERE c.id = ar.course_id)`,
  `ALTER TABLE access_requests ADD CONSTRAINT access_requests_course_id_fkey
     FOREIGN KEY (course_id) REFERENCES courses (id) ON DELETE CASCADE`,
];

async function runAll(qi: QueryInterface, statements: readonly string[]): Promise<void> {
  await qi.sequelize.transaction(async (transaction) => {
    for (const sql of statements) await qi.sequelize.query(sql, { transaction });
  });
}

export const up: MigrationFn<QueryInterface> = ({ context }) => runAll(context, UP);
export const down: MigrationFn<QueryInterface> = ({ context }) => runAll(context, DOWN);
