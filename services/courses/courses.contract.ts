/**
 * What other services may use of `courses`: the events it broadcasts after a committed write, with their
 * payloads. lab-instances listens to COURSE_EVENTS.studentRemoved (a student who left stops their labs);
 * the rest tell any listener (none in this repository yet) what changed.
 */
export { assignStudents } from "./courses.repository";

export const COURSE_EVENTS = {
  changed: "courses.changed",
  ownerChanged: "courses.owner-changed",
  removed: "courses.removed",
  studentAssigned: "courses.student-assigned",
  studentRemoved: "courses.student-removed",
  labAttached: "courses.lab-attached",
  labDetached: "courses.lab-detached",
} as const;

export interface CourseChanged {
  course_id: number;
}
export interface CourseStudentChanged {
  course_id: number;
  student_id: number;
}
export interface CourseLabChanged {
  course_id: number;
  lab_id: number;
}

/** The payload of each event. */
export interface CourseEventPayloads {
  "courses.changed": CourseChanged;
  "courses.owner-changed": CourseChanged;
  "courses.removed": CourseChanged;
  "courses.student-assigned": CourseStudentChanged;
  "courses.student-removed": CourseStudentChanged;
  "courses.lab-attached": CourseLabChanged;
  "courses.lab-detached": CourseLabChanged;
}
export type CourseEvent = keyof CourseEventPayloads;

/** Operator actions (system only): `courses.ofUser {user_id}` answers UserCourse[]. */
export const COURSES_ACTIONS = { ofUser: "courses.ofUser" } as const;

export interface UserCourse {
  id: number;
  name: string;
  relation: "owner" | "student";
}
