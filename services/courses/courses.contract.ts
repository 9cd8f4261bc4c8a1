/**
 * What other services may use of `courses`: the repository function that assigns students inside the caller's
 * transaction (access approves a request with it), and the one event it broadcasts after a committed write,
 * `courses.student-removed`, on which lab-instances stops the student's labs in that course. Other changes
 * are not announced: nothing listens to them (caches are dropped by table, platform/db.mixin.ts).
 */
export { assignStudents } from "./courses.repository";

export const COURSE_EVENTS = {
  studentRemoved: "courses.student-removed",
} as const;

export interface CourseStudentChanged {
  course_id: number;
  student_id: number;
}
/** Operator actions (system only): `courses.ofUser {user_id}` answers UserCourse[]. */
export const COURSES_ACTIONS = { ofUser: "courses.ofUser" } as const;

export interface UserCourse {
  id: number;
  name: string;
  relation: "owner" | "student";
}
