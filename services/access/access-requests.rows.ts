/** Row types of the access_requests table (schema: platform/migrations/; queried with SQL, no ORM models). */
import type { AccessRequestStatus } from "./access-requests.rules";

export interface AccessRequestRow {
  id: number;
  student_id: number;
  course_id: number;
  message: string | null;
  status: AccessRequestStatus;
  decided_by: number | null;
  decision_reason: string | null;
  created_at: Date;
  decided_at: Date | null;
}

/**
 * What the API answers: the row plus what a UI shows beside it, joined in the same query (no N+1).
 * Course fields are null when there is no such course, or (for the requesting student) while the student
 * may not see it; decided_by too, then.
 */
export interface AccessRequestView extends AccessRequestRow {
  course_name: string | null;
  course_owner_id: number | null;
  student_name: string | null;
  student_email: string | null;
  decided_by_name: string | null;
}
