/**
 * Graceful stop of the HTTP side of a gateway node, before its broker stops: for a short lame-duck period
 * every answer carries `Connection: close` (clients stop reusing their sockets), then no new connections (the
 * load balancer's next try goes to another gateway), every request already received is answered, idle
 * keep-alive connections are closed, and only what is still open after the bound is cut. Without this, server.close() waits for idle keep-alive
 * connections forever, and the process ends at its hard-stop timer with requests in flight.
 */
import type { IncomingMessage, Server, ServerResponse } from "node:http";

export interface HttpDrain {
  /** Resolves once every in-flight request is answered, or after timeoutMs (the rest is cut). Idempotent. */
  drain(timeoutMs: number): Promise<void>;
}

/**
 * How long a draining gateway keeps listening while every answer says `Connection: close`. Closing an idle
 * keep-alive socket races a client writing its next request on it (the client sees a reset, and only
 * idempotent requests are retried by proxies); a client that got `Connection: close` opens a new connection,
 * which after the listener closes goes to another gateway.
 */
const LAME_DUCK_MS = 1_000;

/** Called once per request when its answer ended (or its connection went), with when it arrived (performance.now()). */
export type OnAnswered = (req: IncomingMessage, res: ServerResponse, startedAt: number) => void;

export function trackHttpRequests(server: Server, onAnswered: OnAnswered): HttpDrain {
  const inFlight = new Set<ServerResponse>();
  let draining: Promise<void> | undefined;
  /** Set once the listener is closed: only then may the drain end. */
  let settle: (() => void) | undefined;
  const closeWhenIdle = (res: ServerResponse) => {
    if (!res.headersSent) res.setHeader("Connection", "close");
  };
  // Before moleculer-web's own listener, so the answer's duration includes its synchronous routing work. One
  // listener per answer serves both the drain and the metrics/access log.
  server.prependListener("request", (req: IncomingMessage, res: ServerResponse) => {
    const startedAt = performance.now();
    inFlight.add(res);
    if (draining) closeWhenIdle(res);
    res.once("close", () => {
      inFlight.delete(res);
      onAnswered(req, res, startedAt);
      if (settle) {
        server.closeIdleConnections();
        if (inFlight.size === 0) settle();
      }
    });
  });
  return {
    drain(timeoutMs) {
      draining ??= new Promise<void>((resolve) => {
        const timer = setTimeout(() => {
          server.closeAllConnections();
          resolve();
        }, timeoutMs);
        timer.unref();
        for (const res of inFlight) closeWhenIdle(res);
        const stopListening = setTimeout(
          () => {
            settle = () => {
              clearTimeout(timer);
              resolve();
            };
            server.close();
            server.closeIdleConnections();
            if (inFlight.size === 0) settle();
          },
          Math.min(LAME_DUCK_MS, timeoutMs / 2),
        );
        stopListening.unref();
      });
      return draining;
    },
  };
}
