/**
 * Attribute rules (ABAC) of DESIGN's access section, as pure decisions.
 * "not_found" when the caller may not even know the object exists (no existence leak),
 * "forbidden" when they may see it but not do this to it.
 */
import type { Principal, Role } from "./principal";

export type Decision = "allow" | "forbidden" | "not_found";

/** What a caller needs to do with an object. */
export type Need = "view" | "manage" | "review";

export interface CourseFacts {
  owner_id: number;
  /** The caller is a student assigned to the course. */
  callerAssigned: boolean;
}

export interface LabFacts {
  created_by: number;
  status: string;
  /** The lab is attached to a course the caller owns (teacher) or is assigned to (student). */
  callerReachesViaCourse: boolean;
}

/** Named role sets for `access.roles`. The system principal passes every one of them. */
export const ANY_USER: readonly Role[] = ["admin", "teacher", "student"];
export const STAFF: readonly Role[] = ["admin", "teacher"];
export const ADMIN_ONLY: readonly Role[] = ["admin"];
export const STUDENT_ONLY: readonly Role[] = ["student"];
/** Timers, relays and other services acting as the system; no user. */
export const SYSTEM_ONLY: readonly Role[] = [];

export function roleAllowed(principal: Principal, roles: readonly Role[]): boolean {
  return principal.kind === "system" || roles.includes(principal.role);
}

/**
 * owner_of_course manages; assigned_to_course views; admin and system do everything (an admin may also own a
 * course, as the seed's admin-created course is; their role already decides every need).
 */
export function decideCourse(p: Principal, course: CourseFacts, need: Need): Decision {
  if (p.kind === "system" || p.role === "admin") return "allow";
  const owner = p.role === "teacher" && course.owner_id === p.id;
  if (owner) return need === "review" ? "forbidden" : "allow";
  const assigned = p.role === "student" && course.callerAssigned;
  if (!assigned) return "not_found";
  return need === "view" ? "allow" : "forbidden";
}

/** A WHERE condition over a table alias, with its bound values; null condition: every row. */
export interface ScopeSql {
  where: string | null;
  bind: Record<string, number>;
}

/**
 * decideCourse(p, course, "view") as SQL over `courses c`: the courses a list shows the caller. A test
 * (test/integration/access-scope.test.ts) checks on generated rows that the two agree.
 */
export function courseScopeSql(p: Principal): ScopeSql {
  if (p.kind === "system" || p.role === "admin") return { where: null, bind: {} };
  if (p.role === "teacher") return { where: "c.owner_id = $scope_me", bind: { scope_me: p.id } };
  return {
    where: "EXISTS (SELECT 1 FROM course_students cs WHERE cs.course_id = c.id AND cs.student_id = $scope_me)",
    bind: { scope_me: p.id },
  };
}

/**
 * created_lab manages its lab (an admin reviews it). Teachers see approved labs (the catalogue they attach
 * to courses) and labs attached to their courses; students see approved labs of courses they are assigned to.
 */
export function decideLab(p: Principal, lab: LabFacts, need: Need): Decision {
  if (p.kind === "system" || p.role === "admin") return "allow";
  const creator = lab.created_by === p.id;
  let visible: boolean;
  if (p.role === "teacher") visible = creator || lab.status === "approved" || lab.callerReachesViaCourse;
  else visible = lab.status === "approved" && lab.callerReachesViaCourse;
  if (!visible) return "not_found";
  if (need === "view") return "allow";
  if (need === "manage") return creator && p.role === "teacher" ? "allow" : "forbidden";
  return "forbidden";
}

/**
 * decideLab(p, lab, "view") as SQL over `labs l`: callerReachesViaCourse is an attachment (course_labs) to a
 * course the teacher owns or the student is assigned to. Checked against the decision on generated rows.
 */
export function labScopeSql(p: Principal): ScopeSql {
  if (p.kind === "system" || p.role === "admin") return { where: null, bind: {} };
  const viaCourse = (courseRule: string) =>
    "EXISTS (SELECT 1 FROM course_labs cl JOIN courses c ON c.id = cl.course_id " +
    `WHERE cl.lab_id = l.id AND ${courseRule})`;
  if (p.role === "teacher") {
    return {
      where: `(l.created_by = $scope_me OR l.status = 'approved' OR ${viaCourse("c.owner_id = $scope_me")})`,
      bind: { scope_me: p.id },
    };
  }
  const assigned = "EXISTS (SELECT 1 FROM course_students cs WHERE cs.course_id = c.id AND cs.student_id = $scope_me)";
  return { where: `l.status = 'approved' AND ${viaCourse(assigned)}`, bind: { scope_me: p.id } };
}

export interface LabInstanceFacts {
  student_id: number;
  /** owner_id of the instance's course. */
  course_owner_id: number;
}

/**
 * decideLabInstance(p, inst, "view") as SQL over `lab_instances i` (the instance's course owner read from
 * `courses`). Checked against the decision on generated rows (test/integration/access-scope.test.ts).
 */
export function labInstanceScopeSql(p: Principal): ScopeSql {
  if (p.kind === "system" || p.role === "admin") return { where: null, bind: {} };
  if (p.role === "student") return { where: "i.student_id = $scope_me", bind: { scope_me: p.id } };
  return {
    where: "EXISTS (SELECT 1 FROM courses c WHERE c.id = i.course_id AND c.owner_id = $scope_me)",
    bind: { scope_me: p.id },
  };
}

/**
 * A student sees and stops only their own instances; a teacher those in courses they own; admin all.
 * Anyone else may not learn the instance exists.
 */
export function decideLabInstance(p: Principal, inst: LabInstanceFacts, need: Need): Decision {
  if (p.kind === "system" || p.role === "admin") return "allow";
  const own = p.role === "student" && inst.student_id === p.id;
  const teaches = p.role === "teacher" && inst.course_owner_id === p.id;
  if (!own && !teaches) return "not_found";
  return need === "review" ? "forbidden" : "allow";
}
