/**
 * Rows of the access_requests table (schema: platform/migrations/; queried with SQL, no ORM models), declared
 * once as JSON Schema (type and OpenAPI component).
 */
import { extend, s, type Infer } from "../../lib/schema";
import { ACCESS_REQUEST_STATUSES, DECISION_REASON_MAX, REQUEST_MESSAGE_MAX } from "./access-requests.rules";

const id = s.integer({ minimum: 1 });

const AccessRequestRowSchema = s.object({
  id,
  student_id: id,
  course_id: s.integer({ minimum: 1, description: "Any course id the student named (it need not exist)" }),
  message: s.nullable(s.string({ maxLength: REQUEST_MESSAGE_MAX })),
  status: s.enum(ACCESS_REQUEST_STATUSES),
  decided_by: s.nullable(id),
  decision_reason: s.nullable(s.string({ maxLength: DECISION_REASON_MAX })),
  created_at: s.dateTime(),
  decided_at: s.nullable(s.dateTime()),
});
export type AccessRequestRow = Infer<typeof AccessRequestRowSchema>;

/**
 * What the API answers: the row plus what a UI shows beside it, joined in the same query (no N+1).
 * Course fields are null when there is no such course, or (for the requesting student) while the student
 * may not see it; decided_by too, then.
 */
export const AccessRequest = extend(
  AccessRequestRowSchema,
  {
    course_name: s.nullable(s.string()),
    course_owner_id: s.nullable(id),
    student_name: s.nullable(s.string()),
    student_email: s.nullable(s.string()),
    decided_by_name: s.nullable(s.string()),
  },
  { title: "AccessRequest" },
);
export type AccessRequestView = Infer<typeof AccessRequest>;
