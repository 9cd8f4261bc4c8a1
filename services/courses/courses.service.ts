/**
 * Courses: a teacher's course, its students (course_students) and the labs attached to it (course_labs).
 *
 * Reads of other services' tables (named here, checked by test/unit/table-ownership.test.ts; writes go
 * through the owner):
 * - users (auth): an owner must be a teacher or an admin and assigned ids students, read FOR SHARE in the
 *   write's transaction so a role change cannot slip in between; the roster and the catalog show names.
 * - labs (labs): attached labs listed with their fields (one statement per page); the lab held FOR SHARE while
 *   it is attached (it must be approved and visible to the caller).
 * - access_requests (access): the catalog shows the caller's own pending request beside each course
 *   (`membership`), in the page's one statement.
 */
import { countActiveInstances, deleteInstances } from "../lab-instances/lab-instances.contract";
import { COURSE_EVENTS, assignStudents, type CourseStudentChanged, type UserCourse } from "./courses.contract";
import type { Service, ServiceSchema } from "moleculer";
import type { Transaction } from "sequelize";
import { entityOf, principalOf, type Ctx } from "../../platform/access-gate";
import { broadcastCommitted } from "../../platform/broadcast";
import { DbMixin, listParams, parseListOrThrow, type DbMethods } from "../../platform/db.mixin";
import {
  ANY_USER,
  STAFF,
  SYSTEM_ONLY,
  courseScopeSql,
  decideCourse,
  decideLab,
  type Decision,
} from "../../lib/access.rules";
import { conflict, notFound, validationError } from "../../platform/errors";
import { containsPattern, type ListSpec } from "../../lib/listing";
import type { UserPrincipal } from "../../lib/principal";
import {
  CatalogCourse,
  Course,
  CourseLabLink,
  CourseStudent,
  StudentsAssigned,
  type CatalogCourseRow,
  type CourseRow,
} from "./courses.rows";
import { Lab } from "../labs/labs.contract";
import { pageOf } from "../../lib/schema";
import {
  ID_PARAM,
  BODY_ID_PARAM,
  multilineTextParam,
  nameParam,
  optionalNotNull,
  type IdParams,
} from "../../lib/params";

interface CreateParams {
  name: string;
  description?: string;
  owner_id?: number;
  listed?: boolean;
}
interface UpdateParams extends IdParams {
  name?: string;
  description?: string;
  owner_id?: number;
  listed?: boolean;
}
interface AssignParams extends IdParams {
  student_ids: number[];
}
interface StudentParams extends IdParams {
  student_id: number;
}
interface LabParams extends IdParams {
  lab_id: number;
}

/** A course as the access check loads it: the row plus the one fact the rules need about the caller. */
export interface LoadedCourse extends CourseRow {
  caller_assigned: boolean;
}

type CoursesMethods = {
  checkOwner(ownerId: number): Promise<void>;
  lockCourse(course: LoadedCourse, transaction: Transaction): Promise<void>;
  lostRace(course: LoadedCourse, transaction?: Transaction): Promise<void>;
};
type CoursesThis = Service & DbMethods & CoursesMethods;

const NAME = nameParam(200);
/** The column may be NULL: null clears the description. */
const DESCRIPTION = { ...multilineTextParam(5000), optional: true, nullable: true } as const;
/** courses.owner_id is NOT NULL: absent keeps (or defaults) the owner, null is refused. */
const OWNER_ID = optionalNotNull(BODY_ID_PARAM);
/** NOT NULL, default false: absent keeps (or defaults) it, null is refused. */
const LISTED = optionalNotNull({ type: "boolean" });

/** Who may own a course (the seed's admin creates courses too). Constant SQL text, never input. */
const OWNER_ROLES_SQL = "('teacher', 'admin')";

const COURSE_LIST: ListSpec<"created_at" | "updated_at" | "name" | "id", { owner_id: "int"; q: "string" }> = {
  sortable: ["created_at", "updated_at", "name", "id"],
  defaultSort: "-created_at",
  filters: { owner_id: "int", q: "string" },
};
const CATALOG_LIST: ListSpec<"created_at" | "name" | "id", { q: "string" }> = {
  sortable: ["created_at", "name", "id"],
  defaultSort: "name",
  filters: { q: "string" },
};
const STUDENT_LIST: ListSpec<"assigned_at" | "name" | "email" | "id", { q: "string" }> = {
  sortable: ["assigned_at", "name", "email", "id"],
  defaultSort: "name",
  filters: { q: "string" },
};
const COURSE_LAB_LIST: ListSpec<
  "created_at" | "name" | "id",
  { status: "enum:draft|pending_approval|approved|rejected" }
> = {
  sortable: ["created_at", "name", "id"],
  defaultSort: "name",
  filters: { status: "enum:draft|pending_approval|approved|rejected" },
};

const COURSE_COLUMNS = "id, name, description, owner_id, listed, created_at, updated_at";
/**
 * The catalog's one statement. Its cross-table reads, each the point of the join: the owner's name from users
 * (auth's table), the caller's assignment (course_students) and pending request (access_requests, access's
 * table; a request counts only if made after the course existed, as in access's own view of requests).
 */
const CATALOG_SELECT = `c.id, c.name, c.description, c.owner_id, owner.name AS owner_name, c.created_at,
  CASE WHEN c.owner_id = $me
         OR EXISTS (SELECT 1 FROM course_students cs WHERE cs.course_id = c.id AND cs.student_id = $me) THEN 'member'
       WHEN EXISTS (SELECT 1 FROM access_requests ar WHERE ar.course_id = c.id AND ar.student_id = $me
                       AND ar.status = 'pending' AND ar.created_at >= c.created_at) THEN 'request_pending'
       ELSE 'none' END AS membership`;
const CATALOG_FROM = "FROM courses c JOIN users owner ON owner.id = c.owner_id WHERE c.listed";
const LAB_COLUMNS =
  "l.id, l.name, l.description, l.docker_image, l.resources, l.network_isolated, l.max_lifetime_s, l.status, l.rejection_reason, l.created_by, l.approved_by, l.created_at, l.updated_at";
/** Loads the course named by `id` with the caller's assignment, in one query. */
async function loadCourse(this: Service, ctx: Ctx): Promise<LoadedCourse | null> {
  const self = this as CoursesThis;
  const p = ctx.meta.user;
  const callerId = p && p.kind === "user" ? p.id : 0;
  return self.selectOne<LoadedCourse>(
    `SELECT ${COURSE_COLUMNS},
            EXISTS (SELECT 1 FROM course_students cs WHERE cs.course_id = c.id AND cs.student_id = $caller) AS caller_assigned
       FROM courses c WHERE c.id = $id`,
    { id: Number(ctx.params.id), caller: callerId },
  );
}

const view = (p: UserPrincipal, c: LoadedCourse): Decision =>
  decideCourse(p, { owner_id: c.owner_id, callerAssigned: c.caller_assigned }, "view");
const manage = (p: UserPrincipal, c: LoadedCourse): Decision =>
  decideCourse(p, { owner_id: c.owner_id, callerAssigned: c.caller_assigned }, "manage");

const COURSE_ACCESS = { entity: "Course", load: loadCourse } as const;

function publicCourse(c: CourseRow): CourseRow {
  return {
    id: c.id,
    name: c.name,
    description: c.description,
    owner_id: c.owner_id,
    listed: c.listed,
    created_at: c.created_at,
    updated_at: c.updated_at,
  };
}

const CoursesService: ServiceSchema<{ rest: string }, CoursesMethods & DbMethods> = {
  name: "courses",
  mixins: [DbMixin()],
  settings: { rest: "/courses" },

  actions: {
    list: {
      rest: "GET /",
      openapi: {
        summary: "List the courses the caller may see",
        description: "Admin: all; teacher: their own; student: the ones they are assigned to.",
        responses: { 200: { description: "One page of courses", body: pageOf(Course) } },
      },
      access: { roles: ANY_USER },
      params: listParams(COURSE_LIST),
      cache: { keys: ["#user.kind", "#user.id", "#user.role", "offset", "limit", "sort", "owner_id", "q"], ttl: 600 },
      async handler(ctx: Ctx) {
        const q = parseListOrThrow(ctx.params, COURSE_LIST);
        const p = principalOf(ctx);
        const scope = courseScopeSql(p);
        const where: string[] = scope.where ? [scope.where] : [];
        const bind: Record<string, unknown> = { ...scope.bind };
        if (q.filters.owner_id !== undefined) {
          where.push("c.owner_id = $owner");
          bind.owner = q.filters.owner_id;
        }
        if (q.filters.q !== undefined) {
          where.push("c.name ILIKE $q");
          bind.q = containsPattern(q.filters.q);
        }
        const fromWhere = `FROM courses c ${where.length ? "WHERE " + where.join(" AND ") : ""}`;
        return this.selectPage<CourseRow>(COURSE_COLUMNS, fromWhere, bind, q);
      },
    },

    /** Operators (the REPL's `whois`): the courses a user owns or is assigned to. System only, not cached. */
    ofUser: {
      access: { roles: SYSTEM_ONLY },
      params: { user_id: ID_PARAM },
      handler(ctx: Ctx<{ user_id: number }>): Promise<UserCourse[]> {
        return this.select<UserCourse>(
          `SELECT c.id, c.name, 'owner' AS relation FROM courses c WHERE c.owner_id = $uid
           UNION ALL
           SELECT c.id, c.name, 'student' AS relation FROM course_students cs JOIN courses c ON c.id = cs.course_id
            WHERE cs.student_id = $uid
           ORDER BY id`,
          { uid: ctx.params.user_id },
        );
      },
    },

    create: {
      rest: "POST /",
      openapi: {
        summary: "Create a course",
        description:
          "A teacher owns what they create; an admin owns it too unless `owner_id` names another teacher or admin.",
        responses: {
          201: { description: "The new course", body: Course, headers: { Location: "The course's URL" } },
        },
        errors: { 409: "The chosen owner stopped being a teacher meanwhile; try again" },
      },
      access: { roles: STAFF },
      params: { name: NAME, description: DESCRIPTION, owner_id: OWNER_ID, listed: LISTED },
      async handler(ctx: Ctx<CreateParams>) {
        const p = principalOf(ctx);
        let ownerId: number;
        if (p.kind === "user" && p.role === "teacher") {
          if (ctx.params.owner_id !== undefined && ctx.params.owner_id !== p.id) {
            throw validationError([
              { loc: ["body", "owner_id"], msg: "A teacher creates courses they own", type: "value_error" },
            ]);
          }
          ownerId = p.id;
        } else if (ctx.params.owner_id === undefined && p.kind === "user") {
          // The seed's "admin creates a course": without owner_id the admin owns it.
          ownerId = p.id;
        } else {
          // The system principal (REPL) is nobody who could own a course: it names the owner.
          if (ctx.params.owner_id === undefined) {
            throw validationError([{ loc: ["body", "owner_id"], msg: "Field required", type: "missing" }]);
          }
          await this.checkOwner(ctx.params.owner_id);
          ownerId = ctx.params.owner_id;
        }
        // One statement: the row as stored (defaults and timestamps included). A chosen owner must still be a
        // teacher or admin when the row is written, not only when checkOwner looked (a role change in between: 422).
        const ownerStillOwner =
          p.kind === "user" && ownerId === p.id
            ? ""
            : ` WHERE EXISTS (SELECT 1 FROM users u WHERE u.id = $owner AND u.role IN ${OWNER_ROLES_SQL})`;
        const inserted = await this.select<CourseRow>(
          `INSERT INTO courses (name, description, owner_id, listed)
           SELECT $name, $description, $owner, $listed${ownerStillOwner}
           RETURNING ${COURSE_COLUMNS}`,
          {
            name: ctx.params.name,
            description: ctx.params.description ?? "",
            owner: ownerId,
            listed: ctx.params.listed ?? false,
          },
        );
        const created = inserted.at(0); // none when the owner is no longer a teacher or an admin
        if (!created) {
          await this.checkOwner(ownerId);
          throw conflict("The owner changed meanwhile; try again");
        }
        await this.tablesChanged("courses");
        ctx.meta.$statusCode = 201;
        ctx.meta.$location = `/api/v1/courses/${created.id}`;
        return created;
      },
    },

    /**
     * Listed courses, to any signed-in user: what a student browses to find a course to ask to join. Not
     * cached: the caller's standing reads access_requests, which are never cached (a stale "none" would
     * invite a duplicate request). One statement per page, the owner's name joined (no N+1).
     */
    catalog: {
      rest: "GET /catalog",
      openapi: {
        summary: "Browse the course catalog (listed courses, with the caller's standing)",
        responses: { 200: { description: "One page of listed courses", body: pageOf(CatalogCourse) } },
      },
      access: { roles: ANY_USER },
      params: listParams(CATALOG_LIST),
      async handler(ctx: Ctx) {
        const q = parseListOrThrow(ctx.params, CATALOG_LIST);
        const p = principalOf(ctx);
        const bind: Record<string, unknown> = { me: p.kind === "user" ? p.id : 0 };
        let filter = "";
        if (q.filters.q !== undefined) {
          filter = " AND c.name ILIKE $q";
          bind.q = containsPattern(q.filters.q);
        }
        return this.selectPage<CatalogCourseRow>(CATALOG_SELECT, CATALOG_FROM + filter, bind, {
          ...q,
          sort: { field: `c.${q.sort.field}`, direction: q.sort.direction },
        });
      },
    },

    get: {
      rest: "GET /:id",
      openapi: {
        summary: "Get a course",
        responses: { 200: { description: "The course", body: Course } },
      },
      access: { roles: ANY_USER, ...COURSE_ACCESS, decide: view },
      params: { id: ID_PARAM },
      cache: { keys: ["#user.kind", "#user.id", "#user.role", "id"], ttl: 600 },
      handler(ctx: Ctx<IdParams>) {
        return publicCourse(entityOf<LoadedCourse>(ctx));
      },
    },

    update: {
      rest: "PUT /:id",
      openapi: {
        summary: "Change a course (name, description; an admin also the owner)",
        responses: { 200: { description: "The course as stored", body: Course } },
        errors: { 409: "The course changed hands meanwhile; reload it and try again" },
      },
      access: { roles: STAFF, ...COURSE_ACCESS, decide: manage },
      params: {
        id: ID_PARAM,
        name: optionalNotNull(NAME),
        description: DESCRIPTION,
        owner_id: OWNER_ID,
        listed: LISTED,
      },
      async handler(ctx: Ctx<UpdateParams>) {
        const course = entityOf<LoadedCourse>(ctx);
        const p = principalOf(ctx);
        const changes: Partial<CourseRow> = {};
        if (ctx.params.name !== undefined) changes.name = ctx.params.name;
        if (ctx.params.description !== undefined) changes.description = ctx.params.description;
        if (ctx.params.listed !== undefined) changes.listed = ctx.params.listed;
        if (ctx.params.owner_id !== undefined && ctx.params.owner_id !== course.owner_id) {
          if (p.kind === "user" && p.role !== "admin") {
            throw validationError([
              {
                loc: ["body", "owner_id"],
                msg: "Only an admin hands a course to someone else",
                type: "value_error",
              },
            ]);
          }
          await this.checkOwner(ctx.params.owner_id);
          changes.owner_id = ctx.params.owner_id;
        }
        if (Object.keys(changes).length === 0) return publicCourse(course);
        // Conditional on the owner the access check and the owner rule decided from, and (on a hand-over) on the
        // new owner still being a teacher: a concurrent hand-over or role change makes this a 409/422, not a write.
        const newOwnerIsTeacher =
          changes.owner_id === undefined
            ? ""
            : ` AND EXISTS (SELECT 1 FROM users u WHERE u.id = $owner_id AND u.role IN ${OWNER_ROLES_SQL})`;
        const rows = await this.select<CourseRow>(
          `UPDATE courses SET ${Object.keys(changes)
            .map((k) => `${k} = $${k}`)
            .join(", ")}, updated_at = now()
            WHERE id = $id AND owner_id = $seen_owner${newOwnerIsTeacher} RETURNING ${COURSE_COLUMNS}`,
          { ...changes, id: course.id, seen_owner: course.owner_id },
        );
        if (rows.length === 0) {
          await this.lostRace(course);
          // Same course, same owner: the new owner stopped being a teacher meanwhile.
          if (changes.owner_id !== undefined) await this.checkOwner(changes.owner_id);
          throw conflict("The course changed meanwhile; reload it and try again");
        }
        await this.tablesChanged("courses");
        return rows[0];
      },
    },

    remove: {
      rest: "DELETE /:id",
      openapi: {
        summary: "Delete a course",
        description: "Its finished lab instances go with it.",
        responses: { 204: { description: "Deleted" } },
        errors: { 409: "The course has active lab instances, or changed hands meanwhile" },
      },
      access: { roles: STAFF, ...COURSE_ACCESS, decide: manage },
      params: { id: ID_PARAM },
      async handler(ctx: Ctx<IdParams>) {
        const course = entityOf<LoadedCourse>(ctx);
        await this.sequelize().transaction(async (transaction) => {
          // Lock the course so no instance starts in it while we check and delete.
          const locked = await this.select(
            "SELECT id FROM courses WHERE id = $id AND owner_id = $seen_owner FOR UPDATE",
            { id: course.id, seen_owner: course.owner_id },
            transaction,
          );
          if (locked.length === 0) {
            await this.lostRace(course, transaction);
            throw conflict("The course changed meanwhile; reload it and try again");
          }
          const active = await countActiveInstances(this.sequelize(), { course_id: course.id }, transaction);
          if (active > 0) {
            throw conflict(`Course has ${active} active lab instance(s); stop them before deleting the course`);
          }
          // Finished instances are history of this course only; they go with it (as with a deleted lab).
          // Left in place, their foreign key refuses the DELETE and the caller got a 500.
          await deleteInstances(this.sequelize(), { course_id: course.id }, "finished", transaction);
          await this.sequelize().query("DELETE FROM courses WHERE id = $id", { bind: { id: course.id }, transaction });
        });
        await this.tablesChanged("courses");
        ctx.meta.$statusCode = 204;
        return null;
      },
    },

    students: {
      rest: "GET /:id/students",
      openapi: {
        summary: "List a course's students",
        responses: { 200: { description: "One page of students", body: pageOf(CourseStudent) } },
      },
      access: { roles: ANY_USER, ...COURSE_ACCESS, decide: manage },
      params: { id: ID_PARAM, ...listParams(STUDENT_LIST) },
      async handler(ctx: Ctx<IdParams>) {
        const q = parseListOrThrow(ctx.params, STUDENT_LIST);
        const bind: Record<string, unknown> = { course: ctx.params.id };
        let filter = "";
        if (q.filters.q !== undefined) {
          filter = "AND (u.name ILIKE $q OR u.email ILIKE $q)";
          bind.q = containsPattern(q.filters.q);
        }
        return this.selectPage(
          "u.id, u.email, u.name, u.role, cs.assigned_at",
          `FROM course_students cs JOIN users u ON u.id = cs.student_id WHERE cs.course_id = $course ${filter}`,
          bind,
          {
            ...q,
            sort: {
              field: q.sort.field === "assigned_at" ? "cs.assigned_at" : `u.${q.sort.field}`,
              direction: q.sort.direction,
            },
          },
        );
      },
    },

    assignStudents: {
      rest: "POST /:id/students",
      openapi: {
        summary: "Assign students to a course",
        description: "Idempotent: students already assigned are reported, not refused.",
        responses: { 200: { description: "Who was added and who was there already", body: StudentsAssigned } },
        errors: { 409: "The course changed hands meanwhile; reload it and try again" },
      },
      access: { roles: STAFF, ...COURSE_ACCESS, decide: manage },
      params: { id: ID_PARAM, student_ids: { type: "array", items: BODY_ID_PARAM, min: 1, max: 500, unique: true } },
      async handler(ctx: Ctx<AssignParams>) {
        const course = entityOf<LoadedCourse>(ctx);
        const ids = ctx.params.student_ids;
        // One transaction under locks: the course (with the owner the access check saw) cannot go or change hands,
        // and the students cannot stop being students, between the checks and the insert. Without them, a course
        // deleted meanwhile made the insert's foreign key answer 500.
        const added = await this.sequelize().transaction(async (transaction) => {
          await this.lockCourse(course, transaction);
          const students = await this.select<{ id: number }>(
            "SELECT id FROM users WHERE id = ANY($ids) AND role = 'student' ORDER BY id FOR SHARE",
            { ids },
            transaction,
          );
          const found = new Set(students.map((s) => s.id));
          const missing = ids.filter((id) => !found.has(id));
          if (missing.length > 0) {
            throw validationError(
              missing.map((id) => ({
                loc: ["body", "student_ids", ids.indexOf(id)],
                msg: `User ${id} is not a student`,
                type: "value_error",
              })),
            );
          }
          return assignStudents(this.sequelize(), course.id, [...ids], transaction);
        });
        const addedIds = [...added].sort((a, b) => a - b);
        if (addedIds.length > 0) await this.tablesChanged("course_students");
        return { course_id: course.id, added: addedIds, already_assigned: ids.filter((id) => !addedIds.includes(id)) };
      },
    },

    removeStudent: {
      rest: "DELETE /:id/students/:student_id",
      openapi: {
        summary: "Remove a student from a course",
        description: "Their lab instances in the course are stopped.",
        responses: { 204: { description: "Removed" } },
        errors: { 409: "The course changed hands meanwhile; reload it and try again" },
      },
      access: { roles: STAFF, ...COURSE_ACCESS, decide: manage },
      params: { id: ID_PARAM, student_id: ID_PARAM },
      async handler(ctx: Ctx<StudentParams>) {
        const course = entityOf<LoadedCourse>(ctx);
        // Conditional on the owner the access check saw (one statement, so no lock is needed).
        const removed = await this.select<{ student_id: number }>(
          `DELETE FROM course_students WHERE course_id = $course AND student_id = $student
              AND EXISTS (SELECT 1 FROM courses c WHERE c.id = $course AND c.owner_id = $seen_owner)
           RETURNING student_id`,
          { course: course.id, student: ctx.params.student_id, seen_owner: course.owner_id },
        );
        if (removed.length === 0) {
          await this.lostRace(course);
          throw notFound("Student in this course");
        }
        // lab-instances listens and stops the student's instances in this course.
        // Caches first: the listener must not read a stale answer.
        await this.tablesChanged("course_students");
        broadcastCommitted(this, COURSE_EVENTS.studentRemoved, {
          course_id: course.id,
          student_id: ctx.params.student_id,
        } satisfies CourseStudentChanged);
        ctx.meta.$statusCode = 204;
        return null;
      },
    },

    labs: {
      rest: "GET /:id/labs",
      openapi: {
        summary: "List the labs attached to a course",
        description: "Students see approved labs only.",
        responses: { 200: { description: "One page of labs", body: pageOf(Lab) } },
      },
      access: { roles: ANY_USER, ...COURSE_ACCESS, decide: view },
      params: { id: ID_PARAM, ...listParams(COURSE_LAB_LIST) },
      cache: { keys: ["#user.kind", "#user.id", "#user.role", "id", "offset", "limit", "sort", "status"], ttl: 600 },
      async handler(ctx: Ctx<IdParams>) {
        const q = parseListOrThrow(ctx.params, COURSE_LAB_LIST);
        const p = principalOf(ctx);
        const where = ["cl.course_id = $course"];
        const bind: Record<string, unknown> = { course: ctx.params.id };
        if (p.kind === "user" && p.role === "student") where.push("l.status = 'approved'");
        if (q.filters.status !== undefined) {
          where.push("l.status = $status");
          bind.status = q.filters.status;
        }
        return this.selectPage(
          LAB_COLUMNS,
          `FROM course_labs cl JOIN labs l ON l.id = cl.lab_id WHERE ${where.join(" AND ")}`,
          bind,
          { ...q, sort: { field: `l.${q.sort.field}`, direction: q.sort.direction } },
        );
      },
    },

    attachLab: {
      rest: "POST /:id/labs",
      openapi: {
        summary: "Attach a lab to a course",
        responses: {
          201: { description: "Attached", body: CourseLabLink, headers: { Location: "The link's URL" } },
          200: { description: "It was attached already", body: CourseLabLink },
        },
        errors: { 409: "The course changed hands meanwhile; reload it and try again" },
      },
      access: { roles: STAFF, ...COURSE_ACCESS, decide: manage },
      params: { id: ID_PARAM, lab_id: BODY_ID_PARAM },
      async handler(ctx: Ctx<LabParams>) {
        const course = entityOf<LoadedCourse>(ctx);
        const p = principalOf(ctx);
        // Decided and written under locks (course, then lab: the order every writer here takes them): the lab
        // cannot leave the catalogue or be deleted, nor the course change hands or go, between check and insert.
        const { lab, inserted } = await this.sequelize().transaction(async (transaction) => {
          await this.lockCourse(course, transaction);
          const found = await this.selectOne<{ id: number; created_by: number; status: string }>(
            "SELECT id, created_by, status FROM labs WHERE id = $id FOR SHARE",
            { id: ctx.params.lab_id },
            transaction,
          );
          // A teacher attaches labs they can see: their own or approved ones (the catalogue).
          if (
            !found ||
            (p.kind === "user" && decideLab(p, { ...found, callerReachesViaCourse: false }, "view") !== "allow")
          ) {
            throw notFound("Lab");
          }
          const rows = await this.select<{ lab_id: number }>(
            "INSERT INTO course_labs (course_id, lab_id) VALUES ($course, $lab) ON CONFLICT DO NOTHING RETURNING lab_id",
            { course: course.id, lab: found.id },
            transaction,
          );
          return { lab: found, inserted: rows };
        });
        if (inserted.length > 0) {
          await this.tablesChanged("course_labs");
          ctx.meta.$statusCode = 201;
          // The new link, as DELETE names it (a 201 without Location also makes moleculer-web warn on every call).
          ctx.meta.$location = `/api/v1/courses/${course.id}/labs/${lab.id}`;
        }
        return { course_id: course.id, lab_id: lab.id };
      },
    },

    detachLab: {
      rest: "DELETE /:id/labs/:lab_id",
      openapi: {
        summary: "Detach a lab from a course",
        responses: { 204: { description: "Detached" } },
        errors: { 409: "The lab has active instances in this course, or the course changed hands meanwhile" },
      },
      access: { roles: STAFF, ...COURSE_ACCESS, decide: manage },
      params: { id: ID_PARAM, lab_id: ID_PARAM },
      async handler(ctx: Ctx<LabParams>) {
        const course = entityOf<LoadedCourse>(ctx);
        await this.sequelize().transaction(async (transaction) => {
          await this.lockCourse(course, transaction);
          // Delete first, count after: the delete waits for every start holding this link (FOR SHARE), so the
          // count sees each instance they made, and a start after it finds no link. A refusal rolls it back.
          const removed = await this.select<{ lab_id: number }>(
            "DELETE FROM course_labs WHERE course_id = $course AND lab_id = $lab RETURNING lab_id",
            { course: course.id, lab: ctx.params.lab_id },
            transaction,
          );
          if (removed.length === 0) throw notFound("Lab in this course");
          const active = await countActiveInstances(
            this.sequelize(),
            { course_id: course.id, lab_id: ctx.params.lab_id },
            transaction,
          );
          if (active > 0) {
            throw conflict(`Lab has ${active} active instance(s) in this course; stop them before detaching it`);
          }
        });
        await this.tablesChanged("course_labs");
        ctx.meta.$statusCode = 204;
        return null;
      },
    },
  },

  // Lab approval and edits change what course lab lists show: the labs service invalidates this cache itself,
  // before it answers (a `labs.changed` listener here would run only after that answer).

  methods: {
    /** Admin may give a course to a teacher or an admin; the owner must be an existing one. */
    async checkOwner(ownerId: number): Promise<void> {
      const owner = await this.selectOne<{ ok: boolean }>(
        `SELECT role IN ${OWNER_ROLES_SQL} AS ok FROM users WHERE id = $id`,
        { id: ownerId },
      );
      if (!owner?.ok) {
        throw validationError([
          { loc: ["body", "owner_id"], msg: "owner_id must be the id of a teacher or an admin", type: "value_error" },
        ]);
      }
    },
    /**
     * FOR SHARE on the course as the access check saw it (same owner): it cannot be deleted or handed over
     * until `transaction` ends. Throws as lostRace when it already was.
     */
    async lockCourse(course: LoadedCourse, transaction: Transaction): Promise<void> {
      const rows = await this.select(
        "SELECT id FROM courses WHERE id = $id AND owner_id = $seen_owner FOR SHARE",
        { id: course.id, seen_owner: course.owner_id },
        transaction,
      );
      if (rows.length === 0) await this.lostRace(course, transaction);
      if (rows.length === 0) throw conflict("The course changed meanwhile; reload it and try again");
    },
    /**
     * After a write conditional on the course as loaded matched nothing: 404 when the course is gone, 409 when
     * it changed hands (the caller's right to write was decided from the old owner). Returns when neither.
     */
    async lostRace(course: LoadedCourse, transaction?: Transaction): Promise<void> {
      const now = await this.selectOne<{ owner_id: number }>(
        "SELECT owner_id FROM courses WHERE id = $id",
        { id: course.id },
        transaction,
      );
      if (!now) throw notFound("Course");
      if (now.owner_id !== course.owner_id) {
        throw conflict("The course changed owner meanwhile; reload it and try again");
      }
    },
  },
};

export default CoursesService;
