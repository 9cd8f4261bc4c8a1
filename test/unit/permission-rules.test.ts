import { decidePermission, decideStart, type PermissionFacts, type PermissionQuery } from "../../lib/permission.rules";
import type { Principal } from "../../lib/principal";

const admin: Principal = { kind: "user", id: 1, role: "admin" };
const owner: Principal = { kind: "user", id: 2, role: "teacher" };
const otherTeacher: Principal = { kind: "user", id: 3, role: "teacher" };
const student: Principal = { kind: "user", id: 4, role: "student" };
const system: Principal = { kind: "system", reason: "test" };

const course = (assigned: boolean, lab: string | null = "approved"): PermissionFacts => ({
  course: { owner_id: 2, caller_assigned: assigned },
  lab: lab === null ? null : { status: lab },
});
const noCourse: PermissionFacts = { course: null, lab: null };
const q = (rule: PermissionQuery["rule"]): PermissionQuery => ({
  rule,
  course_id: 10,
  ...(rule === "start_lab" ? { lab_id: 20 } : {}),
});

describe("decidePermission", () => {
  it.each([
    // who, rule, facts, decision, reason, entity
    [admin, "owner_of_course", course(false), "allow", "admin", undefined],
    [owner, "owner_of_course", course(false), "allow", "owner", undefined],
    [otherTeacher, "owner_of_course", course(false), "not_found", "course_not_visible", "Course"],
    [student, "owner_of_course", course(true), "forbidden", "not_owner", undefined],
    [student, "owner_of_course", course(false), "not_found", "course_not_visible", "Course"],
    [admin, "assigned_to_course", course(false), "allow", "admin", undefined],
    [student, "assigned_to_course", course(true), "allow", "assigned", undefined],
    [student, "assigned_to_course", course(false), "not_found", "course_not_visible", "Course"],
    [owner, "assigned_to_course", course(false), "forbidden", "not_assigned", undefined],
    [otherTeacher, "assigned_to_course", course(false), "not_found", "course_not_visible", "Course"],
    [student, "start_lab", course(true), "allow", "lab_startable", undefined],
    [student, "start_lab", course(false), "not_found", "course_not_visible", "Course"],
    [student, "start_lab", course(true, null), "not_found", "lab_not_attached", "Lab"],
    [admin, "start_lab", course(false), "forbidden", "not_a_student", undefined],
    [owner, "start_lab", course(false), "forbidden", "not_a_student", undefined],
    [system, "start_lab", course(false), "allow", "system", undefined],
    [system, "owner_of_course", course(false), "allow", "system", undefined],
  ] as const)("%o %s → %s (%s)", (who, rule, facts, decision, reason, entity) => {
    expect(decidePermission(who, q(rule), facts)).toEqual({ decision, reason, ...(entity ? { entity } : {}) });
  });

  it.each(["draft", "pending_approval", "rejected"])(
    "answers a lab of the student's course that is %s with a conflict",
    (status) => {
      expect(decidePermission(student, q("start_lab"), course(true, status))).toEqual({
        decision: "conflict",
        reason: "lab_not_approved",
        detail: `Lab 20 is not approved (status: ${status}); it can be started once an administrator approves it`,
      });
    },
  );

  it("answers 'no such course' alike for every caller who may ask about it", () => {
    for (const who of [admin, owner, student, system]) {
      expect(decidePermission(who, q("assigned_to_course"), noCourse)).toEqual({
        decision: "not_found",
        reason: "no_such_course",
        entity: "Course",
      });
    }
  });
});

describe("decideStart", () => {
  const statuses = [null, "draft", "pending_approval", "approved", "rejected"] as const;

  it("hides a course the student is not in, then a lab not attached; a lab not approved is a conflict", () => {
    expect(decideStart(20, { assigned: false, attachedLabStatus: "approved" })).toMatchObject({
      decision: "not_found",
      entity: "Course",
    });
    expect(decideStart(20, { assigned: true, attachedLabStatus: null })).toMatchObject({
      decision: "not_found",
      entity: "Lab",
    });
    expect(decideStart(20, { assigned: true, attachedLabStatus: "draft" })).toMatchObject({ decision: "conflict" });
    expect(decideStart(20, { assigned: true, attachedLabStatus: "approved" })).toEqual({
      decision: "allow",
      reason: "lab_startable",
    });
  });

  it("is what the cached check answers a student for every combination of facts (one rule, two callers)", () => {
    for (const assigned of [true, false]) {
      for (const status of statuses) {
        expect([assigned, status, decidePermission(student, q("start_lab"), course(assigned, status))]).toEqual([
          assigned,
          status,
          decideStart(20, { assigned, attachedLabStatus: status }),
        ]);
      }
    }
  });
});
