/**
 * The one gate for every action of every service: a broker middleware. Each action declares `access` next
 * to its definition; a service with an action that declares none fails to start (deny by default, caught at
 * boot rather than in production), whether or not it remembered anything: the gate is in the broker options.
 *
 *   access: { roles: STAFF, entity: "Course", load: loadCourse, decide: (p, c) => decideCourse(p, c, "manage") }
 *
 * Order: no principal → 401; role not allowed → 403; `load` the object once (null → 404) and keep it in
 * ctx.locals.entity for the handler; `decide` → 404 (may not know it exists) or 403 (may see, may not act).
 * The system principal (timers, relays, the REPL) passes every rule. A call with no principal at all is
 * refused, so an internal caller must say explicitly that it acts as the system.
 *
 * `check` is for a rule whose facts are not part of an object the action loads (lab-instances' start: the
 * student's assignment, the lab's attachment and status): the gate asks access.check, whose decisions are
 * cached per caller and invalidated by every write to their facts. Where `load` already reads the caller's
 * facts in its one query (courses, labs), `decide` over them is the rule: a `check` there would be a second
 * query for facts already in hand.
 *
 * The gate wraps the handler innermost (it is the first middleware): the validator has checked the params
 * and a cached answer (the cacher sits outside) is keyed by the caller, as it was when this was a mixin.
 * Moleculer's own `$node` service is the broker's, declares nothing and is reachable only inside the cluster.
 */
import type { ActionHandler, ActionSchema, Context, Middleware, Service, ServiceSchema } from "moleculer";
import { Errors } from "moleculer";
// Brings moleculer-web's `rest` property into ActionSchema for every service.
import type {} from "moleculer-web";
import type { Decision } from "../lib/access.rules";
import { ACCESS_CHECK_ACTION, type PermissionAnswer, type PermissionQuery } from "../lib/permission.rules";
import { roleAllowed } from "../lib/access.rules";
import { conflict, forbidden, notFound, unauthorized } from "./errors";
import type { Principal, RequestMeta, Role, UserPrincipal } from "../lib/principal";

export interface AccessDeclaration<E = unknown> {
  /** Anyone, even anonymous, may call (health, the login redirect). Says so explicitly. */
  public?: true;
  /** Roles allowed to call at all; the system principal always may. [] means system only. */
  roles: readonly Role[];
  /** Name of the object for the 404 message ("Course"). */
  entity?: string;
  /** Loads the object the call is about, once; null answers 404. */
  load?: (this: Service, ctx: Context<Record<string, unknown>, RequestMeta>) => Promise<E | null>;
  /** Attribute rule over the loaded object (method syntax: a declaration over any entity type fits ActionSchema). */
  decide?(principal: UserPrincipal, entity: E): Decision;
  /** Attribute rule answered by access.check for the caller (cached); checked before `load`. */
  check?: (ctx: Context<Record<string, unknown>, RequestMeta>) => PermissionQuery;
}

declare module "moleculer" {
  interface ActionSchema {
    access?: AccessDeclaration;
  }
}

/** An action's context: its params and the request's meta (the caller). */
export type Ctx<P = Record<string, unknown>> = Context<P, RequestMeta>;

export interface AccessLocals<E> {
  entity: E;
}

/** The principal of a call that passed the access check. */
export function principalOf(ctx: Context<unknown, RequestMeta>): Principal {
  const p = ctx.meta.user;
  if (!p) throw unauthorized();
  return p;
}

/** The object loaded by the access check (declared `load`). */
// eslint-disable-next-line @typescript-eslint/no-unnecessary-type-parameters -- E: what the action's `load` returns
export function entityOf<E>(ctx: Context): E {
  return (ctx.locals as AccessLocals<E>).entity;
}

function isPrincipal(value: unknown): value is Principal {
  if (!value || typeof value !== "object") return false;
  const v = value as Record<string, unknown>;
  if (v.kind === "system")
    return typeof v.reason === "string" && (v.operator === undefined || typeof v.operator === "string");
  const role = v.role;
  return v.kind === "user" && Number.isInteger(v.id) && (role === "admin" || role === "teacher" || role === "student");
}

/** Calls that carry this access are answered for anyone, even anonymous (health, the login redirect). */
export const PUBLIC = { public: true, roles: [] } as const satisfies AccessDeclaration;

function guard(decl: AccessDeclaration, service: Service, handler: ActionHandler, action: string): ActionHandler {
  if (decl.public) return handler;
  return async function (ctx: Context<Record<string, unknown>, RequestMeta>): Promise<unknown> {
    const principal = ctx.meta.user;
    if (!isPrincipal(principal)) throw unauthorized();
    // The audit trail of operators' calls is on the node that serves them, in its own log stream.
    if (principal.kind === "system" && principal.operator !== undefined) {
      service.logger.info(`operator ${principal.operator} calls ${action} from ${ctx.nodeID ?? "?"}`);
    }
    if (!roleAllowed(principal, decl.roles)) throw forbidden();
    if (decl.check && principal.kind === "user") {
      // ctx.call carries ctx.meta.user: access.check decides for this caller and no one else.
      const answer = await ctx.call<PermissionAnswer, PermissionQuery>(ACCESS_CHECK_ACTION, decl.check(ctx));
      if (answer.decision === "not_found") throw notFound(answer.entity ?? decl.entity ?? "Object");
      if (answer.decision === "forbidden") throw forbidden();
      if (answer.decision === "conflict") throw conflict(answer.detail ?? "Not possible in the present state");
    }
    if (decl.load) {
      const entity = await decl.load.call(service, ctx);
      if (entity === null || entity === undefined) throw notFound(decl.entity ?? "Object");
      (ctx.locals as AccessLocals<unknown>).entity = entity;
      if (decl.decide && principal.kind === "user") {
        const decision = decl.decide(principal, entity);
        if (decision === "not_found") throw notFound(decl.entity ?? "Object");
        if (decision === "forbidden") throw forbidden();
      }
    }
    return handler.call(service, ctx);
  };
}

const isBrokerInternal = (name: string | undefined): boolean => name?.startsWith("$") ?? false;

/** Boot check: every action (after mixins merged) declares who may call it. */
function checkDeclarations(schema: ServiceSchema): void {
  for (const [name, def] of Object.entries(schema.actions ?? {})) {
    if (def === false) continue;
    const full = `${schema.name}.${name}`;
    const access = typeof def === "function" ? undefined : (def as ActionSchema).access;
    if (!access) {
      throw new Errors.ServiceSchemaError(`${full} declares no access rule (deny by default)`, { action: full });
    }
    if (access.decide && !access.load) {
      throw new Errors.ServiceSchemaError(`${full}: access.decide needs access.load`, { action: full });
    }
  }
}

/** Put it first in the broker's middlewares (innermost). */
export const AccessGate: Middleware = {
  name: "AccessGate",
  // The service's name is not set yet when this hook runs: the schema has it.
  serviceCreating(_service: Service, schema: ServiceSchema) {
    if (!isBrokerInternal(schema.name)) checkDeclarations(schema);
  },
  localAction(handler: ActionHandler, action: ActionSchema & { service?: Service }) {
    const service = action.service;
    if (!service || isBrokerInternal(service.name)) return handler;
    // checkDeclarations ran on this service's schema: a missing declaration never gets here.
    if (!action.access) throw new Errors.ServiceSchemaError(`${String(action.name)} declares no access rule`, {});
    return guard(action.access, service, handler, String(action.name));
  },
};
