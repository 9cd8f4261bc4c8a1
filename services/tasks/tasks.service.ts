/**
 * tasks: the Celery producer and result consumer (DESIGN "Lab instance lifecycle", "Celery wire format").
 *
 * - Relay: publishes task_outbox rows (written by enqueueTask() in the enqueuing service's transaction) to
 *   RabbitMQ on a confirm channel, marks them published, backs off failed rows. Polls every second and wakes
 *   at once on `tasks.enqueued`. Every node running this service relays; SKIP LOCKED keeps them disjoint.
 * - Result consumer: Celery results pushed on Redis pub/sub, plus a periodic reconcile that reads the result
 *   keys of every published row not applied yet (a push missed while no node listened is applied later).
 *   A final result goes to `lab-instances.applyTaskResult`; the row counts as applied only once that
 *   call resolved.
 * - Embedded (no CELERY_BROKER_URL): the simulated runner takes the same encoded messages and writes
 *   Celery-shaped results into an in-memory store that the same consumer reads.
 */
import { SYSTEM_ONLY } from "../../lib/access.rules";
import type { Context, ServiceSchema, Service } from "moleculer";
import { QueryTypes } from "sequelize";
import { platformOf } from "../../platform/platform";
import { conflict, notFound } from "../../platform/errors";
import { systemPrincipal, type RequestMeta } from "../../lib/principal";
import { AmqpPublisher } from "./amqp-publisher";
import {
  canonicalKwargs,
  celeryTaskFullName,
  encodeCeleryTask,
  isCeleryTaskName,
  parseCeleryResult,
  type CeleryResult,
  type EncodedCeleryTask,
} from "./celery-protocol";
import {
  TASKS_ENQUEUED_EVENT,
  awaitingResults,
  claimDueRows,
  leaseResult,
  listOutbox,
  makeWaitingRowsDue,
  markApplyFailed,
  markFailed,
  markPublished,
  markResultApplied,
  probeOutbox,
  releaseLease,
  requeueUnfinished,
  retryOutboxRow,
  settleExpiredResults,
  type AwaitingRow,
  type OutboxEntry,
  type OutboxRow,
  type PublishFailure,
} from "./outbox";
import { Pump } from "./pump";
import { RedisResultSource } from "./redis-results";
import {
  APPLY_BACKOFF,
  PUBLISH_BACKOFF,
  backoffDelayMs,
  decideResult,
  errorText,
  isReadyState,
  isTransientCallError,
} from "./relay.rules";
import { LAB_INSTANCES_ACTIONS, type ApplyTaskResultParams } from "../lab-instances/lab-instances.contract";
import { MemoryResultStore, SimulatedRunner } from "./simulated-runner";
import type { PublisherState, ResultSource, ResultSourceState, TaskPublisher } from "./transport";

export interface TasksSettings {
  relay: {
    /** Poll for due rows this often even without a `tasks.enqueued` event. */
    pollIntervalMs: number;
    /** Rows claimed (and published pipelined) per transaction. */
    batchSize: number;
    /** Longest wait for the broker's confirms of one batch; the claiming transaction is open meanwhile. */
    publishTimeoutMs: number;
    connectTimeoutMs: number;
  };
  results: {
    reconcileIntervalMs: number;
    /** Result keys read per MGET. */
    pageSize: number;
    /** Apply calls in flight at once during a reconcile. */
    concurrency: number;
    /** One node's exclusive right to apply a result; must outlast applyTimeoutMs. */
    leaseS: number;
    applyTimeoutMs: number;
    /** Stop waiting for a result this long after publishing (Celery's result_expires default: one day). */
    horizonS: number;
  };
  simulated: {
    /** How long a simulated task "runs" before its result is written. */
    delayMs: number;
  };
}

export const DEFAULT_TASKS_SETTINGS: TasksSettings = {
  relay: { pollIntervalMs: 1_000, batchSize: 100, publishTimeoutMs: 5_000, connectTimeoutMs: 5_000 },
  results: {
    reconcileIntervalMs: 3_000,
    pageSize: 500,
    concurrency: 16,
    leaseS: 60,
    applyTimeoutMs: 30_000,
    horizonS: 86_400,
  },
  simulated: { delayMs: 1_500 },
};

export interface TasksHealth {
  /** "simulated" in embedded mode. */
  broker: PublisherState;
  broker_error: string | null;
  result_backend: ResultSourceState | "not_configured";
  /** Rows this node published / failed to publish since it started. */
  relay: RelayStats;
  outbox: {
    unpublished: number;
    /** Age of the oldest unpublished row, seconds (0 when none). */
    oldest_unpublished_s: number;
    awaiting_result: number;
  } | null;
}

/** What one relay round did (debug logs, tests). */
export interface RelayStats {
  published: number;
  failed: number;
}

type TasksVars = {
  publisher: TaskPublisher;
  results: ResultSource;
  resultsConfigured: boolean;
  relayPump: Pump;
  reconcilePump: Pump;
  /** Result applications in progress on this node (pushes and reconcile may race on one id). */
  applying: Map<string, Promise<void>>;
  relayTotals: RelayStats;
  /**
   * Rows the broker confirmed whose `published_at` was not committed (the database went away between the
   * publish and the commit). Recorded before the next claim, so a database restart does not publish them twice.
   */
  confirmedUnrecorded: Set<string>;
};
type TasksMethods = {
  relayRound(): Promise<boolean>;
  encodeRow(row: OutboxRow): EncodedCeleryTask;
  consumeResult(taskId: string, raw: string): Promise<void>;
  applyResult(taskId: string, result: CeleryResult): Promise<void>;
  reconcileRound(): Promise<boolean>;
};
type TasksThis = Service<TasksSettings> & TasksVars & TasksMethods;

/** amqp://user:secret@host → amqp://user:***@host, for logs. */
function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = "***";
    return u.toString();
  } catch {
    return "<unparseable url>";
  }
}

const TasksService: ServiceSchema<TasksSettings, TasksMethods, TasksVars> = {
  name: "tasks",
  settings: DEFAULT_TASKS_SETTINGS,

  actions: {
    /** Broker and result-backend state for the gateway's health check. System only. */
    health: {
      access: { roles: SYSTEM_ONLY },
      async handler(this: TasksThis, _ctx: Context<Record<string, never>, RequestMeta>): Promise<TasksHealth> {
        let outbox: TasksHealth["outbox"] = null;
        try {
          const [row] = await platformOf(this.broker).sequelize.query<{
            unpublished: string;
            oldest_s: string | null; // extract() is numeric: pg hands it over as a string
            awaiting: string;
          }>(
            // Both counts walk the partial indexes only (rows in flight), not the whole history.
            `SELECT (SELECT count(*) FROM task_outbox WHERE published_at IS NULL) AS unpublished,
                    (SELECT extract(epoch FROM now() - min(created_at)) FROM task_outbox WHERE published_at IS NULL) AS oldest_s,
                    (SELECT count(*) FROM task_outbox WHERE published_at IS NOT NULL AND result_applied_at IS NULL) AS awaiting`,
            { type: QueryTypes.SELECT },
          );
          // Scalar subqueries only: always one row.
          outbox = {
            unpublished: Number(row.unpublished),
            oldest_unpublished_s: Math.max(0, Math.round(Number(row.oldest_s ?? 0))),
            awaiting_result: Number(row.awaiting),
          };
        } catch (e) {
          this.logger.warn(`tasks.health: cannot read the outbox: ${errorText(e)}`);
        }
        return {
          broker: this.publisher.state(),
          broker_error: this.publisher.lastError(),
          result_backend: this.resultsConfigured ? this.results.state() : "not_configured",
          relay: { ...this.relayTotals },
          outbox,
        };
      },
    },

    /** Operators (the REPL's `outbox`): the newest rows, or the unsent ones oldest first. System only. */
    outbox: {
      access: { roles: SYSTEM_ONLY },
      params: {
        unsent: { type: "boolean", optional: true },
        limit: { type: "number", integer: true, min: 1, max: 500, optional: true, convert: true },
      },
      handler(
        this: TasksThis,
        ctx: Context<{ unsent?: boolean; limit?: number }, RequestMeta>,
      ): Promise<OutboxEntry[]> {
        return listOutbox(platformOf(this.broker).sequelize, {
          unsent: ctx.params.unsent ?? false,
          limit: ctx.params.limit ?? 20,
        });
      },
    },

    /**
     * Operators (the REPL's `outbox retry`): publish an unsent row now, or read a published row's result again.
     * 404: no such row; 409: its result is applied already. System only.
     */
    retry: {
      access: { roles: SYSTEM_ONLY },
      params: { id: { type: "uuid" } },
      async handler(
        this: TasksThis,
        ctx: Context<{ id: string }, RequestMeta>,
      ): Promise<{ id: string; retry: string }> {
        const outcome = await retryOutboxRow(platformOf(this.broker).sequelize, ctx.params.id);
        if (outcome === null) throw notFound("Outbox row");
        if (outcome === "done") throw conflict(`Outbox row ${ctx.params.id} is done: its result is applied`);
        // Every relay wakes (SKIP LOCKED keeps them disjoint); a result is re-read by the next reconcile round.
        if (outcome === "publish") await this.broker.broadcast(TASKS_ENQUEUED_EVENT, {});
        return {
          id: ctx.params.id,
          retry: outcome === "publish" ? "published on the next relay round" : "result read again",
        };
      },
    },
  },

  events: {
    [TASKS_ENQUEUED_EVENT]: {
      handler(this: TasksThis) {
        this.relayPump.wake();
      },
    },
  },

  methods: {
    encodeRow(this: TasksThis, row: OutboxRow): EncodedCeleryTask {
      const { config } = platformOf(this.broker);
      if (!isCeleryTaskName(row.task_name)) throw new Error(`unknown task name ${JSON.stringify(row.task_name)}`);
      return encodeCeleryTask({
        id: row.id,
        task: celeryTaskFullName(config.celeryTaskPrefix, row.task_name),
        // jsonb does not keep key order; the bytes (body, kwargsrepr) do.
        kwargs: canonicalKwargs(row.task_name, row.kwargs),
        queue: row.queue,
        origin: this.broker.nodeID,
      });
    },

    /**
     * One relay round. Broker work that may wait (connecting) happens before the transaction; inside it,
     * only the publish itself, bounded by publishTimeoutMs. Returns true when it published something, so
     * the pump looks again at once (more rows, or rows held back behind the ones just published).
     */
    async relayRound(this: TasksThis): Promise<boolean> {
      const { sequelize } = platformOf(this.broker);
      const s = this.settings.relay;
      if (this.confirmedUnrecorded.size > 0) {
        const ids = [...this.confirmedUnrecorded];
        await sequelize.transaction((transaction) => markPublished(sequelize, transaction, ids));
        for (const id of ids) this.confirmedUnrecorded.delete(id);
      }
      const probe = await probeOutbox(sequelize);

      let connectError: string | null = null;
      const st = this.publisher.state();
      // (Re)connect whenever not connected, rows or not: the first round at start logs an outage at once,
      // and health sees a broker that came back. ready() itself paces attempts (CONNECT_BACKOFF).
      if (st !== "connected" && st !== "simulated") {
        try {
          const reconnected = await this.publisher.ready();
          if (reconnected && probe.waiting) {
            const n = await makeWaitingRowsDue(sequelize);
            if (n > 0) this.logger.info(`Celery broker reachable: ${n} waiting task(s) retried now`);
            probe.due = true;
          }
        } catch (e) {
          connectError = errorText(e);
        }
      }
      if (!probe.due) return false;

      let confirmed: string[] = [];
      const stats = await sequelize.transaction(async (transaction): Promise<RelayStats> => {
        const rows = await claimDueRows(sequelize, transaction, s.batchSize);
        if (rows.length === 0) return { published: 0, failed: 0 };
        const failures: PublishFailure[] = [];
        const fail = (row: OutboxRow, error: string) =>
          failures.push({ id: row.id, error, delayMs: backoffDelayMs(row.attempts + 1, PUBLISH_BACKOFF) });

        const sendable: { row: OutboxRow; msg: EncodedCeleryTask }[] = [];
        for (const row of rows) {
          try {
            sendable.push({ row, msg: this.encodeRow(row) });
          } catch (e) {
            // Bad data in the row: no broker will ever take it. Keep it visible (last_error), retried slowly.
            this.logger.error(`outbox row ${row.id} cannot be encoded: ${errorText(e)}`);
            fail(row, `cannot encode: ${errorText(e)}`);
          }
        }
        const published: string[] = [];
        if (connectError !== null) {
          for (const { row } of sendable) fail(row, connectError);
        } else if (sendable.length > 0) {
          const outcomes = await this.publisher.publishBatch(sendable.map((x) => x.msg));
          outcomes.forEach((o, i) => {
            const { row } = sendable[i];
            if (o.ok) published.push(row.id);
            else fail(row, o.error);
          });
        }
        confirmed = published;
        for (const id of published) this.confirmedUnrecorded.add(id);
        await markPublished(sequelize, transaction, published);
        await markFailed(sequelize, transaction, failures);
        return { published: published.length, failed: failures.length };
      });
      for (const id of confirmed) this.confirmedUnrecorded.delete(id);

      this.relayTotals.published += stats.published;
      this.relayTotals.failed += stats.failed;
      if (stats.failed > 0) {
        this.logger.debug(
          `relay: ${stats.published} published, ${stats.failed} failed (${connectError ?? this.publisher.lastError() ?? "see last_error"})`,
        );
      } else if (stats.published > 0) {
        this.logger.debug(`relay: ${stats.published} published`);
      }
      return stats.published > 0;
    },

    /** A result arrived (push or reconcile). One application per task id at a time on this node. */
    consumeResult(this: TasksThis, taskId: string, raw: string): Promise<void> {
      let result: CeleryResult;
      try {
        result = parseCeleryResult(raw);
      } catch (e) {
        this.logger.warn(`ignoring unreadable result of task ${taskId}: ${errorText(e)}`);
        return Promise.resolve();
      }
      // Not final yet (STARTED, RETRY…): nothing to do, and no database round trip for it.
      if (!isReadyState(result.status)) return Promise.resolve();
      const inFlight = this.applying.get(taskId);
      if (inFlight) return inFlight;
      const p = this.applyResult(taskId, result)
        .catch((e: unknown) => this.logger.warn(`result of task ${taskId}: ${errorText(e)} (the reconcile retries)`))
        .finally(() => this.applying.delete(taskId));
      this.applying.set(taskId, p);
      return p;
    },

    async applyResult(this: TasksThis, taskId: string, result: CeleryResult): Promise<void> {
      const { sequelize } = platformOf(this.broker);
      const r = this.settings.results;
      // Null: not one of our tasks (pub/sub is server-wide), already applied, or another node is on it.
      const row = await leaseResult(sequelize, taskId, r.leaseS);
      if (!row) return;

      const decision = decideResult(row, result);
      if (decision.kind === "wait") {
        await releaseLease(sequelize, taskId);
        return;
      }
      if (decision.kind === "settle") {
        this.logger.warn(`result of task ${taskId} (${result.status}) not applied: ${decision.reason}`);
        await markResultApplied(sequelize, taskId, decision.status, decision.reason);
        return;
      }
      const params: ApplyTaskResultParams = decision.params;
      try {
        await this.broker.call(LAB_INSTANCES_ACTIONS.applyTaskResult, params, {
          meta: { user: systemPrincipal("tasks: apply Celery result") },
          timeout: r.applyTimeoutMs,
        });
      } catch (e) {
        const delayMs = backoffDelayMs(row.result_attempts + 1, APPLY_BACKOFF);
        const msg = `lab-instances.applyTaskResult(${params.task_name} ${taskId}, ${params.status}) failed: ${errorText(e)}; retry in ${Math.round(delayMs / 1000)} s`;
        // Unavailable is expected during deploys; anything else is a bug on one side or the other.
        if (isTransientCallError(e)) this.logger.warn(msg);
        else this.logger.error(msg);
        await markApplyFailed(sequelize, taskId, errorText(e), delayMs);
        return;
      }
      await markResultApplied(sequelize, taskId, params.status, null);
      this.logger.debug(
        `applied ${params.status} of ${params.task_name} ${taskId} to lab instance ${params.lab_instance_id}`,
      );
    },

    /** Reads the stored result of every published row still waiting (and not leased) and applies the final ones. */
    async reconcileRound(this: TasksThis): Promise<boolean> {
      const { sequelize } = platformOf(this.broker);
      const r = this.settings.results;
      const settled = await settleExpiredResults(sequelize, r.horizonS);
      if (settled > 0)
        this.logger.warn(`${settled} published task(s) got no result within ${r.horizonS} s: no longer awaited`);
      if (!this.resultsConfigured) return false;
      // Backend down: its state change was logged once; try again next round rather than log every 3 s.
      const rs = this.results.state();
      if (rs !== "connected" && rs !== "simulated") return false;

      let cursor: AwaitingRow | null = null;
      for (;;) {
        const page = await awaitingResults(sequelize, r.horizonS, r.pageSize, cursor);
        if (page.length === 0) break;
        const raws = await this.results.get(page.map((p) => p.id));
        const found = page.flatMap((p, i) => {
          const raw = raws[i];
          return raw ? [{ id: p.id, raw }] : [];
        });
        // Bounded parallelism: each application is a call to lab-instances plus two short updates.
        for (let i = 0; i < found.length; i += r.concurrency) {
          await Promise.all(found.slice(i, i + r.concurrency).map((f) => this.consumeResult(f.id, f.raw)));
        }
        if (page.length < r.pageSize) break;
        cursor = page[page.length - 1]; // not empty: a short page ended the loop above
      }
      return false;
    },
  },

  created(this: TasksThis) {
    // Each instance tunes its own copy (several nodes share one process in tests); Moleculer hands every
    // instance of a mixin-less schema the same settings object.
    this.settings = structuredClone(this.settings);
    const { config } = platformOf(this.broker);
    const { celeryBrokerUrl, celeryResultBackend } = config; // consts: their narrowing reaches the callbacks
    this.applying = new Map();
    this.relayTotals = { published: 0, failed: 0 };
    this.confirmedUnrecorded = new Set();

    if (celeryBrokerUrl) {
      this.publisher = new AmqpPublisher({
        url: celeryBrokerUrl,
        connectionName: `autolabs tasks relay ${this.broker.nodeID}`,
        connectTimeoutMs: this.settings.relay.connectTimeoutMs,
        publishTimeoutMs: this.settings.relay.publishTimeoutMs,
        onStateChange: (state, error) => {
          if (state === "connected") this.logger.info(`Celery broker connected (${redactUrl(celeryBrokerUrl)})`);
          else if (state === "down")
            this.logger.warn(`Celery broker unavailable: ${error ?? "?"}; tasks wait in the outbox`);
          else if (state === "blocked")
            this.logger.warn(`Celery broker ${error ?? "blocks publishing"}; tasks wait in the outbox`);
        },
      });
      if (celeryResultBackend) {
        this.results = new RedisResultSource({
          url: celeryResultBackend,
          connectionName: `autolabs-tasks-results-${this.broker.nodeID}`,
          onStateChange: (state, error) => {
            if (state === "connected")
              this.logger.info(`Celery result backend connected (${redactUrl(celeryResultBackend)})`);
            else if (state === "down")
              this.logger.warn(
                `Celery result backend unavailable: ${error ?? "?"}; results are applied once it is back`,
              );
          },
        });
        this.resultsConfigured = true;
      } else {
        // Nobody writes this store: results of real workers cannot be read without the backend.
        this.results = new MemoryResultStore();
        this.resultsConfigured = false;
      }
    } else {
      const store = new MemoryResultStore();
      this.results = store;
      this.resultsConfigured = true;
      this.publisher = new SimulatedRunner({
        store,
        taskPrefix: config.celeryTaskPrefix,
        publicUrl: config.publicUrl,
        delayMs: this.settings.simulated.delayMs,
        onError: (m) => this.logger.error(m),
      });
    }

    this.relayPump = new Pump({
      name: "relay",
      intervalMs: this.settings.relay.pollIntervalMs,
      round: () => this.relayRound(),
      onError: (e) => this.logger.warn(`relay round failed: ${errorText(e)}`),
    });
    this.reconcilePump = new Pump({
      name: "reconcile",
      intervalMs: this.settings.results.reconcileIntervalMs,
      round: () => this.reconcileRound(),
      onError: (e) => this.logger.warn(`result reconcile failed: ${errorText(e)}`),
    });
  },

  async started(this: TasksThis) {
    const { config, sequelize } = platformOf(this.broker);
    if (this.publisher.state() === "simulated") {
      this.logger.warn(
        `SIMULATED lab runner: no Celery workers, labs do not really start (set CELERY_BROKER_URL and CELERY_RESULT_BACKEND for real workers)`,
      );
      if (config.celeryResultBackend) this.logger.warn("CELERY_RESULT_BACKEND is ignored without CELERY_BROKER_URL");
      // The simulated runner's queue was this process's memory: what it had not finished is gone.
      const n = await requeueUnfinished(sequelize, this.settings.results.horizonS);
      if (n > 0) this.logger.info(`simulated runner: ${n} unfinished task(s) sent again`);
    } else {
      this.logger.info(
        `Celery producer: queue per task row (default ${config.celeryQueue}), task prefix "${config.celeryTaskPrefix}"`,
      );
      if (!this.resultsConfigured) {
        this.logger.warn(
          "CELERY_RESULT_BACKEND is not set: results of the Celery workers cannot be read, lab instances will not leave pending",
        );
      }
    }
    await this.results.start((taskId, raw) => void this.consumeResult(taskId, raw));
    this.relayPump.start();
    this.reconcilePump.start();
  },

  async stopped(this: TasksThis) {
    await Promise.all([this.relayPump.stop(), this.reconcilePump.stop()]);
    await Promise.allSettled([...this.applying.values()]);
    await Promise.allSettled([this.publisher.close(), this.results.close()]);
  },
};

/**
 * Typed above for its own handlers; the registry (main/broker.ts) holds plain schemas, and a
 * schema with required settings does not convert to one directly.
 */
export default TasksService as unknown as ServiceSchema;
