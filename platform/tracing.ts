/**
 * Tracing: Moleculer's tracer (off unless TRACING_EXPORTER is set) with W3C trace context at the edges.
 *
 * Moleculer uses a call's requestID as its trace id and the context id as its span id, and carries both across
 * nodes by itself. So the gateway makes a request's id its trace id: the one of an incoming `traceparent`, or a
 * fresh 128-bit one; and the Celery messages a request causes carry `traceparent` in their headers
 * (services/tasks/celery-protocol.ts), so the workers' spans join the request's trace.
 */
import { randomBytes } from "node:crypto";
import { TracerExporters, type BrokerOptions, type Context, type Span } from "moleculer";
import type { Config } from "./config";

const TRACEPARENT = /^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$/;
const ZERO_TRACE = "0".repeat(32);
const ZERO_SPAN = "0".repeat(16);

export interface TraceParent {
  traceId: string;
  parentId: string;
  sampled: boolean;
}

/** A valid W3C `traceparent` (version 00), else null (the request then starts a trace of its own). */
export function parseTraceparent(header: string | string[] | undefined): TraceParent | null {
  if (typeof header !== "string") return null;
  const m = TRACEPARENT.exec(header.trim().toLowerCase());
  if (!m || m[1] === ZERO_TRACE || m[2] === ZERO_SPAN) return null;
  return { traceId: m[1], parentId: m[2], sampled: (parseInt(m[3], 16) & 1) === 1 };
}

export function newTraceId(): string {
  return randomBytes(16).toString("hex");
}

/** The 32-hex trace id of a request id (ours are a UUID or 32 hex), or undefined when it is not one. */
export function traceIdOf(requestId: string | null | undefined): string | undefined {
  if (!requestId) return undefined;
  const hex = requestId.replace(/-/g, "").toLowerCase();
  return /^[0-9a-f]{32}$/.test(hex) ? hex : undefined;
}

/** A span id as W3C and Zipkin write it: the first 16 hex digits of the context id (Moleculer's Zipkin exporter). */
function spanIdOf(id: string): string {
  return id.replace(/-/g, "").slice(0, 16).toLowerCase();
}

/** The `traceparent` of the span `ctx` runs in, or null when it is not traced (tracing off or not sampled). */
export function traceparentOf(
  ctx: Pick<Context, "requestID" | "id" | "tracing"> & { span?: { id: string } | null },
): string | null {
  if (!ctx.tracing || !ctx.span) return null;
  const traceId = traceIdOf(ctx.requestID);
  const spanId = spanIdOf(ctx.span.id);
  if (!traceId || !/^[0-9a-f]{16}$/.test(spanId)) return null;
  return `00-${traceId}-${spanId}-01`;
}

/**
 * Moleculer's Zipkin exporter, writing the full 128-bit trace id (it cuts every id to 64 bits): a trace then has
 * the same id in Zipkin, in the logs' trace_id and in the traceparent a client or a Celery worker sees.
 */
class Zipkin128Exporter extends TracerExporters.Zipkin {
  override makePayload(span: Span): Record<string, unknown> {
    const payload = super.makePayload(span);
    const traceId = traceIdOf(span.traceID);
    if (traceId) payload.traceId = traceId;
    return payload;
  }
}

/** The broker's tracing options from the config: off, or on with one exporter. */
export function tracingOptions(config: Config): BrokerOptions["tracing"] {
  if (config.tracing.exporter === "off") return { enabled: false };
  const exporter =
    config.tracing.exporter === "console"
      ? { type: "Console" as const, options: { colors: config.mode === "embedded" } }
      : new Zipkin128Exporter({ baseURL: config.tracing.zipkinUrl, interval: 5 });
  return {
    enabled: true,
    // Moleculer accepts exporter instances; its typings list only names and configs.
    exporter: exporter as unknown as "Console",
    sampling: { rate: config.tracing.sampleRate },
    // Params stay out of spans: some carry credentials (auth.authenticate's token).
    tags: { action: { params: false } },
    // Event handlers (SSE fan-out, cache clean-ups, relay wake-ups) are spans too: they are where a trace crosses
    // to the other nodes without a call.
    events: true,
  };
}
