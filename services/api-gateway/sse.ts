/**
 * Server-sent events of lab instances: one instance, `GET /api/v1/lab-instances/{id}/events`, and every instance
 * the caller may see, `GET /api/v1/lab-instances/events` (a dashboard's one stream). One implementation serves
 * both; they differ only in what they send first, whom a broadcast is for and how an event is named.
 *
 * Served from the gateway node that holds the client's connection (a remote producer would never learn that
 * the client went away), fed by the `lab-instances.status-changed` broadcast every gateway node receives.
 *
 * - Authorization: the one-instance stream is exactly GET /lab-instances/{id} (lab-instances.get with the
 *   caller's principal); the caller's stream is GET /lab-instances (its first page), and each broadcast goes to
 *   it only if decideLabInstance (lib/access.rules.ts) lets the caller view that instance. Their 401/404/422 go
 *   out as JSON before the stream starts.
 * - Events: `event: status`, `data:` the instance's public JSON. The one-instance stream's `id:` is the
 *   status's rank in the lifecycle (1 pending, 2 running, 3 stopping, 4 stopped|failed|expired; see statusRank);
 *   the caller's stream names the instance too: `id: <instance id>.<rank>.<updated_at in ms>`. The rank only
 *   grows along the lifecycle, so ids are the same on every node, and a broadcast that overtook an older one
 *   cannot move the client backwards (per instance, each stream remembers the rank it sent).
 * - First: the one-instance stream sends the current status (unless Last-Event-ID already covers it). The
 *   caller's stream sends its active instances (pending, running, stopping; the newest 100), or on a reconnect
 *   with Last-Event-ID every instance it may see changed since that event's time (less RESUME_MARGIN_MS; at
 *   most the newest 100), so a change made while it was away is not lost. Then every change;
 *   `: keep-alive` comments every 15 s keep proxies from closing an idle stream.
 * - After a final status the one-instance stream closes; a client that reconnects having seen the final
 *   status gets 204, which tells EventSource to stop reconnecting. The caller's stream stays open.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Context } from "moleculer";
import {
  LAB_INSTANCES_ACTIONS,
  isFinal,
  statusRank,
  type InstanceStatus,
  type LabInstanceView,
} from "../lab-instances/lab-instances.contract";
import { serviceUnavailable } from "../../platform/errors";
import { realClock, type Clock } from "../../lib/clock";
import { decideLabInstance } from "../../lib/access.rules";
import type { Principal, RequestMeta } from "../../lib/principal";

export const KEEP_ALIVE_MS = 15_000;
/** Reconnect delay EventSource uses after a dropped connection. */
export const RETRY_MS = 3_000;
/**
 * A reconnecting caller's stream re-sends changes from this long before its Last-Event-ID's time: updated_at is
 * the writing transaction's start, so a change committed just after the last event may carry an earlier time.
 */
export const RESUME_MARGIN_MS = 60_000;
/** The caller's stream's first answer is one list page (lab-instances.list's largest). */
const SNAPSHOT_LIMIT = 100;

const EVENTS_PATH = /^\/api\/v1\/lab-instances\/(?:[^/?#]+\/)?events\/?(?:[?#]|$)/;

/** What the stream needs of an instance; the rest of the public JSON rides along untouched. */
export type StreamedInstance = { id: number; status: InstanceStatus } & Partial<Omit<LabInstanceView, "id" | "status">>;
/**
 * A `lab-instances.status-changed` payload: the public JSON plus the owner of the instance's course, which the
 * caller's stream needs to decide visibility and which is not sent on (it is not part of the instance's JSON).
 */
export type StatusChange = StreamedInstance & { course_owner_id?: number };

interface StreamRequest extends IncomingMessage {
  $ctx?: Context<unknown, RequestMeta>;
  $params?: Record<string, unknown>;
}

interface Subscriber {
  deliver(instance: StatusChange): void;
  close(): void;
}

/** How one kind of stream differs from the other (see the module comment). */
interface StreamSpec {
  /** Registers for broadcasts; returns the removal. Called before `initial`, so nothing falls in between. */
  subscribe(sub: Subscriber): () => void;
  /** What goes out first, oldest first; also the access check (its errors are answered as JSON). */
  initial(): Promise<StreamedInstance[]>;
  /** Rank each instance's client has seen already (from Last-Event-ID). */
  seen: Map<number, number>;
  eventId(instance: StreamedInstance): string;
  /** One instance: ends after a final status, 204 when the client already saw one. */
  single: boolean;
}

type CallOptions = { timeout?: number; tracking?: boolean };

export function isEventStreamRequest(req: IncomingMessage): boolean {
  return req.method === "GET" && EVENTS_PATH.test(req.url ?? "");
}

/**
 * Wraps the gateway's rootCallOptions. A stream's request (moleculer-web's `rest` action, in flight for as
 * long as the stream is open) must not be waited for by a graceful stop: the context tracker would hold
 * the gateway's stop for the whole shutdown timeout before the gateway's `stopped` hook gets to close the
 * streams (LabInstanceStreams.closeAll). It must not time out either: `rest` declares `timeout: 0`, and
 * this keeps it so should a default timeout ever be put into rootCallOptions.
 */
export function withEventStreamCallOptions<O extends object>(
  base: (options: O, req: IncomingMessage) => void,
): (options: O, req: IncomingMessage) => void {
  return function (this: unknown, options: O, req: IncomingMessage) {
    base.call(this, options, req);
    if (isEventStreamRequest(req)) {
      const o = options as O & CallOptions;
      o.timeout = 0;
      o.tracking = false;
    }
  };
}

function lastEventId(header: string | string[] | undefined): string | undefined {
  return Array.isArray(header) ? header[header.length - 1] : header;
}

/** Last-Event-ID of a one-instance stream as a rank (0: none or unreadable, i.e. send the current state). */
export function lastEventRank(header: string | string[] | undefined): number {
  const v = lastEventId(header);
  if (v === undefined || !/^\s*[1-9]\d{0,2}\s*$/.test(v)) return 0;
  return Number(v);
}

/** Last-Event-ID of the caller's stream: `<instance id>.<rank>.<updated_at ms>`; null when none or unreadable. */
export function lastUserEvent(
  header: string | string[] | undefined,
): { instanceId: number; rank: number; atMs: number } | null {
  const m = /^\s*([1-9]\d{0,9})\.([1-9]\d{0,2})\.(\d{1,15})\s*$/.exec(lastEventId(header) ?? "");
  return m ? { instanceId: Number(m[1]), rank: Number(m[2]), atMs: Number(m[3]) } : null;
}

/** The caller's stream's event id (see the module comment). */
export function userEventId(instance: StreamedInstance): string {
  const at = instance.updated_at === undefined ? 0 : new Date(instance.updated_at).getTime();
  return `${instance.id}.${statusRank(instance.status)}.${Number.isFinite(at) ? at : 0}`;
}

/** One event; `course_owner_id` (a broadcast's routing fact) is not part of what a client is sent. */
export function formatEvent(instance: StatusChange, id: string = String(statusRank(instance.status))): string {
  const data: Partial<StatusChange> = { ...instance };
  delete data.course_owner_id;
  return `id: ${id}\nevent: status\ndata: ${JSON.stringify(data)}\n\n`;
}

/** May this principal view the instance of a broadcast? The same rule as GET /lab-instances/{id}. */
function sees(p: Principal | null | undefined, change: StatusChange): boolean {
  if (!p || change.student_id === undefined || change.course_owner_id === undefined) return false;
  return (
    decideLabInstance(p, { student_id: change.student_id, course_owner_id: change.course_owner_id }, "view") === "allow"
  );
}

export class LabInstanceStreams {
  private readonly subscribers = new Map<number, Set<Subscriber>>();
  /** The callers' streams, each with its visibility rule. */
  private readonly watchers = new Set<Subscriber>();
  private readonly keepAliveMs: number;

  private readonly clock: Clock;
  constructor(opts: { keepAliveMs?: number; clock?: Clock } = {}) {
    this.keepAliveMs = opts.keepAliveMs ?? KEEP_ALIVE_MS;
    this.clock = opts.clock ?? realClock;
  }

  /** `GET /lab-instances/{id}/events` (moleculer-web alias; `this` there is the gateway, the arrow keeps ours). */
  readonly handler = (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void): void => {
    const r = req as StreamRequest;
    const rawId = r.$params?.id;
    const id = Number(rawId);
    const rank = lastEventRank(req.headers["last-event-id"]);
    this.run(r, res, next, (ctx) => ({
      subscribe: (sub) => (Number.isSafeInteger(id) ? this.subscribe(id, sub) : () => undefined),
      // The same rule as GET /lab-instances/{id}; it also validates the id (422).
      initial: async () => [
        await ctx.call<StreamedInstance, { id: unknown }>(LAB_INSTANCES_ACTIONS.get, { id: rawId }),
      ],
      seen: new Map(Number.isSafeInteger(id) && rank > 0 ? [[id, rank]] : []),
      eventId: (i) => String(statusRank(i.status)),
      single: true,
    }));
  };

  /** `GET /lab-instances/events`: every instance the caller may see. */
  readonly userHandler = (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void): void => {
    const r = req as StreamRequest;
    const resume = lastUserEvent(req.headers["last-event-id"]);
    this.run(r, res, next, (ctx) => ({
      subscribe: (sub) => {
        const principal = ctx.meta.user;
        const watcher: Subscriber = {
          deliver: (i) => {
            if (sees(principal, i)) sub.deliver(i);
          },
          close: () => sub.close(),
        };
        this.watchers.add(watcher);
        return () => this.watchers.delete(watcher);
      },
      // GET /lab-instances under the caller's own principal: its scope is theirs, and anonymous is a 401.
      initial: async () => {
        const query = resume
          ? { updated_since: new Date(resume.atMs - RESUME_MARGIN_MS).toISOString() }
          : { active: "true" };
        const page = await ctx.call<{ items: StreamedInstance[] }, Record<string, unknown>>(
          LAB_INSTANCES_ACTIONS.list,
          {
            ...query,
            sort: "-updated_at",
            limit: SNAPSHOT_LIMIT,
          },
        );
        return [...page.items].reverse();
      },
      seen: new Map(resume ? [[resume.instanceId, resume.rank]] : []),
      eventId: userEventId,
      single: false,
    }));
  };

  /** A status change from the broadcast: to every stream on this node that shows that instance. */
  publish(instance: StatusChange): void {
    for (const s of [...(this.subscribers.get(instance.id) ?? [])]) s.deliver(instance);
    for (const w of [...this.watchers]) w.deliver(instance);
  }

  /** The gateway is stopping: end every stream (clients reconnect, with Last-Event-ID, to another node). */
  closeAll(): void {
    for (const subs of [...this.subscribers.values()]) for (const s of [...subs]) s.close();
    for (const w of [...this.watchers]) w.close();
  }

  get openStreams(): number {
    let n = this.watchers.size;
    for (const subs of this.subscribers.values()) n += subs.size;
    return n;
  }

  private subscribe(id: number, sub: Subscriber): () => void {
    let subs = this.subscribers.get(id);
    if (!subs) this.subscribers.set(id, (subs = new Set()));
    subs.add(sub);
    return () => {
      subs.delete(sub);
      if (subs.size === 0 && this.subscribers.get(id) === subs) this.subscribers.delete(id);
    };
  }

  private run(
    req: StreamRequest,
    res: ServerResponse,
    next: (err?: unknown) => void,
    specOf: (ctx: Context<unknown, RequestMeta>) => StreamSpec,
  ): void {
    const ctx = req.$ctx;
    const served = ctx
      ? this.serve(req, res, specOf(ctx))
      : Promise.reject(new Error("event stream outside a request"));
    served.catch((err: unknown) => {
      // Before the stream started, moleculer-web answers the error as JSON; after, the stream just ends.
      if (!res.headersSent) next(err);
      else if (!res.writableEnded) res.end();
    });
  }

  private async serve(req: StreamRequest, res: ServerResponse, spec: StreamSpec): Promise<void> {
    const ctx = req.$ctx;
    // `as boolean`: the close and finish callbacks flip these while we await; a literal `false` would narrow.
    let done = false as boolean;
    let streaming = false as boolean;
    let clientGone = false as boolean;
    let keepAlive: { cancel(): void } | undefined;
    // Subscribe before reading the current state: a change committed between the read and the
    // subscription is then buffered instead of lost.
    const early: StatusChange[] = [];
    let deliver: (i: StatusChange) => void = (i) => early.push(i);
    const unsubscribe = spec.subscribe({ deliver: (i) => deliver(i), close: () => finish() });
    /** Idempotent: drops the subscription and the keep-alive; ends the response once the stream has started. */
    const finish = () => {
      if (done) return;
      done = true;
      keepAlive?.cancel();
      unsubscribe();
      if (streaming && !res.writableEnded) res.end();
    };
    // Installed before the first await: a client that leaves during the access lookup below must not leave
    // the subscription behind. `res` 'close', not `req` 'close', which Node emits once the request body is read.
    res.on("close", () => {
      clientGone = true;
      finish();
    });

    let initial: StreamedInstance[];
    try {
      initial = await spec.initial();
    } catch (err) {
      finish();
      throw err;
    }

    // Gone during the lookup: nobody to answer. Shutting down (closeAll): 503, the client reconnects elsewhere.
    if (clientGone) return;
    if (done) throw serviceUnavailable("The server is shutting down; reconnect");

    const seen = spec.seen;
    const only = initial.length === 1 ? initial[0] : undefined;
    if (
      spec.single &&
      only !== undefined &&
      isFinal(only.status) &&
      statusRank(only.status) <= (seen.get(only.id) ?? 0)
    ) {
      finish();
      res.writeHead(204);
      res.end();
      return;
    }

    const send = (instance: StatusChange) => {
      if (done) return;
      const rank = statusRank(instance.status);
      // Old or repeated news (a reordered or duplicate broadcast, or what Last-Event-ID says was seen).
      if (rank <= (seen.get(instance.id) ?? 0)) return;
      seen.set(instance.id, rank);
      res.write(formatEvent(instance, spec.eventId(instance)));
      if (spec.single && isFinal(instance.status)) finish();
    };

    streaming = true;
    res.writeHead(200, {
      "Content-Type": "text/event-stream; charset=utf-8",
      "Cache-Control": "no-cache, no-transform",
      Connection: "keep-alive",
      // nginx and friends: pass each event through at once.
      "X-Accel-Buffering": "no",
      ...(ctx?.requestID ? { "X-Request-Id": ctx.requestID } : {}),
    });
    req.socket.setNoDelay(true);
    req.socket.setTimeout(0);
    res.write(`retry: ${RETRY_MS}\n\n`);

    for (const i of initial) send(i);
    for (const i of early) send(i);
    deliver = send;
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- send() above may have finished
    if (!done) {
      keepAlive = this.clock.every(this.keepAliveMs, () => {
        if (!done) res.write(": keep-alive\n\n");
      });
    }
  }
}
