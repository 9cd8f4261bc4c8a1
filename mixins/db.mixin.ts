/**
 * moleculer-db over the broker's shared Sequelize pool. Migrations own the schema: models are defined on
 * the existing pool and never synced. The generic CRUD actions of moleculer-db are removed: every action a
 * service exposes is written and access-checked by that service.
 */
import type { Context, Service, ServiceBroker, ServiceSchema } from "moleculer";
import DbService from "moleculer-db";
import SequelizeDbAdapter from "moleculer-db-adapter-sequelize";
import { QueryTypes, type ModelStatic, type Model, type Sequelize, type Transaction } from "sequelize";
import { platformOf } from "../services/runtime/platform";
import { parseListQuery, type FilterKind, type ListQuery, type ListSpec } from "../services/shared/listing";
import { validationError } from "../services/shared/errors";

type DefineModel = (sequelize: Sequelize) => ModelStatic<Model>;

class SharedSequelizeAdapter extends SequelizeDbAdapter {
  private readonly define: DefineModel;
  private host!: Service & { model?: ModelStatic<Model> };
  // Fields the base adapter's methods read.
  declare db: Sequelize;
  declare model: ModelStatic<Model>;

  constructor(define: DefineModel) {
    super({});
    this.define = define;
  }

  override init(broker: ServiceBroker, service: Service): void {
    this.host = service;
    super.init(broker, service);
  }

  override async connect(): Promise<void> {
    const { sequelize } = platformOf(this.host.broker);
    this.db = sequelize;
    this.model = this.define(sequelize);
    this.host.model = this.model;
  }

  /** The pool belongs to the broker: it is closed once, after every service stopped. */
  override async disconnect(): Promise<void> {}
}

const DISABLED_DB_ACTIONS = ["find", "count", "list", "create", "insert", "get", "update", "remove"] as const;

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

/** Query helpers every DB service gets; SQL text is always constant, values always bound. */
export type DbMethods = {
  /** From moleculer-db: drops this service's cached answers (and tells other nodes). */
  clearCache(): Promise<void>;
  /** Drops another service's cached answers after a write it did not make (on every node). */
  invalidateCache(service: string): Promise<void>;
  sequelize(): Sequelize;
  select<T extends object>(sql: string, bind?: Record<string, unknown>, transaction?: Transaction): Promise<T[]>;
  selectOne<T extends object>(sql: string, bind?: Record<string, unknown>, transaction?: Transaction): Promise<T | null>;
  selectPage<T extends object>(
    select: string,
    fromWhere: string,
    bind: Record<string, unknown>,
    q: PageQuery,
  ): Promise<Page<T>>;
};

const dbMethods: Omit<DbMethods, "clearCache"> & ThisType<Service & DbMethods> = {
  async invalidateCache(service: string) {
    await this.broker.cacher?.clean(`${service}.**`);
    this.broker.broadcast(`cache.clean.${service}`);
  },
  sequelize(): Sequelize {
    return platformOf(this.broker).sequelize;
  },
  async select<T extends object>(sql: string, bind: Record<string, unknown> = {}, transaction?: Transaction): Promise<T[]> {
    return this.sequelize().query<T>(sql, { bind, type: QueryTypes.SELECT, transaction });
  },
  async selectOne<T extends object>(sql: string, bind: Record<string, unknown> = {}, transaction?: Transaction): Promise<T | null> {
    const rows = await this.select<T>(sql, bind, transaction);
    return rows[0] ?? null;
  },
  /** One query per page: the total rides along as a window count (a second query only past the end). */
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
    const items = rows.map(({ __total: _t, ...rest }) => rest as unknown as T);
    return { items, total, offset: q.offset, limit: q.limit };
  },
};

export function DbMixin(define: DefineModel): Partial<ServiceSchema> {
  return {
    mixins: [DbService],
    adapter: new SharedSequelizeAdapter(define),
    // moleculer-db insists on a model definition; ours comes from `define`.
    model: { name: "shared" },
    actions: Object.fromEntries(DISABLED_DB_ACTIONS.map((a) => [a, false])),
    methods: dbMethods,
    events: {
      // moleculer-db broadcasts `cache.clean.<service>` after a write. A shared cacher (Redis) is already
      // clean; a node-local one (Memory, e.g. a cluster without CACHER) must drop its copies itself.
      "cache.clean.*"(this: Service, ctx: Context) {
        const cacher = this.broker.cacher;
        if (!cacher || ctx.nodeID === this.broker.nodeID || platformOf(this.broker).config.cacher) return;
        const service = (ctx.eventName ?? "").slice("cache.clean.".length);
        if (service === this.name) return cacher.clean(`${service}.**`);
      },
    },
  } as unknown as Partial<ServiceSchema>;
}

/** Moleculer params for a list action: the values are checked by parseListQuery, which knows the 422 shape. */
export function listParams(filters: readonly string[]): Record<string, { type: "any"; optional: true }> {
  const names = ["offset", "limit", "sort", ...filters];
  return Object.fromEntries(names.map((n) => [n, { type: "any", optional: true } as const]));
}

export function parseListOrThrow<const S extends string, const F extends Record<string, FilterKind>>(
  params: object,
  spec: ListSpec<S, F>,
): ListQuery<S, F> {
  const r = parseListQuery(params as Record<string, unknown>, spec);
  if (!r.ok) throw validationError(r.problems);
  return r.value;
}
