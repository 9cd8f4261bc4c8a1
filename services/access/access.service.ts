/**
 * Access: students' requests to join a course (access_requests) and their decision by the course owner
 * or an admin (state machine and rules: access-requests.rules.ts); and permission decisions for the caller
 * (access.check, rules: permission.rules.ts).
 *
 * Access requests are never cached: who may enter a course is critical data, and a stale "pending" would let
 * a teacher decide twice in the UI. Approval writes course_students, so it invalidates what reads that
 * table (courses' answers, permission decisions) itself, before it answers.
 *
 * Permission decisions are cached 10 minutes per (caller, rule, resource). Every write to a fact they read
 * (course_students, courses.owner_id, course_labs, labs.status, a course or lab removed) invalidates them
 * before the write answers (CACHES_READING in platform/db.mixin.ts), on every node, and a decision computed
 * from pre-write facts is never stored after that (platform/coherent-cache.ts). Events cannot do
 * this: a broadcast is not awaited, so the writer's answer could overtake the clean.
 *
 * Reads of other services' tables (named here, checked by test/unit/table-ownership.test.ts; writes go
 * through the owner):
 * - courses, course_students (courses): a request's course, its owner and whether the student is assigned,
 *   joined into each request (one statement per page), the owner held FOR SHARE while deciding; the course
 *   and assignment facts of access.check.
 * - course_labs (courses), labs (labs): access.check's start_lab facts (attached, approved) in the same statement.
 * - users (auth): the student's and the decider's names on each request; the student's row locked
 *   (FOR UPDATE) to serialise their pending-request cap.
 */
import { assignStudents } from "../courses/courses.contract";
import type { Service, ServiceSchema } from "moleculer";
import { entityOf, principalOf, type Ctx } from "../../platform/access-gate";
import { DbMixin, listParams, parseListOrThrow, type DbMethods } from "../../platform/db.mixin";
import { ANY_USER, STAFF, STUDENT_ONLY, type Decision } from "../../lib/access.rules";
import { conflict, forbidden, notFound, validationError } from "../../platform/errors";
import type { Principal, UserPrincipal } from "../../lib/principal";
import { AccessRequest, type AccessRequestView } from "./access-requests.rows";
import { pageOf } from "../../lib/schema";
import {
  PERMISSION_RULES,
  decidePermission,
  type PermissionAnswer,
  type PermissionQuery,
} from "../../lib/permission.rules";
import {
  ACCESS_REQUEST_LIST_SPEC,
  DECISION_REASON_MAX,
  MAX_PENDING_REQUESTS_PER_STUDENT,
  REQUEST_MESSAGE_MAX,
  accessRequestScopeSql,
  decideAccessRequest,
  nextRequestStatus,
  parseOptionalText,
  type AccessRequestAction,
  type AccessRequestStatus,
  type RequestNeed,
} from "./access-requests.rules";
import { BODY_ID_PARAM, ID_PARAM, type IdParams } from "../../lib/params";

interface CreateParams {
  course_id: number;
  message?: unknown;
}
interface RejectParams extends IdParams {
  reason?: unknown;
}

type AccessMethods = {
  transition(ctx: Ctx<IdParams>, action: AccessRequestAction, reason: string | null): Promise<AccessRequestView>;
  viewById(id: number, viewer: Principal): Promise<AccessRequestView | null>;
  pendingIdOf(studentId: number, courseId: number): Promise<number | null>;
};
type AccessThis = Service & DbMethods & AccessMethods;

const PENDING_INDEX = "access_requests_one_pending_idx";
/** The seed's "permissions: 10 min". */
const PERMISSIONS_TTL_S = 600;

/**
 * A request with what a UI shows beside it (course name and owner, the student's name and email, who decided),
 * joined once. A derived table, so list filters and sorts name plain columns (`id`, `created_at`) without
 * ambiguity; PostgreSQL flattens it, so the indexes on access_requests still serve the filters.
 *
 * The course counts only if it existed when the request was made (see migrations/0003). A student, who sees
 * only their own requests, sees the course and who decided only while they may see the course itself
 * (assigned, as GET /courses/{id}) or while it is listed in the catalog (GET /courses/catalog shows it to
 * everyone anyway): otherwise a request for a course they cannot see and one for an id that names no course
 * look the same. Redacted in SQL, so a sort by course_name orders by what they see.
 */
function requestView(viewer: "student" | "staff"): string {
  const forStudent = viewer === "student";
  const shown = (expr: string) =>
    forStudent ? `CASE WHEN cs.student_id IS NOT NULL OR c.listed THEN ${expr} END` : expr;
  // Who decided is shown as well when it was the student (a cancel).
  const decider = (expr: string) =>
    forStudent ? `CASE WHEN cs.student_id IS NOT NULL OR ar.decided_by = ar.student_id THEN ${expr} END` : expr;
  return `(
  SELECT ar.id, ar.student_id, ar.course_id, ar.message, ar.status, ${decider("ar.decided_by")} AS decided_by,
         ar.decision_reason, ar.created_at, ar.decided_at,
         ${shown("c.name")} AS course_name, ${shown("c.owner_id")} AS course_owner_id,
         u.name AS student_name, u.email AS student_email,
         ${decider("d.name")} AS decided_by_name
    FROM access_requests ar
    LEFT JOIN courses c ON c.id = ar.course_id AND c.created_at <= ar.created_at
    ${forStudent ? "LEFT JOIN course_students cs ON cs.course_id = c.id AND cs.student_id = ar.student_id" : ""}
    JOIN users u ON u.id = ar.student_id
    LEFT JOIN users d ON d.id = ar.decided_by
) r`;
}
const viewerOf = (p: Principal): "student" | "staff" =>
  p.kind === "user" && p.role === "student" ? "student" : "staff";
const VIEW_COLUMNS =
  "id, student_id, course_id, message, status, decided_by, decision_reason, created_at, decided_at, course_name, course_owner_id, student_name, student_email, decided_by_name";

/** The PostgreSQL error under Sequelize's wrapper: branch on SQLSTATE and constraint, not on classes. */
function pgErrorOf(err: unknown): { code?: string; constraint?: string } {
  const e = err as
    | { parent?: { code?: string; constraint?: string }; original?: { code?: string; constraint?: string } }
    | null
    | undefined;
  return e?.parent ?? e?.original ?? {};
}

async function loadRequest(this: Service, ctx: Ctx): Promise<AccessRequestView | null> {
  // The caller's view: the rules need only student_id from a student's (who is never a course's owner).
  return (this as AccessThis).viewById(Number(ctx.params.id), principalOf(ctx));
}

const rule =
  (need: RequestNeed) =>
  (p: UserPrincipal, r: AccessRequestView): Decision =>
    decideAccessRequest(p, { student_id: r.student_id, course_owner_id: r.course_owner_id }, need);

const REQUEST_ACCESS = { entity: "Access request", load: loadRequest } as const;

const AccessService: ServiceSchema<{ rest: string }, AccessMethods & DbMethods> = {
  name: "access",
  mixins: [DbMixin()],
  // Root, with full paths on each action: this service also owns permission decisions, which may get
  // routes of their own beside /access-requests.
  settings: { rest: "/" },

  actions: {
    /**
     * May the CALLER do this? `{rule, course_id, lab_id?}` → `{decision: allow|not_found|forbidden, reason,
     * entity?}`. Always about ctx.meta.user (there is no parameter naming another user), so one user can never
     * learn another's rights. Called by other services (the access mixin's `check`), never routed over HTTP.
     */
    check: {
      visibility: "public",
      access: { roles: ANY_USER },
      params: {
        rule: { type: "enum", values: [...PERMISSION_RULES] },
        course_id: ID_PARAM,
        lab_id: { ...ID_PARAM, optional: true },
      },
      // The caller is in the key: an answer for one user is never served to another.
      cache: { keys: ["#user.kind", "#user.id", "#user.role", "rule", "course_id", "lab_id"], ttl: PERMISSIONS_TTL_S },
      async handler(ctx: Ctx<PermissionQuery>): Promise<PermissionAnswer> {
        const p = principalOf(ctx);
        const { rule, course_id: courseId, lab_id: labId } = ctx.params;
        if (rule === "start_lab" && labId === undefined) {
          throw validationError([{ loc: ["body", "lab_id"], msg: "Field required", type: "missing" }]);
        }
        // Every fact of every rule, in one query: the course, the caller's assignment, the lab as attached to it.
        const row = await this.selectOne<{ owner_id: number; caller_assigned: boolean; lab_status: string | null }>(
          `SELECT c.owner_id,
                  EXISTS (SELECT 1 FROM course_students cs WHERE cs.course_id = c.id AND cs.student_id = $caller) AS caller_assigned,
                  (SELECT l.status FROM course_labs cl JOIN labs l ON l.id = cl.lab_id
                    WHERE cl.course_id = c.id AND cl.lab_id = $lab) AS lab_status
             FROM courses c WHERE c.id = $course`,
          { course: courseId, caller: p.kind === "user" ? p.id : 0, lab: labId ?? 0 },
        );
        return decidePermission(p, ctx.params, {
          course: row && { owner_id: row.owner_id, caller_assigned: row.caller_assigned },
          lab: row && row.lab_status !== null ? { status: row.lab_status } : null,
        });
      },
    },

    list: {
      rest: "GET /access-requests",
      openapi: {
        summary: "List access requests",
        description: "Student: their own; teacher: those for their courses; admin: all.",
        responses: { 200: { description: "One page of access requests", body: pageOf(AccessRequest) } },
      },
      access: { roles: ANY_USER },
      params: listParams(ACCESS_REQUEST_LIST_SPEC),
      async handler(ctx: Ctx) {
        const q = parseListOrThrow(ctx.params, ACCESS_REQUEST_LIST_SPEC);
        const p = principalOf(ctx);
        const scope = accessRequestScopeSql(p);
        const where: string[] = scope.where ? [scope.where] : [];
        const bind: Record<string, unknown> = { ...scope.bind };
        if (q.filters.status !== undefined) {
          where.push("status = $status");
          bind.status = q.filters.status;
        }
        if (q.filters.course_id !== undefined) {
          where.push("course_id = $course");
          bind.course = q.filters.course_id;
        }
        if (q.filters.student_id !== undefined) {
          where.push("student_id = $student");
          bind.student = q.filters.student_id;
        }
        return this.selectPage<AccessRequestView>(
          VIEW_COLUMNS,
          `FROM ${requestView(viewerOf(p))} ${where.length ? "WHERE " + where.join(" AND ") : ""}`,
          bind,
          q,
        );
      },
    },

    create: {
      rest: "POST /access-requests",
      openapi: {
        summary: "Ask to join a course",
        description:
          "Any course id is taken and answered alike, whether the course exists or not (nothing is revealed about it).",
        responses: {
          201: { description: "The pending request", body: AccessRequest, headers: { Location: "The request's URL" } },
        },
        errors: {
          409: "Already assigned, a request for this course is pending, or too many requests are pending",
        },
      },
      // Only a student asks to join; a teacher or admin assigns directly (POST /courses/{id}/students).
      access: { roles: STUDENT_ONLY },
      params: {
        course_id: BODY_ID_PARAM,
        message: {
          type: "any",
          optional: true,
          openapi: { type: ["string", "null"], maxLength: REQUEST_MESSAGE_MAX, description: "Blank means none" },
        },
      },
      async handler(ctx: Ctx<CreateParams>) {
        const p = principalOf(ctx);
        // The system principal passes the role check but is nobody who could join a course.
        if (p.kind !== "user") throw forbidden("Only a student can request access to a course");
        const message = parseOptionalText(ctx.params.message, "message", REQUEST_MESSAGE_MAX);
        if (!message.ok) throw validationError(message.problems);
        const courseId = ctx.params.course_id;

        // Any course id may be asked for, existing or not, and the answer is the same (201, the request's own
        // fields): a student learns nothing about a course they cannot see, not even that it exists. Students
        // learn ids from their teacher; a request for an id that names no course just stays pending.
        let id: number;
        try {
          id = await this.sequelize().transaction(async (transaction) => {
            // One request of this student at a time: the checks below then see every request committed
            // before, so the cap holds race-free (and the partial unique index stays the duplicate backstop).
            await this.select("SELECT id FROM users WHERE id = $me FOR UPDATE", { me: p.id }, transaction);
            const facts = await this.selectOne<{ assigned: boolean; pending_id: number | null; pending: number }>(
              `SELECT EXISTS (SELECT 1 FROM course_students cs
                               WHERE cs.course_id = $course AND cs.student_id = $me) AS assigned,
                      (SELECT ar.id FROM access_requests ar
                        WHERE ar.course_id = $course AND ar.student_id = $me AND ar.status = 'pending') AS pending_id,
                      (SELECT count(*)::int FROM access_requests ar
                        WHERE ar.student_id = $me AND ar.status = 'pending') AS pending`,
              { course: courseId, me: p.id },
              transaction,
            );
            // Assigned: the student sees this course already, so saying so reveals nothing.
            if (facts?.assigned) throw conflict("You are already assigned to this course", { course_id: courseId });
            if (facts?.pending_id != null) {
              throw conflict(`You already have a pending request for this course (request ${facts.pending_id})`, {
                request_id: facts.pending_id,
              });
            }
            // Requests for ids that name no course are recorded too, so the pending ones are capped.
            if ((facts?.pending ?? 0) >= MAX_PENDING_REQUESTS_PER_STUDENT) {
              throw conflict(
                `You have ${MAX_PENDING_REQUESTS_PER_STUDENT} pending access requests; cancel one before asking again`,
              );
            }
            const [row] = await this.select<{ id: number }>(
              `INSERT INTO access_requests (student_id, course_id, message, status)
               VALUES ($me, $course, $message, 'pending') RETURNING id`,
              { me: p.id, course: courseId, message: message.value },
              transaction,
            );
            return row.id;
          });
        } catch (err) {
          // Backstop: a duplicate that got past the checks loses on the partial unique index.
          const pg = pgErrorOf(err);
          if (pg.code === "23505" && pg.constraint === PENDING_INDEX) {
            const pendingId = await this.pendingIdOf(p.id, courseId);
            throw conflict(`You already have a pending request for this course (request ${pendingId ?? "?"})`, {
              request_id: pendingId,
            });
          }
          throw err;
        }

        const created = await this.viewById(id, p);
        // The student was removed in between: nothing left to show.
        if (!created) throw notFound("Access request");
        ctx.meta.$statusCode = 201;
        ctx.meta.$location = `/api/v1/access-requests/${id}`;
        return created;
      },
    },

    get: {
      rest: "GET /access-requests/:id",
      openapi: {
        summary: "Get an access request",
        responses: { 200: { description: "The request", body: AccessRequest } },
      },
      access: { roles: ANY_USER, ...REQUEST_ACCESS, decide: rule("view") },
      params: { id: ID_PARAM },
      handler(ctx: Ctx<IdParams>) {
        return entityOf<AccessRequestView>(ctx);
      },
    },

    approve: {
      rest: "POST /access-requests/:id/approve",
      openapi: {
        summary: "Approve an access request (assigns the student)",
        responses: { 200: { description: "The request, approved", body: AccessRequest } },
        errors: { 409: "The request is no longer pending, or its course does not exist" },
      },
      access: { roles: STAFF, ...REQUEST_ACCESS, decide: rule("decide") },
      params: { id: ID_PARAM },
      handler(ctx: Ctx<IdParams>) {
        return this.transition(ctx, "approve", null);
      },
    },

    reject: {
      rest: "POST /access-requests/:id/reject",
      openapi: {
        summary: "Reject an access request",
        responses: { 200: { description: "The request, rejected", body: AccessRequest } },
        errors: { 409: "The request is no longer pending" },
      },
      access: { roles: STAFF, ...REQUEST_ACCESS, decide: rule("decide") },
      params: {
        id: ID_PARAM,
        reason: {
          type: "any",
          optional: true,
          openapi: { type: ["string", "null"], maxLength: DECISION_REASON_MAX, description: "Blank means none" },
        },
      },
      handler(ctx: Ctx<RejectParams>) {
        // Optional: unlike a lab (whose author must fix something), a student has nothing to repair, and a
        // required text would only collect "no". When given it is stored and shown to the student.
        const reason = parseOptionalText(ctx.params.reason, "reason", DECISION_REASON_MAX);
        if (!reason.ok) throw validationError(reason.problems);
        return this.transition(ctx, "reject", reason.value);
      },
    },

    cancel: {
      rest: "POST /access-requests/:id/cancel",
      openapi: {
        summary: "Cancel one's own access request",
        responses: { 200: { description: "The request, cancelled", body: AccessRequest } },
        errors: { 409: "The request is no longer pending" },
      },
      // Role check first: teachers and admins never cancel (they reject), so they hear 403 without a lookup.
      access: { roles: STUDENT_ONLY, ...REQUEST_ACCESS, decide: rule("cancel") },
      params: { id: ID_PARAM },
      handler(ctx: Ctx<IdParams>) {
        return this.transition(ctx, "cancel", null);
      },
    },
  },

  methods: {
    /**
     * Moves a pending request on. The UPDATE is conditional on status = 'pending', so of two concurrent
     * decisions exactly one changes the row; the other finds nothing to update and answers 409.
     * Approval assigns the student in the same transaction: an approved request always means an assigned
     * student, even if the process dies right after.
     */
    async transition(
      ctx: Ctx<IdParams>,
      action: AccessRequestAction,
      reason: string | null,
    ): Promise<AccessRequestView> {
      const request = entityOf<AccessRequestView>(ctx);
      const p = principalOf(ctx);
      // Fast path with a readable detail; the conditional UPDATE below is what actually decides.
      const next = nextRequestStatus(request.status, action);
      if (!next.ok) throw conflict(next.detail);
      const actor = p.kind === "user" ? p.id : null;
      // No course behind it (an unknown id, or a course made after the request): nobody to admit the student to.
      if (action === "approve" && request.course_owner_id === null) {
        throw conflict("The course of this access request does not exist; reject it instead");
      }

      const outcome = await this.sequelize().transaction(async (transaction) => {
        // The course first, as every writer of a course's rows locks it (deletion, assignment, starts): taken
        // after the request row, approval's insert waited for a course deletion that waited for this request
        // row (its cascade), a deadlock answered 500. FOR SHARE also holds the owner the access check decided
        // from: a teacher whose course changed hands meanwhile decides nothing (409).
        const course = await this.selectOne<{ owner_id: number }>(
          "SELECT owner_id FROM courses WHERE id = $course FOR SHARE",
          { course: request.course_id },
          transaction,
        );
        // A request with no course behind it (course_owner_id null) can still be rejected or cancelled: there is
        // no owner to hold. One that had a course decides only while that course keeps the owner checked.
        if (action !== "cancel" && request.course_owner_id !== null) {
          if (!course) throw conflict("The course of this access request no longer exists");
          if (course.owner_id !== request.course_owner_id) {
            throw conflict("The course changed owner meanwhile; reload the request and try again");
          }
        }
        const updated = await this.select<{ id: number; course_id: number; student_id: number }>(
          `UPDATE access_requests
              SET status = $status, decided_by = $actor, decided_at = now(), decision_reason = $reason
            WHERE id = $id AND status = 'pending'
        RETURNING id, course_id, student_id`,
          { status: next.status, actor, reason, id: request.id },
          transaction,
        );
        if (updated.length === 0) {
          // Someone decided (or the row went) between our load and this UPDATE.
          const now = await this.selectOne<{ status: AccessRequestStatus }>(
            "SELECT status FROM access_requests WHERE id = $id",
            { id: request.id },
            transaction,
          );
          if (!now) throw notFound("Access request");
          const again = nextRequestStatus(now.status, action);
          throw conflict(again.ok ? "The access request changed meanwhile; reload it and try again" : again.detail);
        }
        let assigned = false;
        if (action === "approve") {
          // ON CONFLICT: an admin may have assigned the student directly meanwhile; approval still stands.
          const added = await assignStudents(
            this.sequelize(),
            updated[0].course_id,
            [updated[0].student_id],
            transaction,
          ).catch((err: unknown) => {
            // The course was deleted since the check above: the whole approval rolls back.
            if (pgErrorOf(err).code === "23503") throw conflict("The course of this access request no longer exists");
            throw err;
          });
          assigned = added.length > 0;
        }
        return { ...updated[0], assigned };
      });

      if (outcome.assigned) {
        // The write to course_students happened here, not in the courses service, so what reads that table
        // (a student's GET /courses, GET /courses/{id}, their permission decisions) is dropped here, on every node.
        await this.tablesChanged("course_students");
      }
      const view = await this.viewById(outcome.id, p);
      if (!view) throw notFound("Access request");
      return view;
    },

    async viewById(id: number, viewer: Principal): Promise<AccessRequestView | null> {
      const from = requestView(viewerOf(viewer));
      return this.selectOne<AccessRequestView>(`SELECT ${VIEW_COLUMNS} FROM ${from} WHERE id = $id`, { id });
    },

    async pendingIdOf(studentId: number, courseId: number): Promise<number | null> {
      const row = await this.selectOne<{ id: number }>(
        "SELECT id FROM access_requests WHERE student_id = $student AND course_id = $course AND status = 'pending'",
        { student: studentId, course: courseId },
      );
      return row?.id ?? null;
    },
  },
};

export default AccessService;
