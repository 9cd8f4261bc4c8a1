/**
 * Broker options from the validated config (platform/config.ts): Moleculer's own names
 * (TRANSPORTER, CACHER, NAMESPACE, NODEID, LOGLEVEL) come from the environment through it.
 * Embedded mode: no transporter, Memory cacher, readable logs. Cluster: AMQP transporter, Redis cacher,
 * JSON logs. Every log line carries the request id of the action it belongs to.
 */
import type { BrokerOptions, Context, LoggerConfig, ServiceBroker, Transporters } from "moleculer";
import type { Config } from "./config";
import { AccessGate } from "./access-gate";
import { RequestContextMiddleware, currentRequestId } from "./request-context";
import { ResilientRedisCacher } from "./resilient-redis-cacher";
import { OpsServerMiddleware } from "./ops-server";
import { MetricsMiddleware, metricsList } from "./metrics";
import { traceIdOf, tracingOptions } from "./tracing";
import { CoherentMemoryCacher } from "./coherent-cache";
import { BatchingAmqpTransporter } from "./amqp-transporter";
import { BatchedConsoleLogger } from "./log-output";

type Bindings = { nodeID: string; mod: string };
type FormatterHelpers = { printArgs: (args: unknown[]) => unknown[] };
type Formatter = (type: string, args: unknown[], bindings: Bindings, helpers: FormatterHelpers) => unknown[];

/**
 * A structured line: `logger.info({ msg: "…", instance_id: 7 })`. Its fields become fields of the JSON line
 * (readable mode: `msg key=value …`); any other arguments are printed into `msg` as Moleculer does.
 */
export type LogFields = { msg: string } & Record<string, unknown>;

function fieldsOf(args: unknown[]): LogFields | undefined {
  const a = args.length === 1 ? args[0] : undefined;
  if (typeof a !== "object" || a === null || Array.isArray(a) || a instanceof Error) return undefined;
  return typeof (a as { msg?: unknown }).msg === "string" ? (a as LogFields) : undefined;
}

/** One JSON object per line; with tracing on, the trace id of the request the line belongs to. */
function jsonFormatter(tracing: boolean): Formatter {
  return (type, args, bindings, { printArgs }) => {
    const fields = fieldsOf(args);
    const requestId = (fields?.request_id as string | undefined) ?? currentRequestId();
    return [
      JSON.stringify({
        time: new Date().toISOString(),
        level: type,
        node: bindings.nodeID,
        mod: bindings.mod,
        request_id: requestId,
        trace_id: tracing ? traceIdOf(requestId) : undefined,
        ...(fields ?? { msg: printArgs(args).join(" ") }),
      }),
    ];
  };
}

function readableFormatter(
  type: string,
  args: unknown[],
  bindings: Bindings,
  { printArgs }: FormatterHelpers,
): unknown[] {
  const fields = fieldsOf(args);
  const rid = (fields?.request_id as string | undefined) ?? currentRequestId();
  const head = [
    `[${new Date().toISOString().substring(11, 23)}]`,
    type.toUpperCase().padEnd(5),
    `${bindings.mod.toUpperCase()}${rid ? ` <${rid}>` : ""}:`,
  ];
  if (!fields) return [...head, ...printArgs(args)];
  const { msg, request_id: _rid, ...rest } = fields;
  const pairs = Object.entries(rest)
    .filter(([, v]) => v !== undefined)
    .map(([k, v]) => `${k}=${typeof v === "string" ? v : JSON.stringify(v)}`);
  return [...head, msg, ...pairs];
}

/** Adds the AMQP connection heartbeat to each URL (`;`-separated cluster list) unless the URL sets its own. */
export function withAmqpHeartbeat(urls: string, heartbeatS: number): string[] {
  return urls
    .split(";")
    .filter(Boolean)
    .map((raw) => {
      const u = new URL(raw);
      if (!u.searchParams.has("heartbeat")) u.searchParams.set("heartbeat", String(heartbeatS));
      return u.toString();
    });
}

/**
 * The AMQP transporter (platform/amqp-transporter.ts: Moleculer's, with batched socket writes) and its options
 * (node_modules/moleculer/src/transporters/amqp.js), each set on purpose:
 * - prefetch: how many unacknowledged requests RabbitMQ hands one node's request queue at once (a request is
 *   acked after its handler settles). Moleculer's default 1 runs one request per node at a time: a two-node
 *   cluster served 22 req/s. In the hundreds lets the node's CPU and pool be the limit; the rest waits in RabbitMQ.
 * - heartbeat (amqplib, URL parameter; its default 0 = none): a half-open TCP connection to RabbitMQ is noticed
 *   in ~2 heartbeats instead of never, so the transporter reconnects by itself.
 * - eventTimeToLive: broadcast events (lab status for SSE, outbox wake-ups, cache clean-ups) are worthless once
 *   stale; a node that was paused or away must not replay minutes of them. Nothing depends on an event arriving
 *   (the outbox relay also polls), so a TTL loses nothing that matters.
 * - heartbeatTimeToLive: a Moleculer heartbeat older than the offline timeout says nothing true any more.
 * - autoDeleteQueues: the per-node queues (REQ/RES/EVENT.<nodeID>) of a node that died without unbinding go away
 *   this long after their consumer left (node ids are per process, so nobody comes back for them); long enough
 *   for a node's own reconnect after a RabbitMQ restart to find its queues.
 * - socketOptions.noDelay: amqplib leaves Nagle's algorithm on, so a small request frame waits for the ACK of the
 *   previous one (up to the peer's delayed-ACK 40 ms): measured on a two-node cluster, the cached course list went
 *   from 210 to 1,072 req/s with it off.
 */
function amqpTransporter(url: string, config: Config): BrokerOptions["transporter"] {
  // The transporter passes socketOptions to amqplib's connect; Moleculer's typings do not list it.
  const options: Transporters.AMQP.AmqpTransporterOptions & { socketOptions: { noDelay: boolean } } = {
    url: withAmqpHeartbeat(url, config.amqp.heartbeatS),
    prefetch: config.amqp.prefetch,
    eventTimeToLive: config.amqp.eventTtlMs,
    heartbeatTimeToLive: HEARTBEAT_TIMEOUT_S * 1000,
    autoDeleteQueues: config.amqp.queueExpiryS * 1000,
    socketOptions: { noDelay: true },
  };
  return new BatchingAmqpTransporter(options);
}

/** Moleculer node heartbeats: a SIGKILLed node is taken out of the balancer after HEARTBEAT_TIMEOUT_S. */
const HEARTBEAT_INTERVAL_S = 5;
const HEARTBEAT_TIMEOUT_S = 15;

function transporterOf(config: Config): BrokerOptions["transporter"] {
  if (!config.transporter) return null;
  if (/^amqps?:\/\//.test(config.transporter)) return amqpTransporter(config.transporter, config);
  // Any other connection string selects its transporter by its scheme.
  return config.transporter as BrokerOptions["transporter"];
}

export function brokerOptions(config: Config): BrokerOptions {
  const options = {
    level: config.logLevel,
    colors: config.mode === "embedded",
    formatter: config.mode === "cluster" ? jsonFormatter(config.tracing.exporter !== "off") : readableFormatter,
  };
  // Cluster: JSON lines written in batches (platform/log-output.ts); embedded: Moleculer's console, line by line.
  const logger: LoggerConfig | BatchedConsoleLogger =
    config.mode === "cluster" ? new BatchedConsoleLogger(options) : { type: "Console", options };
  return {
    namespace: config.namespace,
    nodeID: config.nodeId,
    logger,
    logLevel: config.logLevel,
    transporter: transporterOf(config),
    cacher: config.cacher
      ? new ResilientRedisCacher({ prefix: `${config.namespace}-cache`, ttl: 600, url: config.cacher })
      : new CoherentMemoryCacher({ ttl: 600, clone: true }),
    serializer: "JSON",
    // Bounds a call whose node died mid-request; HTTP clients and ingresses (60 s) give up later than this.
    requestTimeout: config.requestTimeoutMs,
    // Off: starts, creates and approvals are not idempotent, a retried timeout could run them twice.
    retryPolicy: { enabled: false },
    // Graceful shutdown: stopping waits for in-flight requests (up to 10 s).
    tracking: { enabled: true, shutdownTimeout: 10_000 },
    // Moleculer's balancer, not RabbitMQ's (disableBalancer: false): preferLocal keeps gateway → auth in the
    // process, and a dead node's unacked requests are not redelivered to its twin (no start run twice).
    disableBalancer: false,
    registry: { strategy: "RoundRobin", preferLocal: true },
    heartbeatInterval: HEARTBEAT_INTERVAL_S,
    heartbeatTimeout: HEARTBEAT_TIMEOUT_S,
    // Off: our outages are shared (database, broker), not per node; a per-node breaker would keep answering
    // "not available" for its half-open time after PostgreSQL is back. A dead node is caught by heartbeats.
    circuitBreaker: { enabled: false },
    // Off: concurrency is already bounded by the AMQP prefetch per node and the database pool (its queue
    // waits up to `acquire`); a bulkhead would add a third limit that rejects class-start bursts.
    bulkhead: { enabled: false },
    // Params are built per call (by the gateway per request, by deserialising a remote call): no caller shares
    // them, so a deep copy per call is pure cost on the hot path.
    contextParamsCloning: false,
    // The deepest real chain is gateway → service → auth/access → cache (4 levels); 16 stops a call loop.
    maxCallLevel: 16,
    validator: true,
    // Off: Moleculer's metrics middleware costs ~4 µs per action call; platform/metrics.ts keeps the few series an
    // operator reads (MetricsMiddleware below) and renders them on METRICS_PORT (platform/ops-server.ts).
    metrics: { enabled: false },
    // `$node.metrics` answers from platform/metrics.ts (Moleculer's would refuse: its module is off).
    internalServices: {
      $node: {
        actions: {
          metrics: {
            handler(
              this: { broker: ServiceBroker },
              ctx: Context<{ types?: string | string[]; includes?: string | string[] }>,
            ) {
              return metricsList(this.broker, ctx.params);
            },
          },
        },
      },
    },
    tracing: tracingOptions(config),
    // AccessGate first: innermost, right around each handler (see platform/access-gate.ts).
    // MetricsMiddleware last of these: outermost, it times the access check too.
    middlewares: [AccessGate, RequestContextMiddleware, OpsServerMiddleware, MetricsMiddleware],
    // start.ts owns SIGTERM: broker first, then the pool and the child processes (Moleculer's own handler
    // would exit right after the broker and leave the embedded IdP and PGlite behind).
    skipProcessEventRegistration: true,
  };
}
