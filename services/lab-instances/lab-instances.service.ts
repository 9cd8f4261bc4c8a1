/**
 * Lab instances: a student's own running copy of a lab (a pod the Celery workers create).
 *
 * PostgreSQL is the source of truth. Every change of an instance happens in one transaction that locks the
 * instance row, asks the pure lifecycle rules (lab-instances.rules.ts) what the event does, writes it with
 * an UPDATE conditional on the status it decided from, and records any Celery task in the outbox
 * (services/tasks/outbox.ts) in the same transaction. After the commit: `lab-instances.status-changed`
 * (the public JSON, for SSE streams) and `tasks.enqueued` (wakes the relay) are broadcast.
 *
 * Task ids: lab_instances.celery_task_id is the start_lab task's id (results are matched against it);
 * stop_lab and cleanup_lab ids live only in their task_outbox rows (lab_instance_id links them).
 *
 * PGlite caveat: inside a transaction every query passes `{ transaction }` (see platform/db.ts).
 *
 * Reads of other services' tables (named here, checked by test/unit/table-ownership.test.ts; writes go
 * through the owner):
 * - courses, course_students, course_labs (courses), labs (labs): the facts of decideStart, locked in the
 *   start's transaction (the course and assignment FOR KEY SHARE / FOR SHARE, the lab FOR SHARE); an
 *   instance's course owner (visibility) and its lab's max lifetime joined into its row.
 * - users (auth): the student's row locked (FOR UPDATE) to serialise their active-instance cap.
 */
import { COURSE_EVENTS, type CourseStudentChanged } from "../courses/courses.contract";
import type { Context, ServiceSchema } from "moleculer";
import type { Transaction } from "sequelize";
import { entityOf, principalOf, type Ctx } from "../../platform/access-gate";
import { broadcastCommitted } from "../../platform/broadcast";
import { DbMixin, listParams, parseListOrThrow, type DbMethods } from "../../platform/db.mixin";
import {
  ANY_USER,
  STUDENT_ONLY,
  SYSTEM_ONLY,
  decideLabInstance,
  labInstanceScopeSql,
  type Decision,
  type Need,
} from "../../lib/access.rules";
import { platformOf } from "../../platform/platform";
import { METRIC, addCollector, histogram, removeCollector } from "../../platform/metrics";
import { traceparentOf } from "../../platform/tracing";
import { advisoryLockKey } from "../../platform/db";
import { conflict, notFound, validationError } from "../../platform/errors";
import type { ListSpec } from "../../lib/listing";
import { systemPrincipal, type UserPrincipal } from "../../lib/principal";
import {
  TASKS_ENQUEUED_EVENT,
  TASK_NAMES,
  TASK_RESULT_STATES,
  enqueueTask,
  type TasksEnqueued,
} from "../tasks/tasks.contract";
import {
  STATUS_CHANGED_EVENT,
  type ApplyTaskResultAnswer,
  type ApplyTaskResultParams,
  type StatusChanged,
  type InspectedInstance,
  type SweepReport,
} from "./lab-instances.contract";
import {
  INSTANCE_COLUMNS,
  INSTANCE_VIEW_COLUMNS,
  LabConnection,
  LabInstanceViewSchema,
  type LabInstanceConnection,
  type LabInstanceRow,
  type LabInstanceView,
} from "./lab-instances.rows";
import { pageOf } from "../../lib/schema";
import {
  ACTIVE_STATUSES,
  INSTANCE_STATUSES,
  connectionPort,
  decide,
  lifetimeSeconds,
  resultEvent,
  stopAnswer,
  type InstanceEvent,
  type InstanceStatus,
  type Outcome,
  type StartFields,
} from "./lab-instances.rules";
import { decideStart } from "../../lib/permission.rules";
import { BODY_ID_PARAM, ID_PARAM, type IdParams } from "../../lib/params";

interface StartParams {
  lab_id: number;
  course_id: number;
}

/** An instance as the access check loads it: the view plus its course's owner and the worker's port. */
export interface LoadedInstance extends LabInstanceView {
  course_owner_id: number;
  connection_port: number | null;
}
/** A locked row inside a transition, with what a start needs to compute its expiry and whom to tell. */
interface LockedRow extends LabInstanceView {
  lab_max_lifetime_s: number | null;
  course_owner_id: number;
}
/** A status change as broadcast: the public JSON and the course's owner (who may see it: decideLabInstance). */
type Announced = LabInstanceView & { course_owner_id: number };
interface Transition {
  before: InstanceStatus;
  row: LabInstanceView;
  courseOwnerId: number;
  outcome: Outcome;
  changed: boolean;
  enqueued: boolean;
  wrote: boolean;
  /** The id of the task this transition enqueued, if any. */
  enqueuedTaskId?: string;
}

type Methods = {
  transition(id: number, event: InstanceEvent, opts?: TransitionOptions): Promise<Transition | null>;
  applyOutcome(
    t: Transaction,
    row: LockedRow,
    outcome: Outcome,
    opts?: TransitionOptions,
  ): Promise<Omit<Transition, "before" | "outcome" | "courseOwnerId">>;
  logTransition(
    before: InstanceStatus,
    t: Omit<Transition, "before" | "outcome" | "courseOwnerId">,
    taskId?: string,
  ): void;
  announce(changed: Announced[], enqueued: boolean): void;
  sweep(): Promise<SweepReport>;
};
type Vars = {
  sweepTimer: NodeJS.Timeout | null;
  sweeping: Promise<SweepReport> | null;
  startDuration: ReturnType<typeof histogram>;
};
interface TransitionOptions {
  start?: StartFields;
  skip?: (row: LockedRow) => string | null;
  /** The task whose result caused the transition (lifecycle log line). */
  taskId?: string;
  /** W3C trace context for a task the transition enqueues. */
  traceparent?: string | null;
}

const COLUMNS = INSTANCE_COLUMNS.join(", ");
const I_COLUMNS = INSTANCE_COLUMNS.map((c) => `i.${c}`).join(", ");
/** The names an answer carries, from the joins in VIEW_JOINS (labs l, courses c). */
const NAME_COLUMNS = "l.name AS lab_name, c.name AS course_name";
/** What a broadcast also needs: the owner of the instance's course (from the same join). */
const OWNER_COLUMN = "c.owner_id AS course_owner_id";
/** Reads of labs' and courses' tables: the names are the point of these joins (one statement, no N+1). */
const VIEW_JOINS = "JOIN labs l ON l.id = i.lab_id JOIN courses c ON c.id = i.course_id";
const ACTIVE_SQL = `(${ACTIVE_STATUSES.map((s) => `'${s}'`).join(", ")})`;
const SWEEP_LOCK = advisoryLockKey("lab-instances.sweep").toString();
/** Rows per sweep statement: a backlog drains over a few ticks instead of one huge transaction. */
const SWEEP_BATCH = 100;

type SortField = "created_at" | "updated_at" | "started_at" | "expires_at" | "status" | "id";
type Filters = {
  status: `enum:${string}`;
  lab_id: "int";
  course_id: "int";
  student_id: "int";
  active: "enum:true|false";
  updated_since: "string";
};
const INSTANCE_LIST: ListSpec<SortField, Filters> = {
  sortable: ["created_at", "updated_at", "started_at", "expires_at", "status", "id"],
  defaultSort: "-created_at",
  filters: {
    status: `enum:${INSTANCE_STATUSES.join("|")}`,
    lab_id: "int",
    course_id: "int",
    student_id: "int",
    // pending|running|stopping (true) or the others: a dashboard's "my running labs" in one call.
    active: "enum:true|false",
    // An ISO-8601 time: instances changed since then (what a reconnecting event stream missed).
    updated_since: "string",
  },
};

async function loadInstance(this: unknown, ctx: Ctx): Promise<LoadedInstance | null> {
  const self = this as DbMethods;
  return self.selectOne<LoadedInstance>(
    `SELECT ${I_COLUMNS}, ${NAME_COLUMNS}, c.owner_id AS course_owner_id, i.connection_port
       FROM lab_instances i ${VIEW_JOINS}
      WHERE i.id = $id`,
    { id: Number(ctx.params.id) },
  );
}

const instanceRule =
  (need: Need) =>
  (p: UserPrincipal, inst: LoadedInstance): Decision =>
    decideLabInstance(p, { student_id: inst.student_id, course_owner_id: inst.course_owner_id }, need);

const INSTANCE_ACCESS = { entity: "Lab instance", load: loadInstance } as const;

export function publicInstance(row: LabInstanceView): LabInstanceView {
  return Object.fromEntries(INSTANCE_VIEW_COLUMNS.map((c) => [c, row[c]])) as unknown as LabInstanceView;
}

function isActiveUniqueViolation(err: unknown): boolean {
  const e = err as { name?: string; parent?: { code?: string; constraint?: string } } | null | undefined;
  return (
    (e?.name === "SequelizeUniqueConstraintError" || e?.parent?.code === "23505") &&
    e.parent?.constraint === "lab_instances_one_active_idx"
  );
}

const LabInstancesService: ServiceSchema<{ rest: string }, Methods & DbMethods, Vars> = {
  name: "lab-instances",
  mixins: [DbMixin()],
  settings: { rest: "/lab-instances" },

  actions: {
    // Not cached: statuses change all the time and a stale "pending" would mislead the UI.
    list: {
      rest: "GET /",
      openapi: {
        summary: "List the lab instances the caller may see",
        description: "Student: their own; teacher: those in their courses; admin: all.",
        responses: { 200: { description: "One page of lab instances", body: pageOf(LabInstanceViewSchema) } },
      },
      access: { roles: ANY_USER },
      params: listParams(INSTANCE_LIST),
      async handler(ctx: Ctx) {
        const q = parseListOrThrow(ctx.params, INSTANCE_LIST);
        const p = principalOf(ctx);
        const scope = labInstanceScopeSql(p);
        const where: string[] = scope.where ? [scope.where] : [];
        const bind: Record<string, unknown> = { ...scope.bind };
        for (const f of ["status", "lab_id", "course_id", "student_id"] as const) {
          if (q.filters[f] !== undefined) {
            where.push(`i.${f} = $${f}`);
            bind[f] = q.filters[f];
          }
        }
        if (q.filters.active !== undefined) {
          where.push(`i.status ${q.filters.active === "true" ? "IN" : "NOT IN"} ${ACTIVE_SQL}`);
        }
        if (q.filters.updated_since !== undefined) {
          const since = Date.parse(q.filters.updated_since);
          if (!Number.isFinite(since)) {
            const problem = {
              loc: ["query", "updated_since"],
              msg: "Input should be a valid datetime",
              type: "datetime_parsing",
            };
            throw validationError([problem]);
          }
          where.push("i.updated_at >= $updated_since");
          bind.updated_since = new Date(since).toISOString();
        }
        return this.selectPage<LabInstanceView>(
          `${I_COLUMNS}, ${NAME_COLUMNS}`,
          `FROM lab_instances i ${VIEW_JOINS} ${where.length ? "WHERE " + where.join(" AND ") : ""}`,
          bind,
          { ...q, sort: { field: `i.${q.sort.field}`, direction: q.sort.direction } },
        );
      },
    },

    /**
     * Start a lab: 202 with the pending instance. 404 when the course is not the caller's or the lab is not
     * attached to it; 409 when the lab is not approved, when the student already has an active instance of
     * this lab (the detail names it), or when they are at MAX_ACTIVE_INSTANCES_PER_STUDENT.
     */
    create: {
      rest: "POST /",
      openapi: {
        summary: "Start a lab",
        description:
          "The student must be assigned to the course and the lab attached to it and approved. The instance starts " +
          "pending; watch it with GET /lab-instances/{id}/events.",
        responses: {
          202: {
            description: "Accepted: the pending instance",
            body: LabInstanceViewSchema,
            headers: { Location: "The instance's URL" },
          },
        },
        errors: {
          404: "The course is not the caller's, or the lab is not attached to it",
          409: "The lab is not approved, the student already runs it, or runs as many instances as allowed",
        },
      },
      // The start rule (assigned AND attached AND approved) is a permission decision of the access service,
      // cached per student, course and lab: a refused or repeated start costs no query here. The transaction
      // below checks the same facts again under locks, so a decision is never the last word on a start.
      access: {
        roles: STUDENT_ONLY,
        entity: "Course",
        check: (ctx) => ({
          rule: "start_lab",
          course_id: Number(ctx.params.course_id),
          lab_id: Number(ctx.params.lab_id),
        }),
      },
      params: { lab_id: BODY_ID_PARAM, course_id: BODY_ID_PARAM },
      async handler(ctx: Ctx<StartParams>) {
        const me = principalOf(ctx) as UserPrincipal;
        const { config } = platformOf(this.broker);
        const sequelize = this.sequelize();
        const { lab_id: labId, course_id: courseId } = ctx.params;
        let created: { row: LabInstanceView; courseOwnerId: number };
        try {
          created = await sequelize.transaction(async (transaction) => {
            // One start of this student at a time, on every node: the "already active" and cap checks below
            // then see every instance committed before, so they are race-free (the unique index stays the backstop).
            await this.select("SELECT id FROM users WHERE id = $me FOR UPDATE", { me: me.id }, transaction);
            // Course, then lab, then their links: the order in which deleting a course or a lab, attaching and
            // detaching take them. Locked after the links (as before), the insert's foreign keys waited for a
            // deletion that waited for this start's link locks: a deadlock, answered 500 on one side.
            // KEY SHARE on the course: its deletion waits for this start (edits of its name do not);
            // SHARE on the lab: an edit sending it back to review waits too, so "approved" holds until commit.
            const course = await this.select<{ name: string; owner_id: number }>(
              "SELECT name, owner_id FROM courses WHERE id = $course FOR KEY SHARE",
              { course: courseId },
              transaction,
            );
            const lab = await this.selectOne<{ status: string; name: string }>(
              "SELECT status, name FROM labs WHERE id = $lab FOR SHARE",
              { lab: labId },
              transaction,
            );
            // FOR SHARE: removing the student from the course waits for this start, so its stop of the
            // student's instances sees this one.
            const assigned =
              course.length === 0
                ? []
                : await this.select(
                    "SELECT 1 AS ok FROM course_students WHERE course_id = $course AND student_id = $me FOR SHARE",
                    { course: courseId, me: me.id },
                    transaction,
                  );
            // FOR SHARE: detaching the lab waits for this start, then counts its instance.
            const attached =
              assigned.length === 0
                ? []
                : await this.select(
                    "SELECT 1 AS ok FROM course_labs WHERE course_id = $course AND lab_id = $lab FOR SHARE",
                    { course: courseId, lab: labId },
                    transaction,
                  );
            // The access check's rule again, on the locked facts. Not attached to this course: the student
            // may not learn whether such a lab exists.
            const admission = decideStart(labId, {
              assigned: assigned.length > 0,
              attachedLabStatus: lab && attached.length > 0 ? lab.status : null,
            });
            if (admission.decision === "not_found") throw notFound(admission.entity ?? "Lab");
            if (admission.decision === "conflict") throw conflict(admission.detail ?? `Lab ${labId} cannot be started`);
            const active = await this.select<{ id: number; lab_id: number; status: InstanceStatus }>(
              `SELECT id, lab_id, status FROM lab_instances WHERE student_id = $me AND status IN ${ACTIVE_SQL} ORDER BY id`,
              { me: me.id },
              transaction,
            );
            const same = active.find((a) => a.lab_id === labId);
            if (same) {
              throw conflict(
                `You already have an active instance of lab ${labId}: lab instance ${same.id} (${same.status})`,
                {
                  lab_instance_id: same.id,
                },
              );
            }
            if (active.length >= config.maxActiveInstancesPerStudent) {
              throw conflict(
                `At most ${config.maxActiveInstancesPerStudent} lab instances may be active at once; stop one of ${active
                  .map((a) => a.id)
                  .join(", ")} first`,
                { active_instance_ids: active.map((a) => a.id) },
              );
            }
            const [row] = await this.select<{ id: number }>(
              `INSERT INTO lab_instances (lab_id, course_id, student_id, status) VALUES ($lab, $course, $me, 'pending') RETURNING id`,
              { lab: labId, course: courseId, me: me.id },
              transaction,
            );
            const taskId = await enqueueTask(sequelize, transaction, {
              name: "start_lab",
              kwargs: { lab_instance_id: row.id, lab_id: labId, student_id: me.id },
              labInstanceId: row.id,
              queue: config.celeryQueue,
              traceparent: traceparentOf(ctx),
            });
            const [withTask] = await this.select<LabInstanceRow>(
              `UPDATE lab_instances SET celery_task_id = $task WHERE id = $id RETURNING ${COLUMNS}`,
              { task: taskId, id: row.id },
              transaction,
            );
            // Both names were read under this transaction's locks: the answer needs no second statement.
            return {
              row: { ...withTask, lab_name: lab?.name ?? "", course_name: course[0]?.name ?? "" },
              courseOwnerId: course[0]?.owner_id ?? 0,
            };
          });
        } catch (err) {
          if (!isActiveUniqueViolation(err)) throw err;
          // Only reachable if something inserts without the user-row lock; answer like the check above.
          const other = await this.selectOne<{ id: number; status: string }>(
            `SELECT id, status FROM lab_instances WHERE student_id = $me AND lab_id = $lab AND status IN ${ACTIVE_SQL}`,
            { me: me.id, lab: labId },
          );
          throw conflict(
            `You already have an active instance of lab ${labId}${other ? `: lab instance ${other.id} (${other.status})` : ""}`,
            { lab_instance_id: other?.id ?? null },
          );
        }
        this.announce([{ ...created.row, course_owner_id: created.courseOwnerId }], true);
        this.logger.info({
          msg: `lab start accepted: instance ${created.row.id}, task ${created.row.celery_task_id ?? "?"}`,
          event: "lab_start_accepted",
          instance_id: created.row.id,
          task_id: created.row.celery_task_id,
          lab_id: labId,
          course_id: courseId,
          user_id: me.id,
        });
        ctx.meta.$statusCode = 202;
        // Where to watch the start (moleculer-web sets $location only for 201 and redirects).
        ctx.meta.$responseHeaders = { Location: `/api/v1/lab-instances/${created.row.id}` };
        return publicInstance(created.row);
      },
    },

    get: {
      rest: "GET /:id",
      openapi: {
        summary: "Get a lab instance",
        responses: { 200: { description: "The instance", body: LabInstanceViewSchema } },
      },
      access: { roles: ANY_USER, ...INSTANCE_ACCESS, decide: instanceRule("view") },
      params: { id: ID_PARAM },
      handler(ctx: Ctx<IdParams>) {
        return publicInstance(entityOf<LoadedInstance>(ctx));
      },
    },

    /**
     * 202 with the instance. pending|running → stopping (+ stop_lab). Already stopping or stopped: 202 with
     * the instance unchanged (idempotent: a retry must not fail). failed|expired: 409, nothing to stop.
     */
    stop: {
      rest: "POST /:id/stop",
      openapi: {
        summary: "Stop a lab instance",
        description: "Idempotent: stopping one that is stopping or stopped answers it unchanged.",
        responses: { 202: { description: "Accepted: the instance, stopping", body: LabInstanceViewSchema } },
        errors: { 409: "The instance has already ended (failed or expired)" },
      },
      access: { roles: ANY_USER, ...INSTANCE_ACCESS, decide: instanceRule("manage") },
      params: { id: ID_PARAM },
      async handler(ctx: Ctx<IdParams>) {
        const inst = entityOf<LoadedInstance>(ctx);
        const t = await this.transition(inst.id, { kind: "stop" }, { traceparent: traceparentOf(ctx) });
        if (!t) throw notFound("Lab instance");
        if (stopAnswer(t.before) === "conflict") {
          throw conflict(`Lab instance ${inst.id} has already ended (${t.before}); there is nothing to stop`);
        }
        ctx.meta.$statusCode = 202;
        return publicInstance(t.row);
      },
    },

    connection: {
      rest: "GET /:id/connection",
      openapi: {
        summary: "Where to connect to a running lab instance",
        responses: { 200: { description: "Connection details", body: LabConnection } },
        errors: { 409: "The instance is not running" },
      },
      access: { roles: ANY_USER, ...INSTANCE_ACCESS, decide: instanceRule("view") },
      params: { id: ID_PARAM },
      // Not async: moleculer wraps every handler (Promise.method), so the throw below still rejects.
      handler(ctx: Ctx<IdParams>) {
        const inst = entityOf<LoadedInstance>(ctx);
        if (inst.status !== "running") {
          throw conflict(
            `Lab instance ${inst.id} is ${inst.status}; connection details exist only while it is running`,
          );
        }
        const answer: LabInstanceConnection = {
          id: inst.id,
          status: inst.status,
          connection_url: inst.connection_url,
          port: inst.connection_url === null ? null : connectionPort(inst.connection_url, inst.connection_port),
          k8s_pod_name: inst.k8s_pod_name,
          started_at: inst.started_at,
          expires_at: inst.expires_at,
        };
        return answer;
      },
    },

    /**
     * A worker's final result for one of an instance's tasks (called by the tasks service). Idempotent and
     * monotone: a duplicate or late result never moves an instance backwards (see lab-instances.rules.ts).
     */
    applyTaskResult: {
      access: { roles: SYSTEM_ONLY },
      params: {
        task_id: { type: "string", min: 1, max: 255 },
        task_name: { type: "enum", values: [...TASK_NAMES] },
        lab_instance_id: ID_PARAM,
        status: { type: "enum", values: [...TASK_RESULT_STATES] },
        result: { type: "any", optional: true },
        error: { type: "string", optional: true, nullable: true },
      },
      async handler(ctx: Ctx<ApplyTaskResultParams>): Promise<ApplyTaskResultAnswer> {
        const { task_id, task_name, lab_instance_id: id, status, result, error } = ctx.params;
        const { event, start } = resultEvent(task_name, status, result, error ?? undefined);
        const t = await this.transition(id, event, {
          start,
          taskId: task_id,
          // A start result answers the start task this instance recorded, not some other one.
          skip: (row) =>
            task_name === "start_lab" && row.celery_task_id !== null && row.celery_task_id !== task_id
              ? `start result of task ${task_id} is not this instance's start task ${row.celery_task_id}`
              : null,
        });
        if (!t) {
          this.logger.warn(`Result of ${task_name} ${task_id} for lab instance ${id}, which no longer exists: ignored`);
          return { applied: false, status: null, note: "lab instance not found" };
        }
        const note = t.outcome.ignored;
        if (note) this.logger.info(`Lab instance ${id}: ${task_name} ${status} (${task_id}): ${note}`);
        if (task_name === "cleanup_lab" && status !== "SUCCESS") {
          this.logger.error(
            `Lab instance ${id}: cleanup_lab ${task_id} ${status}: ${error ?? "no error text"}; its resources may remain`,
          );
        }
        return { applied: t.wrote, status: t.row.status, ...(note ? { note } : {}) };
      },
    },

    /**
     * Operators (the REPL's `instances`): a student's instances, the active ones, or the stuck ones (pending or
     * stopping for longer than stuck_after_s: a start the worker never answered, a stop that never ended),
     * oldest change first, with how long each has been in its status. System only.
     */
    inspect: {
      access: { roles: SYSTEM_ONLY },
      params: {
        student_id: { ...ID_PARAM, optional: true },
        active: { type: "boolean", optional: true },
        stuck: { type: "boolean", optional: true },
        stuck_after_s: { type: "number", integer: true, min: 1, max: 86_400, optional: true, convert: true },
        limit: { type: "number", integer: true, min: 1, max: 500, optional: true, convert: true },
      },
      handler(
        ctx: Ctx<{ student_id?: number; active?: boolean; stuck?: boolean; stuck_after_s?: number; limit?: number }>,
      ): Promise<InspectedInstance[]> {
        const p = ctx.params;
        const where: string[] = [];
        const bind: Record<string, unknown> = { limit: p.limit ?? 50 };
        if (p.student_id !== undefined) {
          where.push("i.student_id = $student");
          bind.student = p.student_id;
        }
        if (p.active) where.push(`i.status IN ${ACTIVE_SQL}`);
        if (p.stuck) {
          where.push("i.status IN ('pending', 'stopping') AND i.updated_at < now() - $after * interval '1 second'");
          bind.after = p.stuck_after_s ?? 60;
        }
        return this.select<InspectedInstance>(
          `SELECT ${I_COLUMNS}, extract(epoch FROM now() - i.updated_at)::integer AS status_age_s
             FROM lab_instances i ${where.length ? "WHERE " + where.join(" AND ") : ""}
            ORDER BY i.updated_at, i.id LIMIT $limit`,
          bind,
        );
      },
    },

    /** One sweep now (tests, operators in the REPL); the timer does the same every LAB_SWEEP_INTERVAL_MS. */
    sweep: {
      access: { roles: SYSTEM_ONLY },
      handler(): Promise<SweepReport> {
        return this.sweep();
      },
    },
  },

  events: {
    /** The student left the course: their instances in it stop (as the system: nobody asked in person). */
    [COURSE_EVENTS.studentRemoved]: {
      async handler(ctx: Context<CourseStudentChanged>) {
        const { course_id, student_id } = ctx.params;
        const rows = await this.select<{ id: number }>(
          `SELECT id FROM lab_instances WHERE course_id = $course AND student_id = $student AND status IN ('pending', 'running')`,
          { course: course_id, student: student_id },
        );
        for (const { id } of rows) {
          try {
            await ctx.call(
              "lab-instances.stop",
              { id },
              { meta: { user: systemPrincipal(`student ${student_id} removed from course ${course_id}`) } },
            );
          } catch (err) {
            // Ended meanwhile (409) or another node of this service got there first: nothing left to do.
            const code = (err as { code?: number }).code;
            if (code !== 409 && code !== 404) throw err;
          }
        }
        if (rows.length > 0) {
          this.logger.info(
            `Student ${student_id} removed from course ${course_id}: stopping lab instance(s) ${rows.map((r) => r.id).join(", ")}`,
          );
        }
      },
    },
  },

  methods: {
    /** Lock the instance, decide, write, enqueue; announce after the commit. null: no such instance. */
    async transition(id: number, event: InstanceEvent, opts: TransitionOptions = {}) {
      const result = await this.sequelize().transaction(async (transaction) => {
        const row = await this.selectOne<LockedRow>(
          `SELECT ${I_COLUMNS}, ${NAME_COLUMNS}, ${OWNER_COLUMN}, l.max_lifetime_s AS lab_max_lifetime_s
             FROM lab_instances i ${VIEW_JOINS}
            WHERE i.id = $id FOR UPDATE OF i`,
          { id },
          transaction,
        );
        if (!row) return null;
        const skipped = opts.skip?.(row) ?? null;
        const outcome: Outcome = skipped ? { ignored: skipped } : decide(row.status, event);
        const written = await this.applyOutcome(transaction, row, outcome, opts);
        return { before: row.status, outcome, courseOwnerId: row.course_owner_id, ...written };
      });
      if (result) {
        const changed = result.changed ? [{ ...result.row, course_owner_id: result.courseOwnerId }] : [];
        this.announce(changed, result.enqueued);
        if (result.changed) this.logTransition(result.before, result, opts.taskId);
      }
      return result;
    },

    /** Writes one decided outcome for a row locked in `t`. */
    async applyOutcome(t: Transaction, row: LockedRow, outcome: Outcome, opts: TransitionOptions = {}) {
      const { start } = opts;
      const sequelize = this.sequelize();
      const { config } = platformOf(this.broker);
      let current: LabInstanceView = row;
      // The names do not change with the status: carried over from the locked read.
      const named = (r: LabInstanceRow): LabInstanceView => ({
        ...r,
        lab_name: row.lab_name,
        course_name: row.course_name,
      });
      let changed = false;
      let wrote = false;
      if (outcome.to) {
        const set = ["status = $to"];
        const bind: Record<string, unknown> = { id: row.id, from: row.status, to: outcome.to };
        if (outcome.to === "running") {
          if (!start) throw new Error("a move to running needs the start result");
          set.push(
            "k8s_pod_name = $pod",
            "connection_url = $url",
            "connection_port = $port",
            "started_at = now()",
            "expires_at = now() + $lifetime::integer * interval '1 second'",
          );
          Object.assign(bind, {
            pod: start.k8s_pod_name,
            url: start.connection_url,
            port: start.port,
            lifetime: lifetimeSeconds(row.lab_max_lifetime_s, config.labMaxLifetimeS),
          });
        }
        if (outcome.error !== undefined) {
          set.push("error = $error");
          bind.error = outcome.error;
        }
        if (outcome.podGone) set.push("stopped_at = COALESCE(stopped_at, now())");
        // Conditional on the status decided from: belt and braces next to the row lock.
        const rows = await this.select<LabInstanceRow>(
          `UPDATE lab_instances SET ${set.join(", ")} WHERE id = $id AND status = $from RETURNING ${COLUMNS}`,
          bind,
          t,
        );
        if (rows.length === 0) throw conflict(`Lab instance ${row.id} changed meanwhile; try again`);
        current = named(rows[0]);
        changed = true;
        wrote = true;
      } else if (outcome.podGone && row.stopped_at === null) {
        const rows = await this.select<LabInstanceRow>(
          `UPDATE lab_instances SET stopped_at = now() WHERE id = $id AND status = $from RETURNING ${COLUMNS}`,
          { id: row.id, from: row.status },
          t,
        );
        if (rows[0]) current = named(rows[0]);
        wrote = rows.length > 0;
      }
      let enqueued = false;
      let enqueuedTaskId: string | undefined;
      if (outcome.enqueue) {
        enqueuedTaskId = await enqueueTask(sequelize, t, {
          name: outcome.enqueue,
          kwargs: { lab_instance_id: row.id },
          labInstanceId: row.id,
          queue: config.celeryQueue,
          traceparent: opts.traceparent,
        });
        enqueued = true;
        wrote = true;
      }
      return { row: publicInstance(current), changed, enqueued, wrote, enqueuedTaskId };
    },

    /** After a commit: the lifecycle line of a status change, and the start duration once running. */
    logTransition(before: InstanceStatus, t: Omit<Transition, "before" | "outcome">, taskId?: string) {
      const row = t.row;
      if (row.status === "running" && before === "pending" && row.started_at) {
        const ms = new Date(row.started_at).getTime() - new Date(row.created_at).getTime();
        this.startDuration.observe(Math.max(0, ms / 1000));
      }
      this.logger.info({
        msg: `lab instance ${row.id}: ${before} → ${row.status}`,
        event: "lab_status_changed",
        instance_id: row.id,
        from: before,
        to: row.status,
        task_id: taskId,
        enqueued_task_id: t.enqueuedTaskId,
        error: row.error ?? undefined,
      });
    },

    /** After a commit: tell SSE streams (every gateway node) and wake the outbox relay. */
    announce(changed: Announced[], enqueued: boolean) {
      for (const row of changed) {
        broadcastCommitted(this, STATUS_CHANGED_EVENT, {
          ...publicInstance(row),
          course_owner_id: row.course_owner_id,
        } satisfies StatusChanged);
      }
      if (enqueued) broadcastCommitted(this, TASKS_ENQUEUED_EVENT, {} satisfies TasksEnqueued);
    },

    /**
     * pending past LAB_START_TIMEOUT_S → failed (+ cleanup_lab); running past expires_at → expired
     * (+ cleanup_lab). One node at a time: a transaction-scoped advisory try-lock, so a node that finds it
     * taken skips the round rather than queueing behind it; SKIP LOCKED and the per-row rules keep even
     * overlapping sweeps correct. Concurrent calls in this process share one sweep.
     */
    sweep() {
      if (this.sweeping) return this.sweeping;
      const { config } = platformOf(this.broker);
      const run = async (): Promise<SweepReport> => {
        const report: SweepReport = { swept: false, timed_out: [], expired: [] };
        const changed: Announced[] = [];
        const transitions: {
          before: InstanceStatus;
          written: Omit<Transition, "before" | "outcome" | "courseOwnerId">;
        }[] = [];
        await this.sequelize().transaction(async (transaction) => {
          const lock = await this.selectOne<{ locked: boolean }>(
            "SELECT pg_try_advisory_xact_lock($key::bigint) AS locked",
            { key: SWEEP_LOCK },
            transaction,
          );
          if (!lock?.locked) return;
          report.swept = true;
          const rounds: { sql: string; bind: Record<string, unknown>; event: InstanceEvent; ids: number[] }[] = [
            {
              sql: `i.status = 'pending' AND i.created_at < now() - $timeout::integer * interval '1 second'
                    ORDER BY i.created_at`,
              bind: { timeout: config.labStartTimeoutS },
              event: { kind: "start_timed_out", timeoutS: config.labStartTimeoutS },
              ids: report.timed_out,
            },
            {
              sql: `i.status = 'running' AND i.expires_at < now() ORDER BY i.expires_at`,
              bind: {},
              event: { kind: "lifetime_exceeded" },
              ids: report.expired,
            },
          ];
          for (const round of rounds) {
            const rows = await this.select<LockedRow>(
              `SELECT ${I_COLUMNS}, ${NAME_COLUMNS}, ${OWNER_COLUMN}, NULL::integer AS lab_max_lifetime_s
                 FROM lab_instances i ${VIEW_JOINS}
                WHERE ${round.sql} LIMIT ${SWEEP_BATCH} FOR UPDATE OF i SKIP LOCKED`,
              round.bind,
              transaction,
            );
            for (const row of rows) {
              const written = await this.applyOutcome(transaction, row, decide(row.status, round.event));
              if (written.changed) {
                changed.push({ ...written.row, course_owner_id: row.course_owner_id });
                transitions.push({ before: row.status, written });
                round.ids.push(row.id);
              }
            }
          }
        });
        this.announce(changed, changed.length > 0);
        for (const { before, written } of transitions) this.logTransition(before, written);
        if (changed.length > 0) {
          this.logger.info(
            `Sweep: ${report.timed_out.length} start(s) timed out [${report.timed_out.join(", ")}], ` +
              `${report.expired.length} lifetime(s) ran out [${report.expired.join(", ")}]; cleanup_lab scheduled`,
          );
        }
        return report;
      };
      this.sweeping = run().finally(() => {
        this.sweeping = null;
      });
      return this.sweeping;
    },
  },

  created() {
    this.sweepTimer = null;
    this.sweeping = null;
    this.startDuration = histogram(this.broker, METRIC.labStartDuration);
  },

  started() {
    const { config } = platformOf(this.broker);
    // Active instances by status, read at scrape time (the status index; finished ones are history, not a gauge).
    addCollector(this.broker, "lab_instances", async () => {
      const rows = await this.select<{ status: InstanceStatus; n: string }>(
        `SELECT status, count(*) AS n FROM lab_instances WHERE status IN ${ACTIVE_SQL} GROUP BY status`,
        {},
      );
      const counts = new Map(rows.map((r) => [r.status, Number(r.n)]));
      return [
        {
          name: "lab_instances",
          help: "Lab instances that hold (or will soon hold) a pod, by status",
          type: "gauge",
          samples: ACTIVE_STATUSES.map((status) => ({ labels: { status }, value: counts.get(status) ?? 0 })),
        },
      ];
    });
    this.sweepTimer = setInterval(() => {
      this.sweep().catch((err: unknown) =>
        this.logger.error("Sweep failed:", err instanceof Error ? err.message : String(err)),
      );
    }, config.labSweepIntervalMs);
    this.sweepTimer.unref();
  },

  async stopped() {
    removeCollector(this.broker, "lab_instances");
    if (this.sweepTimer) clearInterval(this.sweepTimer);
    this.sweepTimer = null;
    // The pool closes after the services stop: let a running sweep finish first.
    await this.sweeping?.catch(() => undefined);
  },
};

export default LabInstancesService;
