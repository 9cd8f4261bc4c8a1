/**
 * Celery's Redis result backend, read side: results are pushed on pub/sub channels named like their keys
 * (`celery-task-meta-<id>`, PSUBSCRIBE over the pattern) and read back with MGET by the reconcile.
 *
 * Two connections: one in subscriber mode (it can do nothing else), one for commands. ioredis reconnects
 * both on its own and re-subscribes the pattern; while Redis is down get() fails fast (no offline queue on
 * the command connection) and the reconcile simply tries again on its next round.
 * Note: pub/sub is server-wide, not per database: the pattern also sees results of other Celery apps on the
 * same Redis server; the consumer ignores task ids that are not in its outbox.
 */
import Redis from "ioredis";
import { RESULT_CHANNEL_PATTERN, errorText, taskIdFromResultChannel } from "./relay.rules";
import { resultKey } from "./celery-protocol";
import type { ResultSource, ResultSourceState } from "./transport";

export interface RedisResultSourceOptions {
  url: string;
  connectionName: string;
  onStateChange?: (state: ResultSourceState, error: string | null) => void;
}

export class RedisResultSource implements ResultSource {
  private readonly commands: Redis;
  private readonly subscriber: Redis;
  private current: ResultSourceState = "connecting";
  private closed = false;

  constructor(private readonly opts: RedisResultSourceOptions) {
    const common = {
      lazyConnect: true,
      connectionName: opts.connectionName,
      connectTimeout: 5_000,
      // Reconnect forever, backing off to 5 s: results must flow again once Redis is back.
      retryStrategy: (times: number) => Math.min(times * 250, 5_000),
    };
    this.commands = new Redis(opts.url, { ...common, maxRetriesPerRequest: 1, enableOfflineQueue: false });
    // The subscriber keeps its offline queue: the PSUBSCRIBE issued before the first connect must survive it.
    this.subscriber = new Redis(opts.url, { ...common, maxRetriesPerRequest: null });
    for (const client of [this.commands, this.subscriber]) {
      // Without 'error' listeners ioredis logs every failed reconnect as an unhandled error.
      client.on("error", (err: unknown) => this.update(errorText(err)));
      client.on("ready", () => this.update(null));
      client.on("end", () => this.update("connection closed"));
      client.on("close", () => this.update("connection lost"));
    }
  }

  private update(error: string | null): void {
    if (this.closed) return;
    const bothReady = this.commands.status === "ready" && this.subscriber.status === "ready";
    const next: ResultSourceState = bothReady ? "connected" : error === null ? "connecting" : "down";
    if (next !== this.current) {
      this.current = next;
      this.opts.onStateChange?.(next, next === "connected" ? null : error);
    }
  }

  state(): ResultSourceState {
    return this.current;
  }

  start(onResult: (taskId: string, raw: string) => void): Promise<void> {
    this.subscriber.on("pmessage", (_pattern: string, channel: string, message: string) => {
      const id = taskIdFromResultChannel(channel);
      if (id !== null) onResult(id, message);
    });
    // Not awaited past the first attempt: with Redis down the service still starts; ioredis keeps trying.
    this.commands.connect().catch(() => undefined);
    this.subscriber.connect().catch(() => undefined);
    void this.subscriber.psubscribe(RESULT_CHANNEL_PATTERN).catch(() => undefined);
    return Promise.resolve();
  }

  async get(taskIds: readonly string[]): Promise<(string | null)[]> {
    if (taskIds.length === 0) return [];
    if (this.commands.status !== "ready") throw new Error(`result backend not connected (${this.commands.status})`);
    return this.commands.mget(...taskIds.map(resultKey));
  }

  close(): Promise<void> {
    // disconnect(), not quit(): quit waits for a reply that never comes while Redis is down.
    this.closed = true;
    this.commands.disconnect();
    this.subscriber.disconnect();
    return Promise.resolve();
  }
}
