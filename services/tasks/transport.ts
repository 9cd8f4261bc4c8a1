/**
 * The two seams of the tasks service: where encoded Celery messages go (RabbitMQ, or the simulated runner)
 * and where Celery results come from (Redis, or the simulated runner's in-memory store). The relay and the
 * result consumer are written once against these; the embedded mode swaps the implementations only.
 */
import type { EncodedCeleryTask } from "./celery-protocol";

export type PublisherState =
  /** Not tried yet. */
  | "idle"
  | "connecting"
  | "connected"
  /** RabbitMQ told us to stop publishing (memory or disk alarm). */
  | "blocked"
  | "down"
  /** No broker: the simulated runner takes the messages. */
  | "simulated";

export type PublishOutcome = { ok: true } | { ok: false; error: string };

export interface TaskPublisher {
  state(): PublisherState;
  /** Why the broker is not usable, while it is not. */
  lastError(): string | null;
  /**
   * Resolves when messages can be published now; rejects (quickly: bounded by a connect timeout, and
   * immediately while a reconnect backoff runs) otherwise. Resolves `true` when this call (re)connected.
   */
  ready(): Promise<boolean>;
  /**
   * Publishes every message and resolves, in order, whether the broker confirmed each. Never rejects;
   * bounded by the publish timeout. Resolves only after every message is settled one way or the other.
   */
  publishBatch(messages: readonly EncodedCeleryTask[]): Promise<PublishOutcome[]>;
  close(): Promise<void>;
}

export type ResultSourceState = "connecting" | "connected" | "down" | "simulated";

export interface ResultSource {
  state(): ResultSourceState;
  /**
   * Starts receiving pushed results (the backend's pub/sub): `onResult(taskId, rawJson)` for every
   * result written from now on. Best effort: the reconcile's get() covers whatever push is missed.
   */
  start(onResult: (taskId: string, raw: string) => void): Promise<void>;
  /** Stored results of these tasks (null: none yet), in order. Rejects when the backend is unreachable. */
  get(taskIds: readonly string[]): Promise<(string | null)[]>;
  close(): Promise<void>;
}
