/**
 * Labs: a docker image with its resources, and the approval workflow
 * (draft → pending_approval → approved | rejected; see labs.rules.ts).
 *
 * Reads of other services' tables (named here, checked by test/unit/table-ownership.test.ts):
 * - course_labs, courses, course_students (courses): a lab is visible through a course the caller owns or is
 *   assigned to (decideLab's facts, labScopeSql, the course_id filter through courseScopeSql).
 */
import { countActiveInstances, deleteInstances } from "../lab-instances/lab-instances.contract";
import type { ServiceSchema } from "moleculer";
import { entityOf, principalOf, type Ctx } from "../../platform/access-gate";
import { DbMixin, listParams, parseListOrThrow, type DbMethods } from "../../platform/db.mixin";
import {
  ANY_USER,
  STAFF,
  ADMIN_ONLY,
  courseScopeSql,
  decideLab,
  type Decision,
  type Need,
  labScopeSql,
} from "../../lib/access.rules";
import { conflict, forbidden, notFound, validationError } from "../../platform/errors";
import type { ValidationProblem } from "../../lib/validation-problem";
import type { Principal, UserPrincipal } from "../../lib/principal";
import { Lab, type LabRow } from "./labs.rows";
import { pageOf } from "../../lib/schema";
import {
  LAB_LIST_SPEC,
  IMAGE_REFERENCE_SCHEMA,
  REJECTION_REASON_MAX,
  RESOURCES_SCHEMA,
  dockerImageProblems,
  nextStatus,
  parseRejectionReason,
  parseResources,
  putStatus,
  statusAfterEdit,
  transitionPatch,
  type LabAction,
  type LabApprovalState,
  type LabChanges,
} from "./labs.rules";
import { ID_PARAM, multilineTextParam, nameParam, optionalNotNull, type IdParams } from "../../lib/params";

interface LabBody {
  name?: string;
  description?: string;
  docker_image?: unknown;
  resources?: unknown;
  network_isolated?: boolean;
  max_lifetime_s?: number | null;
}
type UpdateParams = IdParams & LabBody & { status?: unknown };
interface RejectParams extends IdParams {
  reason?: unknown;
}

/** A lab as the access check loads it: the row plus whether the caller reaches it through a course. */
export interface LoadedLab extends LabRow {
  caller_reaches: boolean;
}

type LabsMethods = {
  validateBody(body: LabBody, partial: boolean): { changes: LabChanges; problems: ValidationProblem[] };
  transition(ctx: Ctx<IdParams>, action: LabAction, reason?: string): Promise<LabRow>;
  labChanged(): Promise<void>;
  lostRace(id: number): Promise<never>;
};

const NAME = nameParam(200);
/** A lab lives at least a minute and at most 30 days; null means LAB_MAX_LIFETIME_S. */
const LIFETIME = { type: "number", integer: true, min: 60, max: 30 * 86400, optional: true, nullable: true } as const;
const BODY_PARAMS = {
  name: NAME,
  // Nullable column: null clears the description.
  description: { ...multilineTextParam(5000), optional: true, nullable: true },
  // Checked by validateBody with the Kubernetes grammars (every problem at once); documented by their schemas.
  docker_image: { type: "any", openapi: IMAGE_REFERENCE_SCHEMA },
  resources: { type: "any", openapi: RESOURCES_SCHEMA },
  // NOT NULL column: absent means false on create and "unchanged" on edit; null is refused.
  network_isolated: optionalNotNull({ type: "boolean" }),
  max_lifetime_s: LIFETIME,
} as const;
const PARTIAL_BODY_PARAMS = {
  name: optionalNotNull(NAME),
  description: BODY_PARAMS.description,
  docker_image: { type: "any", optional: true, openapi: IMAGE_REFERENCE_SCHEMA },
  resources: { type: "any", optional: true, openapi: RESOURCES_SCHEMA },
  network_isolated: BODY_PARAMS.network_isolated,
  max_lifetime_s: LIFETIME,
  // Only what the edit leaves it, or pending_approval (a submit): see putStatus.
  status: { type: "any", optional: true },
} as const;

export const LAB_COLUMNS =
  "id, name, description, docker_image, resources, network_isolated, max_lifetime_s, status, rejection_reason, created_by, approved_by, created_at, updated_at";
/**
 * The lab still has the approval facts it was read with (status, approver and what runs). Every write that
 * decided from them carries this; resources compare as jsonb (by value, not key order).
 */
const UNCHANGED_APPROVAL = `status = $seen_status AND approved_by IS NOT DISTINCT FROM $seen_approved_by
  AND docker_image = $seen_docker_image AND resources = $seen_resources::jsonb
  AND network_isolated = $seen_network_isolated`;

function seenApproval(lab: LabApprovalState): Record<string, unknown> {
  return {
    seen_status: lab.status,
    seen_approved_by: lab.approved_by,
    seen_docker_image: lab.docker_image,
    seen_resources: JSON.stringify(lab.resources),
    seen_network_isolated: lab.network_isolated,
  };
}

/** The lab named by `id`, with the one fact the rules need about the caller, in one query. */
async function loadLab(this: unknown, ctx: Ctx): Promise<LoadedLab | null> {
  const self = this as DbMethods;
  const p = ctx.meta.user;
  const callerId = p && p.kind === "user" ? p.id : 0;
  return self.selectOne<LoadedLab>(
    `SELECT ${LAB_COLUMNS},
            EXISTS (SELECT 1 FROM course_labs cl JOIN courses c ON c.id = cl.course_id
                     WHERE cl.lab_id = l.id
                       AND (c.owner_id = $caller
                            OR EXISTS (SELECT 1 FROM course_students cs WHERE cs.course_id = c.id AND cs.student_id = $caller))
                   ) AS caller_reaches
       FROM labs l WHERE l.id = $id`,
    { id: Number(ctx.params.id), caller: callerId },
  );
}

const decide =
  (need: Need) =>
  (p: UserPrincipal, lab: LoadedLab): Decision =>
    decideLab(p, { created_by: lab.created_by, status: lab.status, callerReachesViaCourse: lab.caller_reaches }, need);

const LAB_ACCESS = { entity: "Lab", load: loadLab } as const;

function publicLab(l: LabRow): LabRow {
  const { caller_reaches: _c, ...row } = l as LoadedLab;
  return row;
}

function actorRole(p: Principal): "admin" | "teacher" | "student" {
  // The system principal acts with an admin's authority (operators in the REPL).
  return p.kind === "system" ? "admin" : p.role;
}

const LabsService: ServiceSchema<{ rest: string }, LabsMethods & DbMethods> = {
  name: "labs",
  mixins: [DbMixin()],
  settings: { rest: "/labs" },

  actions: {
    list: {
      rest: "GET /",
      openapi: {
        summary: "List the labs the caller may see",
        description: "Admin: all; teacher: their own and approved ones; student: approved labs of their courses.",
        responses: { 200: { description: "One page of labs", body: pageOf(Lab) } },
      },
      access: { roles: ANY_USER },
      params: listParams(LAB_LIST_SPEC),
      async handler(ctx: Ctx) {
        const q = parseListOrThrow(ctx.params, LAB_LIST_SPEC);
        const p = principalOf(ctx);
        const scope = labScopeSql(p);
        const where: string[] = scope.where ? [scope.where] : [];
        const bind: Record<string, unknown> = { ...scope.bind };
        if (q.filters.status !== undefined) {
          where.push("l.status = $status");
          bind.status = q.filters.status;
        }
        if (q.filters.course_id !== undefined) {
          // Only through a course the caller may see (courseScopeSql): filtering by another teacher's course must
          // not tell what that course holds (its approved labs are in the catalogue anyway).
          const courseScope = courseScopeSql(p);
          Object.assign(bind, courseScope.bind);
          where.push(
            "EXISTS (SELECT 1 FROM course_labs f JOIN courses c ON c.id = f.course_id " +
              `WHERE f.lab_id = l.id AND f.course_id = $course${courseScope.where ? ` AND ${courseScope.where}` : ""})`,
          );
          bind.course = q.filters.course_id;
        }
        return this.selectPage<LabRow>(
          LAB_COLUMNS,
          `FROM labs l ${where.length ? "WHERE " + where.join(" AND ") : ""}`,
          bind,
          q,
        );
      },
    },

    create: {
      rest: "POST /",
      openapi: {
        summary: "Create a lab (a draft)",
        responses: { 201: { description: "The new lab", body: Lab, headers: { Location: "The lab's URL" } } },
      },
      access: { roles: STAFF },
      params: BODY_PARAMS,
      async handler(ctx: Ctx<LabBody>) {
        const { changes, problems } = this.validateBody(ctx.params, false);
        if (problems.length > 0) throw validationError(problems);
        const p = principalOf(ctx);
        const [row] = await this.select<LabRow>(
          `INSERT INTO labs (name, description, docker_image, resources, network_isolated, max_lifetime_s, status, created_by)
           VALUES ($name, $description, $image, $resources::jsonb, $isolated, $lifetime, 'draft', $me)
           RETURNING ${LAB_COLUMNS}`,
          {
            name: changes.name,
            description: changes.description ?? "",
            image: changes.docker_image,
            resources: JSON.stringify(changes.resources),
            isolated: changes.network_isolated ?? false,
            lifetime: changes.max_lifetime_s ?? null,
            me: p.kind === "user" ? p.id : null,
          },
        );
        // A new lab is attached to no course yet: no cached answer reads it, nothing to invalidate.
        ctx.meta.$statusCode = 201;
        ctx.meta.$location = `/api/v1/labs/${row.id}`;
        return row;
      },
    },

    get: {
      rest: "GET /:id",
      openapi: { summary: "Get a lab", responses: { 200: { description: "The lab", body: Lab } } },
      access: { roles: ANY_USER, ...LAB_ACCESS, decide: decide("view") },
      params: { id: ID_PARAM },
      handler(ctx: Ctx<IdParams>) {
        return publicLab(entityOf<LoadedLab>(ctx));
      },
    },

    update: {
      rest: "PUT /:id",
      openapi: {
        summary: "Change a lab",
        description:
          "A teacher's change of image, resources or network isolation sends an approved lab back to pending_approval.",
        responses: { 200: { description: "The lab as stored", body: Lab } },
        errors: { 409: "The lab changed meanwhile; reload it and try again" },
      },
      access: { roles: STAFF, ...LAB_ACCESS, decide: decide("manage") },
      params: { id: ID_PARAM, ...PARTIAL_BODY_PARAMS },
      async handler(ctx: Ctx<UpdateParams>) {
        const lab = entityOf<LoadedLab>(ctx);
        const { changes, problems } = this.validateBody(ctx.params, true);
        if (problems.length > 0) throw validationError(problems);
        const role = actorRole(principalOf(ctx));
        const outcome = statusAfterEdit(lab, changes, role);
        if (!outcome.ok) throw forbidden(outcome.detail);
        const asked = putStatus(lab.status, outcome.status, ctx.params.status, role);
        if (!asked.ok) {
          if (asked.code === "INVALID") throw validationError(asked.problems);
          throw asked.code === "FORBIDDEN" ? forbidden(asked.detail) : conflict(asked.detail);
        }
        const set: Record<string, unknown> = { ...changes, status: outcome.status, approved_by: outcome.approved_by };
        // A submit in the same conditional write as the edit: both decided from the lab as loaded.
        if (asked.submit) Object.assign(set, transitionPatch("submit", 0));
        if (changes.resources) set.resources = JSON.stringify(changes.resources);
        const columns = Object.keys(set).filter((k) => set[k] !== undefined);
        // Conditional on every fact statusAfterEdit decided from: a concurrent image change (or approval) makes
        // this write a 409 instead of carrying a stale "approved" over an image nobody reviewed.
        const rows = await this.select<LabRow>(
          `UPDATE labs SET ${columns.map((c) => (c === "resources" ? "resources = $resources::jsonb" : `${c} = $${c}`)).join(", ")}
            WHERE id = $id AND ${UNCHANGED_APPROVAL} RETURNING ${LAB_COLUMNS}`,
          { ...Object.fromEntries(columns.map((c) => [c, set[c]])), id: lab.id, ...seenApproval(lab) },
        );
        const row = rows[0] ?? (await this.lostRace(lab.id));
        if (outcome.reapproval_required) {
          this.logger.info(`Lab ${lab.id} changed ${outcome.changed.join(", ")}: back to pending_approval`);
        }
        await this.labChanged();
        return row;
      },
    },

    remove: {
      rest: "DELETE /:id",
      openapi: {
        summary: "Delete a lab",
        responses: { 204: { description: "Deleted" } },
        errors: { 409: "The lab has active instances" },
      },
      access: { roles: STAFF, ...LAB_ACCESS, decide: decide("manage") },
      params: { id: ID_PARAM },
      async handler(ctx: Ctx<IdParams>) {
        const lab = entityOf<LoadedLab>(ctx);
        await this.sequelize().transaction(async (transaction) => {
          const locked = await this.select(
            "SELECT id FROM labs WHERE id = $id FOR UPDATE",
            { id: lab.id },
            transaction,
          );
          // Deleted by a concurrent request since the access check loaded it: that one answered 204, this one 404.
          if (locked.length === 0) throw notFound("Lab");
          const active = await countActiveInstances(this.sequelize(), { lab_id: lab.id }, transaction);
          if (active > 0) {
            throw conflict(`Lab has ${active} active instance(s); stop them before deleting the lab`);
          }
          // Finished instances are history of this lab only; they go with it.
          await deleteInstances(this.sequelize(), { lab_id: lab.id }, "all", transaction);
          await this.sequelize().query("DELETE FROM labs WHERE id = $id", { bind: { id: lab.id }, transaction });
        });
        await this.labChanged();
        ctx.meta.$statusCode = 204;
        return null;
      },
    },

    submit: {
      rest: "POST /:id/submit",
      openapi: {
        summary: "Submit a lab for approval",
        responses: { 200: { description: "The lab, pending approval", body: Lab } },
        errors: { 409: "The lab is not a draft or rejected, or changed meanwhile" },
      },
      access: { roles: STAFF, ...LAB_ACCESS, decide: decide("manage") },
      params: { id: ID_PARAM },
      handler(ctx: Ctx<IdParams>) {
        return this.transition(ctx, "submit");
      },
    },

    approve: {
      rest: "POST /:id/approve",
      openapi: {
        summary: "Approve a lab",
        responses: { 200: { description: "The lab, approved", body: Lab } },
        errors: { 409: "The lab is not pending approval, or changed meanwhile" },
      },
      access: { roles: ADMIN_ONLY, ...LAB_ACCESS },
      params: { id: ID_PARAM },
      handler(ctx: Ctx<IdParams>) {
        return this.transition(ctx, "approve");
      },
    },

    reject: {
      rest: "POST /:id/reject",
      openapi: {
        summary: "Reject a lab, saying why",
        responses: { 200: { description: "The lab, rejected", body: Lab } },
        errors: { 409: "The lab is not pending approval, or changed meanwhile" },
      },
      access: { roles: ADMIN_ONLY, ...LAB_ACCESS },
      params: {
        id: ID_PARAM,
        // Required, checked by parseRejectionReason (pydantic's messages); `optional` lets it answer them.
        reason: {
          type: "any",
          optional: true,
          openapi: { type: "string", minLength: 1, maxLength: REJECTION_REASON_MAX, description: "Required" },
        },
      },
      handler(ctx: Ctx<RejectParams>) {
        const reason = parseRejectionReason({ reason: ctx.params.reason });
        if (!reason.ok) throw validationError(reason.problems);
        return this.transition(ctx, "reject", reason.value);
      },
    },
  },

  methods: {
    /** Checks image and resources with the Kubernetes grammars; collects every problem at once. */
    validateBody(body: LabBody, partial: boolean) {
      const problems: ValidationProblem[] = [];
      const changes: LabChanges = {};
      if (body.name !== undefined) changes.name = body.name;
      if (body.description !== undefined) changes.description = body.description;
      if (body.network_isolated !== undefined) changes.network_isolated = body.network_isolated;
      if (body.max_lifetime_s !== undefined) changes.max_lifetime_s = body.max_lifetime_s;
      if (body.docker_image !== undefined || !partial) {
        const p = dockerImageProblems(body.docker_image);
        if (p.length > 0) problems.push(...p);
        else changes.docker_image = body.docker_image as string;
      }
      if (body.resources !== undefined || !partial) {
        const r = parseResources(body.resources);
        if (r.ok) changes.resources = r.value;
        else problems.push(...r.problems);
      }
      return { changes, problems };
    },

    async transition(ctx: Ctx<IdParams>, action: LabAction, reason?: string): Promise<LabRow> {
      const lab = entityOf<LoadedLab>(ctx);
      const p = principalOf(ctx);
      const next = nextStatus(lab.status, action, actorRole(p));
      if (!next.ok) throw next.code === "FORBIDDEN" ? forbidden(next.detail) : conflict(next.detail);
      const patch = transitionPatch(action, p.kind === "user" ? p.id : 0, reason);
      // An operator approving from the REPL is not a user: no approver id to record.
      if (p.kind === "system") patch.approved_by = null;
      // Conditional on the status we decided from: a concurrent transition makes this one a 409, not a lost update.
      // Conditional on the lab as loaded, not only its status: an approval is of the image and resources the
      // admin's request read; an edit of a pending lab landing in between makes it a 409, not an approval of it.
      const rows = await this.select<LabRow>(
        `UPDATE labs SET status = $status, approved_by = $approved_by, rejection_reason = $reason
          WHERE id = $id AND ${UNCHANGED_APPROVAL} RETURNING ${LAB_COLUMNS}`,
        {
          status: patch.status,
          approved_by: patch.approved_by,
          reason: patch.rejection_reason,
          id: lab.id,
          ...seenApproval(lab),
        },
      );
      const row = rows[0] ?? (await this.lostRace(lab.id));
      await this.labChanged();
      return row;
    },

    /** After a conditional write matched no row: 404 if the lab went, else 409 (it changed since it was read). */
    async lostRace(id: number): Promise<never> {
      const still = await this.selectOne<{ id: number }>("SELECT id FROM labs WHERE id = $id", { id });
      if (!still) throw notFound("Lab");
      throw conflict("The lab changed meanwhile; reload it and try again");
    },

    /**
     * Courses' cached lab lists and permission decisions read labs (and a deleted lab's course_labs rows):
     * invalidated on every node before the write answers.
     */
    async labChanged() {
      await this.tablesChanged("labs", "course_labs");
    },
  },
};

export default LabsService;
