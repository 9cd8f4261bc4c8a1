/**
 * Helpers of the tasks-service tests: seed lab instances for outbox rows to point at, enqueue through the
 * real enqueueTask(), read messages back from RabbitMQ, a TCP relay to cut the broker link on demand, and a
 * stand-in for the OTHER team's lab-instances service that records applyTaskResult calls.
 */
import { SYSTEM_ONLY } from "../../lib/access.rules";
import { createServer, connect as tcpConnect, type Server, type Socket } from "net";
import type { AddressInfo } from "net";
import * as amqp from "amqplib";
import type { ServiceBroker, Context } from "moleculer";
import { Errors } from "moleculer";
import { QueryTypes, type Sequelize } from "sequelize";
import type { CeleryTaskKwargs, CeleryTaskName } from "../../services/tasks/celery-protocol";
import { celeryQueueDeclaration } from "../../services/tasks/celery-protocol";
import { TASKS_ENQUEUED_EVENT, enqueueTask } from "../../services/tasks/outbox";
import { errorText } from "../../services/tasks/relay.rules";
import type { ApplyTaskResultParams } from "../../services/lab-instances/lab-instances.contract";
import type { Principal } from "../../lib/principal";

export async function waitFor<T>(
  what: string,
  probe: () => T | null | undefined | false | Promise<T | null | undefined | false>,
  timeoutMs = 15_000,
  intervalMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${errorText(last)}` : ""}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}

/** A user, course and lab, and `n` lab instances (status stopped: the outbox does not care). */
export async function seedInstances(sequelize: Sequelize, n: number): Promise<number[]> {
  const q = <T extends object>(sql: string, bind: Record<string, unknown> = {}) =>
    sequelize.query<T>(sql, { bind, type: QueryTypes.SELECT });
  const tag = `${Date.now()}-${Math.random().toString(36).slice(2)}`;
  const [user] = await q<{ id: number }>(`INSERT INTO users (external_id, role) VALUES ($s, 'teacher') RETURNING id`, {
    s: `t-${tag}`,
  });
  const [course] = await q<{ id: number }>(`INSERT INTO courses (name, owner_id) VALUES ('C', $u) RETURNING id`, {
    u: user.id,
  });
  const [lab] = await q<{ id: number }>(
    `INSERT INTO labs (name, docker_image, created_by, status) VALUES ('L', 'nginx:1.27', $u, 'approved') RETURNING id`,
    { u: user.id },
  );
  const rows = await q<{ id: number }>(
    `INSERT INTO lab_instances (lab_id, course_id, student_id, status)
     SELECT $lab, $course, $user, 'stopped' FROM generate_series(1, $n::integer) RETURNING id`,
    { lab: lab.id, course: course.id, user: user.id, n },
  );
  return rows.map((r) => r.id).sort((a, b) => a - b);
}

export interface TaskSpec<N extends CeleryTaskName = CeleryTaskName> {
  name: N;
  kwargs: CeleryTaskKwargs[N];
}

/** Enqueues in ONE transaction, as lab-instances does, then wakes the relays of the given brokers. */
export async function enqueue(
  sequelize: Sequelize,
  queue: string,
  specs: readonly TaskSpec[],
  wake: readonly ServiceBroker[] = [],
): Promise<string[]> {
  const ids = await sequelize.transaction(async (transaction) => {
    const out: string[] = [];
    for (const s of specs) {
      out.push(
        await enqueueTask(sequelize, transaction, {
          name: s.name,
          kwargs: s.kwargs,
          labInstanceId: s.kwargs.lab_instance_id,
          queue,
        }),
      );
    }
    return out;
  });
  await Promise.all(wake.map((b) => b.broadcast(TASKS_ENQUEUED_EVENT)));
  return ids;
}

export const startLab = (id: number, labId = 7, studentId = 1001): TaskSpec<"start_lab"> => ({
  name: "start_lab",
  kwargs: { lab_instance_id: id, lab_id: labId, student_id: studentId },
});
export const stopLab = (id: number): TaskSpec<"stop_lab"> => ({ name: "stop_lab", kwargs: { lab_instance_id: id } });
export const cleanupLab = (id: number): TaskSpec<"cleanup_lab"> => ({
  name: "cleanup_lab",
  kwargs: { lab_instance_id: id },
});

export interface OutboxState {
  id: string;
  task_name: string;
  attempts: number;
  last_error: string | null;
  published_at: Date | null;
  created_at: Date;
  result_applied_at: Date | null;
  result_status: string | null;
  result_attempts: number;
  result_error: string | null;
}

export async function outboxRows(sequelize: Sequelize, ids?: readonly string[]): Promise<OutboxState[]> {
  return sequelize.query<OutboxState>(
    `SELECT id, task_name, attempts, last_error, published_at, created_at, result_applied_at, result_status,
            result_attempts, result_error
       FROM task_outbox ${ids ? "WHERE id = ANY($ids::uuid[])" : ""} ORDER BY created_at, id`,
    { bind: ids ? { ids: [...ids] } : {}, type: QueryTypes.SELECT },
  );
}

export async function allPublished(sequelize: Sequelize, ids: readonly string[]): Promise<boolean> {
  const rows = await outboxRows(sequelize, ids);
  return rows.length === ids.length && rows.every((r) => r.published_at !== null);
}

/** A message as read back from RabbitMQ. */
export interface ReadMessage {
  content: Buffer;
  properties: amqp.MessageProperties;
  headers: Record<string, unknown>;
}

/** A plain amqplib consumer of the test's queues (declared like Celery declares them). */
export class QueueReader {
  private constructor(
    private readonly conn: amqp.ChannelModel,
    private readonly ch: amqp.Channel,
    private readonly queues: Set<string>,
  ) {}

  static async open(url: string): Promise<QueueReader> {
    const conn = await amqp.connect(url);
    const ch = await conn.createChannel();
    return new QueueReader(conn, ch, new Set());
  }

  async declare(queue: string): Promise<void> {
    const d = celeryQueueDeclaration(queue);
    await this.ch.assertExchange(d.exchange.name, d.exchange.type, d.exchange.options);
    await this.ch.assertQueue(d.queue.name, d.queue.options);
    await this.ch.bindQueue(d.binding.queue, d.binding.exchange, d.binding.routingKey);
    this.queues.add(queue);
  }

  async count(queue: string): Promise<number> {
    return (await this.ch.checkQueue(queue)).messageCount;
  }

  /** Takes every message now in the queue (basic.get until empty), in queue order. */
  async drain(queue: string): Promise<ReadMessage[]> {
    this.queues.add(queue);
    const out: ReadMessage[] = [];
    for (;;) {
      const m = await this.ch.get(queue, { noAck: true });
      if (m === false) return out;
      out.push({ content: m.content, properties: m.properties, headers: m.properties.headers ?? {} });
    }
  }

  async close(): Promise<void> {
    for (const q of this.queues) {
      await this.ch.deleteQueue(q).catch(() => undefined);
      await this.ch.deleteExchange(q).catch(() => undefined);
    }
    await this.conn.close().catch(() => undefined);
  }
}

/** A TCP relay in front of RabbitMQ: down() refuses and cuts connections, up() lets them through again. */
export class TcpRelay {
  private server: Server | null = null;
  private readonly sockets = new Set<Socket>();

  private constructor(
    readonly port: number,
    private readonly target: { host: string; port: number },
  ) {}

  /** Reserves a free port; the relay starts down. */
  static async create(target: { host: string; port: number }): Promise<TcpRelay> {
    const probe = createServer();
    await new Promise<void>((r) => probe.listen(0, "127.0.0.1", r));
    const port = (probe.address() as AddressInfo).port;
    await new Promise<void>((r) => probe.close(() => r()));
    return new TcpRelay(port, target);
  }

  async up(): Promise<void> {
    if (this.server) return;
    const server = createServer((client) => {
      const upstream = tcpConnect(this.target.port, this.target.host);
      for (const s of [client, upstream]) {
        this.sockets.add(s);
        s.on("close", () => this.sockets.delete(s));
        s.on("error", () => undefined);
      }
      client.pipe(upstream);
      upstream.pipe(client);
      client.on("close", () => upstream.destroy());
      upstream.on("close", () => client.destroy());
    });
    await new Promise<void>((r) => server.listen(this.port, "127.0.0.1", r));
    this.server = server;
  }

  /** Stops listening and cuts every relayed connection (the broker "vanishes" for the client). */
  async down(): Promise<void> {
    const server = this.server;
    this.server = null;
    for (const s of this.sockets) s.destroy();
    this.sockets.clear();
    if (server) await new Promise<void>((r) => server.close(() => r()));
  }
}

export interface ApplierDouble {
  calls: (ApplyTaskResultParams & { principal: Principal | null | undefined })[];
  /** Make the next `n` calls fail as an unavailable service would. */
  failNext(n: number): void;
}

/**
 * Test double of the other team's `lab-instances` service: just the `applyTaskResult` action of the
 * contract, recording its calls. Registered on a running broker of the test.
 */
export async function registerApplierDouble(broker: ServiceBroker): Promise<ApplierDouble> {
  const calls: ApplierDouble["calls"] = [];
  let failing = 0;
  broker.createService({
    name: "lab-instances",
    actions: {
      applyTaskResult: {
        // The real action's rule: only the system (the relay) applies results.
        access: { roles: SYSTEM_ONLY },
        handler(ctx: Context<ApplyTaskResultParams, { user?: Principal | null }>) {
          if (failing > 0) {
            failing--;
            throw new Errors.MoleculerRetryableError("lab-instances is restarting", 503, "SERVICE_UNAVAILABLE");
          }
          calls.push({ ...ctx.params, principal: ctx.meta.user });
          return { applied: true };
        },
      },
    },
  });
  await broker.waitForServices("lab-instances", 5_000);
  return { calls, failNext: (n) => (failing = n) };
}
