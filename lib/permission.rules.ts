/**
 * Permission decisions the access service answers for the caller (access.check), for rules whose facts are
 * not part of an object the calling service loads anyway: DESIGN's attributes `assigned_to_course` and
 * `owner_of_course`, and "a student starts a lab only if assigned to the course AND the lab is attached to
 * that course AND the lab is approved".
 *
 * Pure: the facts come from one query (access.service.ts); the answer is cached per (caller, rule, resource).
 */
import { decideCourse, type Decision } from "./access.rules";
import type { Principal } from "./principal";

/** The access service's action that answers a PermissionQuery (asked by the access gate). */
export const ACCESS_CHECK_ACTION = "access.check";

export const PERMISSION_RULES = ["assigned_to_course", "owner_of_course", "start_lab"] as const;
export type PermissionRule = (typeof PERMISSION_RULES)[number];

export interface PermissionQuery {
  rule: PermissionRule;
  course_id: number;
  /** start_lab only. */
  lab_id?: number;
}

export type PermissionReason =
  | "system"
  | "admin"
  | "owner"
  | "assigned"
  | "lab_startable"
  | "no_such_course"
  | "course_not_visible"
  | "not_owner"
  | "not_assigned"
  | "not_a_student"
  | "lab_not_attached"
  | "lab_not_approved";

/**
 * "conflict": the caller may act on these objects, but not in their present state (a lab of the student's
 * course that is not approved yet): the HTTP answer is 409 with `detail`, as lab-instances gave before.
 */
export type PermissionDecision = Decision | "conflict";

export interface PermissionAnswer {
  decision: PermissionDecision;
  reason: PermissionReason;
  /** What a refusal as 404 names: the caller may not learn that this object exists. */
  entity?: "Course" | "Lab";
  /** For a conflict: what to tell the caller. */
  detail?: string;
}

/** What one query reads about the course (and the lab in it) for the caller. */
export interface PermissionFacts {
  /** null: no such course. */
  course: { owner_id: number; caller_assigned: boolean } | null;
  /** The lab as attached to the course; null when it is not attached (or does not exist). */
  lab: { status: string } | null;
}

const allow = (reason: PermissionReason): PermissionAnswer => ({ decision: "allow", reason });
const hidden = (reason: PermissionReason, entity: "Course" | "Lab"): PermissionAnswer => ({
  decision: "not_found",
  reason,
  entity,
});
const refused = (reason: PermissionReason): PermissionAnswer => ({ decision: "forbidden", reason });

/**
 * Admin and the system satisfy every attribute rule (DESIGN: admin does everything). Starting a lab is a
 * student's act (lab-instances allows only students to call it), so anyone else is refused by role, before
 * any object is looked at, as the access mixin does. A course the caller may not see is "not_found" whatever
 * the rule, and so is a lab not attached to it. A lab attached but not approved is a "conflict" (409), the
 * answer the platform gave before this rule existed and the authorization matrix pins; decideLab alone would
 * hide it (404), since students see approved labs only.
 */
export function decidePermission(p: Principal, q: PermissionQuery, f: PermissionFacts): PermissionAnswer {
  if (q.rule === "start_lab" && p.kind === "user" && p.role !== "student") return refused("not_a_student");
  if (!f.course) return hidden("no_such_course", "Course");
  if (p.kind === "system") return allow("system");
  if (p.role === "admin") return allow("admin");
  const facts = { owner_id: f.course.owner_id, callerAssigned: f.course.caller_assigned };
  if (decideCourse(p, facts, "view") === "not_found") return hidden("course_not_visible", "Course");
  switch (q.rule) {
    case "owner_of_course":
      return decideCourse(p, facts, "manage") === "allow" ? allow("owner") : refused("not_owner");
    case "assigned_to_course":
      return p.role === "student" && f.course.caller_assigned ? allow("assigned") : refused("not_assigned");
    case "start_lab":
      // No lab named: nothing attached to look at (the facts hold no lab either).
      if (q.lab_id === undefined) return hidden("lab_not_attached", "Lab");
      return decideStart(q.lab_id, { assigned: f.course.caller_assigned, attachedLabStatus: f.lab?.status ?? null });
  }
}

/** A student's start of a lab in a course, as the cached check reads them or the start locks them. */
export interface StartFacts {
  /** The student is assigned to the course (false also when there is no such course). */
  assigned: boolean;
  /** Status of the lab when it is attached to the course; null when it is not (or does not exist). */
  attachedLabStatus: string | null;
}

/**
 * Start admission, the one rule for both the cached access.check (before the action) and lab-instances'
 * locked transaction (the facts again, under lock): a course the student is not in is hidden, so is a lab
 * not attached to it; an attached lab that is not approved is a conflict (409).
 */
export function decideStart(labId: number, f: StartFacts): PermissionAnswer {
  if (!f.assigned) return hidden("course_not_visible", "Course");
  if (f.attachedLabStatus === null) return hidden("lab_not_attached", "Lab");
  if (f.attachedLabStatus !== "approved") {
    return {
      decision: "conflict",
      reason: "lab_not_approved",
      detail:
        `Lab ${labId} is not approved (status: ${f.attachedLabStatus}); ` +
        "it can be started once an administrator approves it",
    };
  }
  return allow("lab_startable");
}
