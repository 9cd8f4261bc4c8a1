/**
 * Access-request domain rules: the state machine (pending → approved | rejected | cancelled), who may
 * see, decide or cancel a request, and the validation of the free-text fields.
 *
 * Pure: no moleculer, no sequelize. Decisions come back as values; the service maps them
 * (INVALID_TRANSITION → 409, "not_found" → 404, "forbidden" → 403, problems → 422).
 */
import type { Decision } from "../../lib/access.rules";
import type { ListSpec } from "../../lib/listing";
import type { ValidationProblem } from "../../lib/validation-problem";
import type { Principal } from "../../lib/principal";
import { controlCharProblem } from "../../lib/params";

/* ───────────────────────────── State machine ───────────────────────────── */

export type AccessRequestStatus = "pending" | "approved" | "rejected" | "cancelled";
export const ACCESS_REQUEST_STATUSES: readonly AccessRequestStatus[] = ["pending", "approved", "rejected", "cancelled"];
export type AccessRequestAction = "approve" | "reject" | "cancel";

export type RequestTransition =
  { ok: true; status: AccessRequestStatus } | { ok: false; code: "INVALID_TRANSITION"; detail: string };

const TARGET: Record<AccessRequestAction, AccessRequestStatus> = {
  approve: "approved",
  reject: "rejected",
  cancel: "cancelled",
};

const VERB: Record<AccessRequestAction, string> = {
  approve: "approved",
  reject: "rejected",
  cancel: "cancelled",
};

/**
 * Where `action` takes a request in `current` status. Only a pending request moves; every other status
 * is final (a rejected student asks again with a new request, so history stays as it happened).
 */
export function nextRequestStatus(current: AccessRequestStatus, action: AccessRequestAction): RequestTransition {
  // Own-property lookup: runtime strings ("toString", junk from a caller) must not hit Object.prototype.
  if (!Object.prototype.hasOwnProperty.call(TARGET, action)) {
    return { ok: false, code: "INVALID_TRANSITION", detail: `Unknown access request action '${action}'` };
  }
  if (current !== "pending") {
    return {
      ok: false,
      code: "INVALID_TRANSITION",
      detail: `Access request is already ${current}; only a pending request can be ${VERB[action]}`,
    };
  }
  return { ok: true, status: TARGET[action] };
}

/* ───────────────────────────── Who may do what ───────────────────────────── */

/** What the rules need to know about a stored request. */
export interface AccessRequestFacts {
  student_id: number;
  /** Owner of the course the request is for; null: no such course (or not shown to this caller). */
  course_owner_id: number | null;
}

/** view: read it; decide: approve or reject; cancel: withdraw it. */
export type RequestNeed = "view" | "decide" | "cancel";

/**
 * Visibility: the requester, the owner of the course, admins. Anyone else gets "not_found" (no existence leak).
 * Deciding is the course owner's or an admin's; cancelling is the requester's alone (an admin who wants a
 * request gone rejects it, which records who closed it and why).
 * The system principal (REPL, timers) passes, as everywhere.
 */
export function decideAccessRequest(p: Principal, r: AccessRequestFacts, need: RequestNeed): Decision {
  if (p.kind === "system") return "allow";
  const requester = p.role === "student" && r.student_id === p.id;
  const owner = p.role === "teacher" && r.course_owner_id === p.id;
  const admin = p.role === "admin";
  if (!requester && !owner && !admin) return "not_found";
  switch (need) {
    case "view":
      return "allow";
    case "decide":
      return owner || admin ? "allow" : "forbidden";
    case "cancel":
      return requester ? "allow" : "forbidden";
  }
}

/* ───────────────────────────── Fields ───────────────────────────── */

export const REQUEST_MESSAGE_MAX = 2000;
/**
 * Pending requests one student may have at once. A request may name any course id (existing or not, so that
 * it tells nothing about courses the student cannot see), so without a cap one student could fill the table.
 * No student waits on this many courses at once.
 */
export const MAX_PENDING_REQUESTS_PER_STUDENT = 20;
export const DECISION_REASON_MAX = 2000;

type TextResult = { ok: true; value: string | null } | { ok: false; problems: ValidationProblem[] };

/**
 * An optional free-text field: absent, null or blank → null (nothing to say is not an error);
 * otherwise a trimmed string of at most `max` characters.
 */
export function parseOptionalText(raw: unknown, field: string, max: number): TextResult {
  const loc = ["body", field];
  if (raw === undefined || raw === null) return { ok: true, value: null };
  if (typeof raw !== "string")
    return { ok: false, problems: [{ loc, msg: "Input should be a valid string", type: "string_type" }] };
  const text = raw.trim();
  const control = controlCharProblem(text, true);
  if (control) return { ok: false, problems: [{ loc, msg: control, type: "string_pattern_mismatch" }] };
  if (text.length > max) {
    return {
      ok: false,
      problems: [{ loc, msg: `String should have at most ${max} characters`, type: "string_too_long" }],
    };
  }
  return { ok: true, value: text === "" ? null : text };
}

/* ───────────────────────────── Listing ───────────────────────────── */

export const ACCESS_REQUEST_LIST_SPEC: ListSpec<
  "created_at" | "decided_at" | "status" | "course_name" | "student_name" | "id",
  { status: "enum:pending|approved|rejected|cancelled"; course_id: "int"; student_id: "int" }
> = {
  sortable: ["created_at", "decided_at", "status", "course_name", "student_name", "id"],
  defaultSort: "-created_at",
  filters: { status: "enum:pending|approved|rejected|cancelled", course_id: "int", student_id: "int" },
};
