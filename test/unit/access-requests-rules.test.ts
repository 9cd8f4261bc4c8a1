import {
  ACCESS_REQUEST_LIST_SPEC,
  ACCESS_REQUEST_STATUSES,
  REQUEST_MESSAGE_MAX,
  decideAccessRequest,
  nextRequestStatus,
  parseOptionalText,
  type AccessRequestAction,
  type AccessRequestFacts,
  type RequestNeed,
} from "../../services/access/access-requests.rules";
import { parseListQuery } from "../../lib/listing";
import { systemPrincipal, type Principal } from "../../lib/principal";

describe("nextRequestStatus (state machine)", () => {
  const ACTIONS: AccessRequestAction[] = ["approve", "reject", "cancel"];

  it.each([
    ["approve", "approved"],
    ["reject", "rejected"],
    ["cancel", "cancelled"],
  ] as const)("pending --%s--> %s", (action, to) => {
    expect(nextRequestStatus("pending", action)).toEqual({ ok: true, status: to });
  });

  it("every other status is final: any action is an invalid transition naming the current status", () => {
    for (const from of ACCESS_REQUEST_STATUSES.filter((s) => s !== "pending")) {
      for (const action of ACTIONS) {
        const r = nextRequestStatus(from, action);
        expect(r.ok).toBe(false);
        if (!r.ok) {
          expect(r.code).toBe("INVALID_TRANSITION");
          expect(r.detail).toContain(`already ${from}`);
        }
      }
    }
  });

  it("unknown actions (runtime junk, prototype names) are refused, not crashes", () => {
    for (const junk of ["toString", "__proto__", "constructor", "", "APPROVE"]) {
      const r = nextRequestStatus("pending", junk as AccessRequestAction);
      expect(r).toMatchObject({ ok: false, code: "INVALID_TRANSITION" });
    }
  });
});

describe("decideAccessRequest (who may see, decide, cancel)", () => {
  const STUDENT = 10;
  const OWNER = 20;
  const facts: AccessRequestFacts = { student_id: STUDENT, course_owner_id: OWNER };
  const who: Record<string, Principal> = {
    requester: { kind: "user", id: STUDENT, role: "student" },
    otherStudent: { kind: "user", id: 11, role: "student" },
    owner: { kind: "user", id: OWNER, role: "teacher" },
    otherTeacher: { kind: "user", id: 21, role: "teacher" },
    admin: { kind: "user", id: 1, role: "admin" },
    system: systemPrincipal("test"),
    // Ids are per user, not per role: a teacher whose id equals the student's is still not the requester.
    teacherWithStudentsId: { kind: "user", id: STUDENT, role: "teacher" },
    studentWithOwnersId: { kind: "user", id: OWNER, role: "student" },
  };
  const table: Record<string, Record<RequestNeed, string>> = {
    requester: { view: "allow", decide: "forbidden", cancel: "allow" },
    otherStudent: { view: "not_found", decide: "not_found", cancel: "not_found" },
    owner: { view: "allow", decide: "allow", cancel: "forbidden" },
    otherTeacher: { view: "not_found", decide: "not_found", cancel: "not_found" },
    admin: { view: "allow", decide: "allow", cancel: "forbidden" },
    system: { view: "allow", decide: "allow", cancel: "allow" },
    teacherWithStudentsId: { view: "not_found", decide: "not_found", cancel: "not_found" },
    studentWithOwnersId: { view: "not_found", decide: "not_found", cancel: "not_found" },
  };
  for (const [name, row] of Object.entries(table)) {
    for (const need of Object.keys(row) as RequestNeed[]) {
      it(`${name} / ${need} → ${row[need]}`, () => {
        expect(decideAccessRequest(who[name], facts, need)).toBe(row[need]);
      });
    }
  }
});

describe("parseOptionalText (message, reason)", () => {
  it("absent, null and blank mean nothing said", () => {
    expect(parseOptionalText(undefined, "message", 10)).toEqual({ ok: true, value: null });
    expect(parseOptionalText(null, "message", 10)).toEqual({ ok: true, value: null });
    expect(parseOptionalText("   \n", "message", 10)).toEqual({ ok: true, value: null });
  });

  it("trims and keeps text", () => {
    expect(parseOptionalText("  please  ", "message", 10)).toEqual({ ok: true, value: "please" });
  });

  it("length is checked after trimming, at the limit inclusive", () => {
    expect(parseOptionalText(` ${"x".repeat(REQUEST_MESSAGE_MAX)} `, "message", REQUEST_MESSAGE_MAX).ok).toBe(true);
    expect(parseOptionalText("x".repeat(REQUEST_MESSAGE_MAX + 1), "message", REQUEST_MESSAGE_MAX)).toEqual({
      ok: false,
      problems: [
        {
          loc: ["body", "message"],
          msg: `String should have at most ${REQUEST_MESSAGE_MAX} characters`,
          type: "string_too_long",
        },
      ],
    });
  });

  it.each([[42], [true], [["a"]], [{ text: "a" }]])("non-strings are a 422 problem at the field: %p", (raw) => {
    expect(parseOptionalText(raw, "reason", 10)).toEqual({
      ok: false,
      problems: [{ loc: ["body", "reason"], msg: "Input should be a valid string", type: "string_type" }],
    });
  });
});

describe("ACCESS_REQUEST_LIST_SPEC", () => {
  it("parses defaults, filters and the sort allow-list", () => {
    const r = parseListQuery({}, ACCESS_REQUEST_LIST_SPEC);
    expect(r).toEqual({
      ok: true,
      value: { offset: 0, limit: 50, sort: { field: "created_at", direction: "DESC" }, filters: {} },
    });
    const f = parseListQuery({ status: "pending", course_id: "3", sort: "course_name" }, ACCESS_REQUEST_LIST_SPEC);
    expect(f).toMatchObject({
      ok: true,
      value: { filters: { status: "pending", course_id: 3 }, sort: { field: "course_name" } },
    });
  });

  it("refuses statuses outside the machine and sorts outside the allow-list", () => {
    const r = parseListQuery({ status: "open", sort: "message; DROP TABLE users" }, ACCESS_REQUEST_LIST_SPEC);
    expect(r.ok).toBe(false);
    if (!r.ok)
      expect(r.problems.map((p) => p.loc)).toEqual([
        ["query", "sort"],
        ["query", "status"],
      ]);
  });

  it("the status filter enum is exactly the state machine's statuses", () => {
    const kind = ACCESS_REQUEST_LIST_SPEC.filters.status;
    expect(kind.slice("enum:".length).split("|").sort()).toEqual([...ACCESS_REQUEST_STATUSES].sort());
  });
});
