/**
 * course_students writes that another service makes inside its own transaction (access approving a request
 * assigns the student in the same transaction as the decision). courses owns the table; exposed through
 * courses.contract.ts. The caller invalidates the caches (tablesChanged("course_students")) after commit.
 */
import { QueryTypes, type Sequelize, type Transaction } from "sequelize";

/**
 * Assigns the students to the course; returns the ids newly assigned (ones already assigned are skipped).
 * In id order: two overlapping assignments then wait for each other instead of deadlocking. A course that
 * no longer exists fails with PostgreSQL's foreign-key error (23503).
 */
export async function assignStudents(
  sequelize: Sequelize,
  courseId: number,
  studentIds: readonly number[],
  transaction: Transaction,
): Promise<number[]> {
  const rows = await sequelize.query<{ student_id: number }>(
    `INSERT INTO course_students (course_id, student_id)
     SELECT $course, unnest($ids::int[]) ON CONFLICT DO NOTHING RETURNING student_id`,
    { bind: { course: courseId, ids: [...studentIds].sort((a, b) => a - b) }, type: QueryTypes.SELECT, transaction },
  );
  return rows.map((r) => r.student_id);
}
