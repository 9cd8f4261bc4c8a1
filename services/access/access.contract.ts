/**
 * What other services may use of `access`: the permission check the access gate asks (`access.check`,
 * its query and answer live in lib/permission.rules.ts, pure, because the gate in platform/ needs them) and
 * the event broadcast after an access request changed.
 */
export { ACCESS_CHECK_ACTION, type PermissionAnswer, type PermissionQuery } from "../../lib/permission.rules";

export const ACCESS_REQUESTS_CHANGED_EVENT = "access-requests.changed";

export interface AccessRequestChanged {
  request_id: number;
  course_id: number | null;
  student_id: number;
  status: "pending" | "approved" | "rejected" | "cancelled";
}
