/**
 * Each HTTP answer of the API port, once: counted and timed for Prometheus (route template, never the raw
 * path), and one access-log line with its request id, user, action, status and duration (5xx at error with the
 * fault, everything else at info). Runs when the answer ended, off the request's own path; built from fields
 * the request already carries, so the cost per answer is two metric updates and one log line.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import type { Context, Logger, ServiceBroker } from "moleculer";
import type { RequestMeta } from "../../lib/principal";
import { METRIC, counter, histogram } from "../../platform/metrics";
import { redactUrl } from "./log-redaction";

export interface ObservedRequest extends IncomingMessage {
  $ctx?: Context<unknown, RequestMeta>;
  $alias?: { fullPath?: string; action?: string | null };
  originalUrl?: string;
  /** The error onError answered with, for the access line of a 5xx. */
  $fault?: Error;
}

const METHODS = new Set(["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]);
/** nginx's code for "the client closed the connection before the answer": no status was sent. */
const CLIENT_CLOSED = 499;

export function answerObserver(
  broker: ServiceBroker,
  logger: Logger,
): (req: IncomingMessage, res: ServerResponse, startedAt: number) => void {
  const requests = counter(broker, METRIC.httpRequests);
  const durations = histogram(broker, METRIC.httpDuration);
  return (request, res, startedAt) => {
    const req = request as ObservedRequest;
    const seconds = (performance.now() - startedAt) / 1000;
    const method = METHODS.has(req.method ?? "") ? (req.method as string) : "OTHER";
    // Unrouted paths share one label: a scanner's random URLs must not create series.
    const route = req.$alias?.fullPath ?? "unmatched";
    const status = res.writableFinished ? res.statusCode : CLIENT_CLOSED;
    requests.increment({ method, route, status });
    // An event stream's duration is how long the client watched, not how fast we answered.
    const stream = String(res.getHeader("content-type") ?? "").startsWith("text/event-stream");
    if (!stream) durations.observe(seconds, { method, route });

    const user = req.$ctx?.meta.user;
    const fault = status >= 500 ? req.$fault : undefined;
    const line = {
      msg: `${method} ${route} ${status}`,
      request_id: (res.getHeader("x-request-id") as string | undefined) ?? req.$ctx?.requestID ?? undefined,
      method,
      path: redactUrl(req.originalUrl ?? req.url ?? ""),
      route,
      action: req.$alias?.action ?? undefined,
      status,
      duration_ms: Math.round(seconds * 1e4) / 10,
      user_id: user ? (user.kind === "user" ? user.id : "system") : null,
      ...(fault ? { error: `${fault.name}: ${fault.message}`, stack: fault.stack } : {}),
    };
    if (status >= 500) logger.error(line);
    else logger.info(line);
  };
}
