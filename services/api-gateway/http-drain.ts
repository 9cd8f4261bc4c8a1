/**
 * Graceful stop of the HTTP side of a gateway node, before its broker stops: no new connections (the load
 * balancer's next try goes to another gateway), every request already received is answered, keep-alive
 * connections are closed as soon as they are idle (`Connection: close` on the answers still to come), and
 * only what is still open after the bound is cut. Without this, server.close() waits for idle keep-alive
 * connections forever, and the process ends at its hard-stop timer with requests in flight.
 */
import type { IncomingMessage, Server, ServerResponse } from "node:http";

export interface HttpDrain {
  /** Resolves once every in-flight request is answered, or after timeoutMs (the rest is cut). Idempotent. */
  drain(timeoutMs: number): Promise<void>;
}

export function trackHttpRequests(server: Server): HttpDrain {
  const inFlight = new Set<ServerResponse>();
  let draining: Promise<void> | undefined;
  let settle: (() => void) | undefined;
  const closeWhenIdle = (res: ServerResponse) => {
    if (!res.headersSent) res.setHeader("Connection", "close");
  };
  server.on("request", (_req: IncomingMessage, res: ServerResponse) => {
    inFlight.add(res);
    if (draining) closeWhenIdle(res);
    res.once("close", () => {
      inFlight.delete(res);
      if (draining) {
        server.closeIdleConnections();
        if (inFlight.size === 0) settle?.();
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
        settle = () => {
          clearTimeout(timer);
          resolve();
        };
        server.close();
        server.closeIdleConnections();
        for (const res of inFlight) closeWhenIdle(res);
        if (inFlight.size === 0) settle();
      });
      return draining;
    },
  };
}
