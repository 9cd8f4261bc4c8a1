/**
 * Publishes encoded Celery messages to RabbitMQ on a confirm channel (amqplib).
 *
 * - Lazy: connects on the relay's first need (and again after a loss), never at construction; a failed
 *   connect backs off (CONNECT_BACKOFF) and ready() fails fast meanwhile, so a dead broker costs the relay
 *   one refused connect now and then, never a long wait (and never while a DB transaction is open).
 * - Declares each queue like Celery (direct exchange of the queue's name, durable queue, binding) once per
 *   connection, before its first publish: RabbitMQ silently drops what no queue takes.
 * - `mandatory`: if the queue vanished after we declared it (deleted by an operator), the broker returns the
 *   message instead of dropping it; the row then counts as failed and the queue is declared again.
 * - A batch is published pipelined and settled by the broker's confirms, bounded by a publish timeout. A
 *   timeout leaves the connection in an unknown state: it is dropped, and those rows are retried (a message
 *   may then reach the worker twice: delivery is at-least-once, the workers and applyTaskResult are
 *   idempotent on the task id).
 */
import * as amqp from "amqplib";
import { celeryQueueDeclaration, type EncodedCeleryTask } from "./celery-protocol";
import { CONNECT_BACKOFF, backoffDelayMs, errorText } from "./relay.rules";
import type { PublisherState, PublishOutcome, TaskPublisher } from "./transport";

export interface AmqpPublisherOptions {
  url: string;
  /** Shown in RabbitMQ's management UI: which node holds this connection. */
  connectionName: string;
  connectTimeoutMs: number;
  publishTimeoutMs: number;
  /** Called on every state change (the service logs transitions). */
  onStateChange?: (state: PublisherState, error: string | null) => void;
  random?: () => number;
}

class TimeoutError extends Error {}

/** Resolves like `p`, or rejects after `ms`; `onLate` receives `p`'s value if it resolves after the timeout. */
function withTimeout<T>(p: Promise<T>, ms: number, what: string, onLate?: (v: T) => void): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    let done = false;
    const timer = setTimeout(() => {
      done = true;
      reject(new TimeoutError(`${what} timed out after ${ms} ms`));
    }, ms);
    p.then(
      (v) => {
        if (done) onLate?.(v);
        else {
          done = true;
          clearTimeout(timer);
          resolve(v);
        }
      },
      (e: unknown) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        // eslint-disable-next-line @typescript-eslint/prefer-promise-reject-errors -- passes on p's own rejection
        reject(e);
      },
    );
  });
}

export class AmqpPublisher implements TaskPublisher {
  private conn: amqp.ChannelModel | null = null;
  private channel: amqp.ConfirmChannel | null = null;
  /** Queues declared on the current connection. */
  private readonly declared = new Set<string>();
  /** basic.return of the current batch, by correlation id (= task id); it arrives before the message's ack. */
  private readonly returned = new Map<string, string>();
  private connecting: Promise<boolean> | null = null;
  private current: PublisherState = "idle";
  private error: string | null = null;
  private blockedReason: string | null = null;
  private failures = 0;
  private retryAt = 0;
  private closed = false;

  constructor(private readonly opts: AmqpPublisherOptions) {}

  state(): PublisherState {
    return this.current;
  }

  lastError(): string | null {
    return this.error;
  }

  ready(): Promise<boolean> {
    if (this.closed) return Promise.reject(new Error("publisher closed"));
    if (this.channel && this.current === "connected") return Promise.resolve(false);
    if (this.channel && this.current === "blocked") {
      return Promise.reject(new Error(`broker blocks publishing: ${this.blockedReason ?? "resource alarm"}`));
    }
    if (this.connecting) return this.connecting;
    const wait = this.retryAt - Date.now();
    if (wait > 0) {
      return Promise.reject(
        new Error(`${this.error ?? "broker unreachable"} (next connection attempt in ${Math.ceil(wait / 1000)} s)`),
      );
    }
    this.connecting = this.connect().finally(() => {
      this.connecting = null;
    });
    return this.connecting;
  }

  private setState(state: PublisherState, error: string | null): void {
    const changed = state !== this.current || error !== this.error;
    this.current = state;
    this.error = error;
    if (changed) this.opts.onStateChange?.(state, error);
  }

  private async connect(): Promise<boolean> {
    // A reconnect attempt while down stays "down" (to health and logs): only the first connect is "connecting".
    if (this.current === "idle") this.setState("connecting", null);
    let conn: amqp.ChannelModel | null = null;
    try {
      const closeLate = (c: amqp.ChannelModel) => void c.close().catch(() => undefined);
      // `timeout` bounds the TCP connect; withTimeout bounds the AMQP handshake after it too.
      conn = await withTimeout(
        amqp.connect(this.opts.url, {
          timeout: this.opts.connectTimeoutMs,
          // Nagle off (amqplib leaves it on): a publish and its confirm are small frames that must not wait
          // for the previous frame's ACK.
          noDelay: true,
          clientProperties: { connection_name: this.opts.connectionName },
        }),
        this.opts.connectTimeoutMs + 1_000,
        "broker connection",
        closeLate,
      );
      const c = conn;
      // Without an 'error' listener, a broken connection would crash the process.
      c.on("error", (err: unknown) => {
        if (this.conn === c) this.error = errorText(err);
      });
      c.on("close", (err: unknown) => {
        if (this.conn === c) this.lost(err ? errorText(err) : "broker connection closed");
      });
      c.on("blocked", (reason: unknown) => {
        if (this.conn !== c) return;
        this.blockedReason = String(reason);
        this.setState("blocked", `broker blocks publishing: ${String(reason)}`);
      });
      c.on("unblocked", () => {
        if (this.conn !== c) return;
        this.blockedReason = null;
        this.setState("connected", null);
      });
      const ch = await withTimeout(c.createConfirmChannel(), this.opts.connectTimeoutMs, "confirm channel");
      ch.on("error", (err: unknown) => {
        if (this.channel === ch) this.error = errorText(err);
      });
      ch.on("close", () => {
        // A channel error (e.g. a declaration refused) closes only the channel: start over cleanly.
        if (this.channel === ch) this.lost(this.error ?? "broker channel closed");
      });
      ch.on("return", (msg: amqp.Message) => {
        const id = msg.properties.correlationId as unknown;
        // basic.return carries replyCode/replyText; @types/amqplib types only delivery fields.
        const reason = (msg.fields as amqp.MessageFields & { replyText?: string }).replyText ?? "unroutable";
        if (typeof id === "string") this.returned.set(id, `broker returned the message: ${reason}`);
      });
      if (this.closed) throw new Error("publisher closed");
      this.conn = c;
      this.channel = ch;
      this.declared.clear();
      this.failures = 0;
      this.retryAt = 0;
      this.setState("connected", null);
      return true;
    } catch (e) {
      if (conn) void conn.close().catch(() => undefined);
      const msg = errorText(e);
      this.failures += 1;
      this.retryAt = Date.now() + backoffDelayMs(this.failures, CONNECT_BACKOFF, this.opts.random);
      this.setState("down", msg);
      throw new Error(msg, { cause: e });
    }
  }

  /** The connection or channel is gone: forget it; the next ready() reconnects (at once: it was working). */
  private lost(reason: string): void {
    const conn = this.conn;
    this.conn = null;
    this.channel = null;
    this.declared.clear();
    this.blockedReason = null;
    if (conn) void conn.close().catch(() => undefined);
    if (!this.closed) this.setState("down", reason);
  }

  private async declare(ch: amqp.ConfirmChannel, queue: string): Promise<void> {
    if (this.declared.has(queue)) return;
    const d = celeryQueueDeclaration(queue);
    await ch.assertExchange(d.exchange.name, d.exchange.type, d.exchange.options);
    await ch.assertQueue(d.queue.name, d.queue.options);
    await ch.bindQueue(d.binding.queue, d.binding.exchange, d.binding.routingKey);
    this.declared.add(queue);
  }

  async publishBatch(messages: readonly EncodedCeleryTask[]): Promise<PublishOutcome[]> {
    const ch = this.channel;
    if (!ch || this.current !== "connected") {
      const error = this.error ?? "broker not connected";
      return messages.map(() => ({ ok: false, error }));
    }
    try {
      const queues = [...new Set(messages.map((m) => m.routingKey))];
      await withTimeout(
        (async () => {
          for (const q of queues) await this.declare(ch, q);
        })(),
        this.opts.publishTimeoutMs,
        "queue declaration",
      );
    } catch (e) {
      const error = `cannot declare queue: ${errorText(e)}`;
      this.lost(error);
      return messages.map(() => ({ ok: false, error }));
    }

    const pending = messages.map(
      (m) =>
        new Promise<PublishOutcome>((resolve) => {
          const id = m.options.correlationId;
          try {
            ch.publish(m.exchange, m.routingKey, m.content, { ...m.options, mandatory: true }, (err) => {
              const returned = this.returned.get(id);
              this.returned.delete(id);
              if (err) resolve({ ok: false, error: `broker did not confirm: ${errorText(err)}` });
              else if (returned !== undefined) {
                this.declared.delete(m.routingKey);
                resolve({ ok: false, error: returned });
              } else resolve({ ok: true });
            });
          } catch (e) {
            // amqplib throws synchronously on a closed channel.
            resolve({ ok: false, error: errorText(e) });
          }
        }),
    );

    const settled = new Array<PublishOutcome | undefined>(messages.length).fill(undefined);
    pending.forEach((p, i) => void p.then((o) => (settled[i] = o)));
    let timer: NodeJS.Timeout | undefined;
    const timedOut = await Promise.race([
      Promise.all(pending).then(() => false),
      new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(true), this.opts.publishTimeoutMs);
      }),
    ]);
    clearTimeout(timer);
    if (timedOut) this.lost(`publish not confirmed within ${this.opts.publishTimeoutMs} ms`);
    return settled.map(
      (o) => o ?? { ok: false, error: `publish not confirmed within ${this.opts.publishTimeoutMs} ms` },
    );
  }

  async close(): Promise<void> {
    this.closed = true;
    await this.connecting?.catch(() => undefined);
    const conn = this.conn;
    this.conn = null;
    this.channel = null;
    if (conn) await conn.close().catch(() => undefined);
  }
}
