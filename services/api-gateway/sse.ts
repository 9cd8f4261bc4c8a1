/**
 * Server-sent events of one lab instance: `GET /api/v1/lab-instances/{id}/events`.
 *
 * Served from the gateway node that holds the client's connection (a remote producer would never learn that
 * the client went away), fed by the `lab-instances.status-changed` broadcast every gateway node receives.
 *
 * - Authorization: exactly GET /lab-instances/{id} (lab-instances.get with the caller's principal); its
 *   401/404/422 go out as JSON before the stream starts.
 * - Events: `event: status`, `data:` the instance's public JSON, `id:` the status's rank in the lifecycle
 *   (1 pending, 2 running, 3 stopping, 4 stopped|failed|expired; see statusRank). The rank only grows along
 *   the lifecycle, so it is the same on every node, a reconnect's Last-Event-ID says what the client has seen
 *   (only newer news is sent), and a broadcast that overtook an older one cannot move the client backwards.
 * - The first event is the current status (unless Last-Event-ID already covers it); then every change;
 *   `: keep-alive` comments every 15 s keep proxies from closing an idle stream.
 * - After a final status is sent the stream closes. A client that reconnects having seen the final status
 *   gets 204, which tells EventSource to stop reconnecting.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Context } from "moleculer";
import { isFinal, statusRank, type InstanceStatus, type LabInstanceRow } from "../lab-instances/lab-instances.contract";
import { serviceUnavailable } from "../../platform/errors";
import type { RequestMeta } from "../../lib/principal";

export const KEEP_ALIVE_MS = 15_000;
/** Reconnect delay EventSource uses after a dropped connection. */
export const RETRY_MS = 3_000;

const EVENTS_PATH = /^\/api\/v1\/lab-instances\/[^/?#]+\/events\/?(?:[?#]|$)/;

/** What the stream needs of an instance; the rest of the public JSON rides along untouched. */
export type StreamedInstance = { id: number; status: InstanceStatus } & Partial<Omit<LabInstanceRow, "id" | "status">>;

interface StreamRequest extends IncomingMessage {
  $ctx?: Context<unknown, RequestMeta>;
  $params?: Record<string, unknown>;
}

interface Subscriber {
  deliver(instance: StreamedInstance): void;
  close(): void;
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

/** Last-Event-ID as a rank (0: none or unreadable, i.e. send the current state). */
export function lastEventRank(header: string | string[] | undefined): number {
  const v = Array.isArray(header) ? header[header.length - 1] : header;
  if (v === undefined || !/^\s*[1-9]\d{0,2}\s*$/.test(v)) return 0;
  return Number(v);
}

export function formatEvent(instance: StreamedInstance): string {
  return `id: ${statusRank(instance.status)}\nevent: status\ndata: ${JSON.stringify(instance)}\n\n`;
}

export class LabInstanceStreams {
  private readonly subscribers = new Map<number, Set<Subscriber>>();
  private readonly keepAliveMs: number;

  constructor(opts: { keepAliveMs?: number } = {}) {
    this.keepAliveMs = opts.keepAliveMs ?? KEEP_ALIVE_MS;
  }

  /** The moleculer-web alias handler (`this` there is the gateway service; the arrow keeps ours). */
  readonly handler = (req: IncomingMessage, res: ServerResponse, next: (err?: unknown) => void): void => {
    this.serve(req as StreamRequest, res).catch((err: unknown) => {
      // Before the stream started, moleculer-web answers the error as JSON; after, the stream just ends.
      if (!res.headersSent) next(err);
      else if (!res.writableEnded) res.end();
    });
  };

  /** A status change from the broadcast: to every stream of that instance on this node. */
  publish(instance: StreamedInstance): void {
    const subs = this.subscribers.get(instance.id);
    if (!subs) return;
    for (const s of [...subs]) s.deliver(instance);
  }

  /** The gateway is stopping: end every stream (clients reconnect, with Last-Event-ID, to another node). */
  closeAll(): void {
    for (const subs of [...this.subscribers.values()]) for (const s of [...subs]) s.close();
  }

  get openStreams(): number {
    let n = 0;
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

  private async serve(req: StreamRequest, res: ServerResponse): Promise<void> {
    const ctx = req.$ctx;
    if (!ctx) throw new Error("event stream outside a moleculer-web request");
    const rawId = req.$params?.id;
    const id = Number(rawId);

    // `as boolean`: the close and finish callbacks flip these while we await; a literal `false` would narrow.
    let done = false as boolean;
    let streaming = false as boolean;
    let clientGone = false as boolean;
    let keepAlive: NodeJS.Timeout | undefined;
    // Subscribe before reading the current state: a change committed between the read and the
    // subscription is then buffered instead of lost.
    const early: StreamedInstance[] = [];
    let deliver: (i: StreamedInstance) => void = (i) => early.push(i);
    const unsubscribe = Number.isSafeInteger(id)
      ? this.subscribe(id, { deliver: (i) => deliver(i), close: () => finish() })
      : () => undefined;
    /** Idempotent: drops the subscription and the keep-alive; ends the response once the stream has started. */
    const finish = () => {
      if (done) return;
      done = true;
      if (keepAlive) clearInterval(keepAlive);
      unsubscribe();
      if (streaming && !res.writableEnded) res.end();
    };
    // Installed before the first await: a client that leaves during the access lookup below must not leave
    // the subscription behind. `res` 'close', not `req` 'close', which Node emits once the request body is read.
    res.on("close", () => {
      clientGone = true;
      finish();
    });

    let current: StreamedInstance;
    try {
      // The same rule as GET /lab-instances/{id}; it also validates the id (422).
      current = await ctx.call<StreamedInstance, { id: unknown }>("lab-instances.get", { id: rawId });
    } catch (err) {
      finish();
      throw err;
    }

    // Gone during the lookup: nobody to answer. Shutting down (closeAll): 503, the client reconnects elsewhere.
    if (clientGone) return;
    if (done) throw serviceUnavailable("The server is shutting down; reconnect");

    let sentRank = lastEventRank(req.headers["last-event-id"]);
    if (isFinal(current.status) && statusRank(current.status) <= sentRank) {
      finish();
      res.writeHead(204);
      res.end();
      return;
    }

    const send = (instance: StreamedInstance) => {
      if (done) return;
      const rank = statusRank(instance.status);
      // Old or repeated news (a reordered or duplicate broadcast, or what Last-Event-ID says was seen).
      if (rank <= sentRank) return;
      sentRank = rank;
      res.write(formatEvent(instance));
      if (isFinal(instance.status)) finish();
    };

    streaming = true;
    res.writeHead(200, {
      "Content-Type": "text/event-stream; charset=utf-8",
      "Cache-Control": "no-cache, no-transform",
      Connection: "keep-alive",
      // nginx and friends: pass each event through at once.
      "X-Accel-Buffering": "no",
      ...(ctx.requestID ? { "X-Request-Id": ctx.requestID } : {}),
    });
    req.socket.setNoDelay(true);
    req.socket.setTimeout(0);
    res.write(`retry: ${RETRY_MS}\n\n`);

    send(current);
    for (const i of early) send(i);
    deliver = send;
    // eslint-disable-next-line @typescript-eslint/no-unnecessary-condition -- send() above may have finished
    if (!done) {
      keepAlive = setInterval(() => {
        if (!done) res.write(": keep-alive\n\n");
      }, this.keepAliveMs);
      keepAlive.unref();
    }
  }
}
