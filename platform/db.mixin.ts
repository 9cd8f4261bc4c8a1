/**
 * Query helpers over the broker's shared Sequelize pool (raw SQL, bound values), the cache invalidation
 * every writer awaits, and the list-query plumbing. Migrations own the schema; there are no ORM models:
 * every action a service exposes is written and access-checked by that service.
 */
import type { Context, Service, ServiceBroker, ServiceSchema } from "moleculer";
import type { Sequelize, Transaction } from "sequelize";
import { coherentCacherOf, readThrough } from "./coherent-cache";
import { platformOf } from "./platform";
import { statementRunnerOf } from "./db";
import { listQuerySchemas, parseListQuery, type FilterKind, type ListQuery, type ListSpec } from "../lib/listing";
import { validationError } from "./errors";
import { SYSTEM_ONLY } from "../lib/access.rules";
import { systemPrincipal, type RequestMeta } from "../lib/principal";

export interface PageQuery {
  offset: number;
  limit: number;
  /** Already allow-listed column and direction. */
  sort: { field: string; direction: "ASC" | "DESC" };
}

export interface Page<T> {
  items: T[];
  total: number;
  offset: number;
  limit: number;
}

/**
 * Which cached answers read each table: a write to a table invalidates these scopes (service names) before
 * it answers. The one place to look when a new cached action reads a table, or a new table is written.
 * - courses: GET /courses, /courses/{id}, /courses/{id}/labs (rows, ownership, assignment).
 * - access: permission decisions (access.check) over ownership, assignment, attachment and lab status.
 * - users are cached by auth alone, which invalidates its own keys (services/auth/auth.service.ts).
 */
export const CACHES_READING = {
  courses: ["courses", "access"],
  course_students: ["courses", "access"],
  course_labs: ["courses", "access"],
  labs: ["courses", "access"],
} as const satisfies Record<string, readonly string[]>;
export type CachedTable = keyof typeof CACHES_READING;

/** How long an invalidation waits for another node's node-local cache (a cluster without CACHER). */
const REMOTE_INVALIDATION_TIMEOUT_MS = 5000;

/** Query helpers every DB service gets; SQL text is always constant, values always bound. */
export type DbMethods = {
  /** Drops this service's cached answers on every node, before returning (replaces moleculer-db's broadcast). */
  clearCache(): Promise<void>;
  /**
   * Drops a scope's cached answers (all, or the keys matching `patterns`) on every node, and refuses fills
   * computed before this call. Awaited by writers after their commit, so the write's answer leaves only once
   * no node can serve what it changed.
   */
  invalidateCache(scope: string, patterns?: readonly string[]): Promise<void>;
  /** The writer's side of CACHES_READING: these tables changed (committed); invalidate what reads them. */
  tablesChanged(...tables: CachedTable[]): Promise<void>;
  /** A value through the cache under this service's scope (for answers cached by hand rather than `cache:`). */
  cached<T>(key: string, ttlS: number, compute: () => Promise<T>): Promise<T>;
  sequelize(): Sequelize;
  select<T extends object>(sql: string, bind?: Record<string, unknown>, transaction?: Transaction): Promise<T[]>;
  selectOne<T extends object>(
    sql: string,
    bind?: Record<string, unknown>,
    transaction?: Transaction,
  ): Promise<T | null>;
  selectPage<T extends object>(
    select: string,
    fromWhere: string,
    bind: Record<string, unknown>,
    q: PageQuery,
  ): Promise<Page<T>>;
};

/** Other nodes running `scope` (their node-local caches hold its answers). */
function remoteNodesOf(broker: ServiceBroker, scope: string): string[] {
  // Undefined when no node runs the scope (moleculer's typing omits it: the registry is a Map).
  const list = broker.registry.getActionEndpoints(`${scope}.cacheInvalidate`) as
    ReturnType<ServiceBroker["registry"]["getActionEndpoints"]> | undefined;
  if (!list) return [];
  return list.endpoints.filter((e) => !e.local && e.isAvailable).map((e) => e.id);
}

const dbMethods: DbMethods & ThisType<Service & DbMethods> = {
  clearCache() {
    return this.invalidateCache(this.name);
  },
  async invalidateCache(scope: string, patterns?: readonly string[]) {
    const cacher = coherentCacherOf(this.broker);
    if (!cacher) return;
    const matching = patterns ?? [`${scope}.**`];
    await cacher.invalidate(scope, matching);
    // Redis: every node reads the store just cleaned. Memory: each node running the scope cleans its own,
    // asked by a call rather than an event so that this write answers only after they did.
    if (cacher.shared) return;
    await Promise.all(
      remoteNodesOf(this.broker, scope).map((nodeID) =>
        this.broker
          .call(
            `${scope}.cacheInvalidate`,
            { patterns: matching },
            {
              nodeID,
              timeout: REMOTE_INVALIDATION_TIMEOUT_MS,
              meta: { user: systemPrincipal("cache invalidation") },
            },
          )
          .catch((err: unknown) => {
            // The write is committed; the node's cache is emptied when it reconnects (Moleculer's Memory cacher).
            this.logger.error(
              `cache: node ${nodeID} did not invalidate ${scope} (${err instanceof Error ? err.message : String(err)}); it may serve stale answers until its TTL`,
            );
          }),
      ),
    );
  },
  async tablesChanged(...tables: CachedTable[]) {
    const scopes = new Set(tables.flatMap((t) => CACHES_READING[t]));
    await Promise.all([...scopes].map((scope) => this.invalidateCache(scope)));
  },
  async cached<T>(key: string, ttlS: number, compute: () => Promise<T>): Promise<T> {
    const cacher = coherentCacherOf(this.broker);
    if (!cacher || cacher.connected === false) return compute();
    return readThrough(cacher, this.name, key, ttlS, compute);
  },
  sequelize(): Sequelize {
    return platformOf(this.broker).sequelize;
  },
  async select<T extends object>(
    sql: string,
    bind: Record<string, unknown> = {},
    transaction?: Transaction,
  ): Promise<T[]> {
    // Also inside a transaction (on its connection): Sequelize's query path cost more per statement than the
    // statement, and a start runs ten of them.
    return statementRunnerOf(this.sequelize()).query<T>(sql, bind, transaction);
  },
  async selectOne<T extends object>(
    sql: string,
    bind: Record<string, unknown> = {},
    transaction?: Transaction,
  ): Promise<T | null> {
    const rows = await this.select<T>(sql, bind, transaction);
    return rows[0] ?? null;
  },
  /** One query per page: the total rides along as a window count (a second query only past the end). */
  // eslint-disable-next-line @typescript-eslint/no-unnecessary-type-parameters -- T: the rows the caller's SQL selects
  async selectPage<T extends object>(select: string, fromWhere: string, bind: Record<string, unknown>, q: PageQuery) {
    const rows = await this.select<T & { __total: string }>(
      `SELECT ${select}, count(*) OVER () AS __total ${fromWhere} ORDER BY ${q.sort.field} ${q.sort.direction}, id ${q.sort.direction} LIMIT $__limit OFFSET $__offset`,
      { ...bind, __limit: q.limit, __offset: q.offset },
    );
    let total: number;
    if (rows.length > 0) total = Number(rows[0].__total);
    else {
      const c = await this.selectOne<{ n: string }>(`SELECT count(*) AS n ${fromWhere}`, bind);
      total = Number(c?.n ?? 0);
    }
    const items = rows.map(({ __total: _t, ...rest }) => rest as T);
    return { items, total, offset: q.offset, limit: q.limit };
  },
};

export function DbMixin(): Partial<ServiceSchema> {
  return {
    actions: {
      /** Another node's write asks this node to drop its node-local copies (see invalidateCache). */
      cacheInvalidate: {
        // Callable by other nodes, never published by the gateway; system principal only.
        visibility: "public",
        access: { roles: SYSTEM_ONLY },
        params: { patterns: { type: "array", items: { type: "string", min: 1, max: 200 }, min: 1, max: 50 } },
        async handler(this: Service, ctx: Context<{ patterns: string[] }, RequestMeta>) {
          await coherentCacherOf(this.broker)?.invalidate(this.name, ctx.params.patterns);
        },
      },
    },
    // DbMethods is a closed type; Moleculer's ServiceMethods wants an index signature.
    methods: dbMethods as unknown as ServiceSchema["methods"],
  };
}

/**
 * Moleculer params for a list action: the values are checked by parseListQuery, which knows the 422 shape;
 * each carries its JSON Schema from the same spec for the API document.
 */
export function listParams(
  spec: ListSpec,
): Record<string, { type: "any"; optional: true; openapi: Record<string, unknown> }> {
  return Object.fromEntries(
    Object.entries(listQuerySchemas(spec)).map(([n, openapi]) => [n, { type: "any", optional: true, openapi }]),
  );
}

export function parseListOrThrow<const S extends string, const F extends Record<string, FilterKind>>(
  params: object,
  spec: ListSpec<S, F>,
): ListQuery<S, F> {
  const r = parseListQuery(params as Record<string, unknown>, spec);
  if (!r.ok) throw validationError(r.problems);
  return r.value;
}
