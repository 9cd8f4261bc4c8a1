/**
 * Broker options from the validated config (platform/config.ts): Moleculer's own names
 * (TRANSPORTER, CACHER, NAMESPACE, NODEID, LOGLEVEL) come from the environment through it.
 * Embedded mode: no transporter, Memory cacher, readable logs. Cluster: AMQP transporter, Redis cacher,
 * JSON logs. Every log line carries the request id of the action it belongs to.
 */
import type { BrokerOptions, LoggerConfig } from "moleculer";
import type { Config } from "./config";
import { AccessGate } from "./access-gate";
import { RequestContextMiddleware, currentRequestId } from "./request-context";
import { ResilientRedisCacher } from "./resilient-redis-cacher";
import { PrometheusText } from "./prometheus-text";
import { CoherentMemoryCacher } from "./coherent-cache";

type Bindings = { nodeID: string; mod: string };
type FormatterHelpers = { printArgs: (args: unknown[]) => unknown[] };

function jsonFormatter(type: string, args: unknown[], bindings: Bindings, { printArgs }: FormatterHelpers): string[] {
  return [
    JSON.stringify({
      time: new Date().toISOString(),
      level: type,
      node: bindings.nodeID,
      mod: bindings.mod,
      request_id: currentRequestId(),
      msg: printArgs(args).join(" "),
    }),
  ];
}

function readableFormatter(type: string, args: unknown[], bindings: Bindings, { printArgs }: FormatterHelpers): unknown[] {
  const rid = currentRequestId();
  return [
    `[${new Date().toISOString().substring(11, 23)}]`,
    type.toUpperCase().padEnd(5),
    `${bindings.mod.toUpperCase()}${rid ? ` <${rid}>` : ""}:`,
    ...printArgs(args),
  ];
}

export function brokerOptions(config: Config): BrokerOptions {
  const logger: LoggerConfig = {
    type: "Console",
    options: {
      level: config.logLevel,
      colors: config.mode === "embedded",
      formatter: (config.mode === "cluster" ? jsonFormatter : readableFormatter) as unknown as string,
    },
  };
  return {
    namespace: config.namespace,
    nodeID: config.nodeId,
    logger,
    logLevel: config.logLevel,
    // A connection string selects the transporter by its scheme (amqp:// → AMQP).
    transporter: (config.transporter ?? null) as BrokerOptions["transporter"],
    cacher: config.cacher
      ? new ResilientRedisCacher({ prefix: `${config.namespace}-cache`, ttl: 600, url: config.cacher })
      : new CoherentMemoryCacher({ ttl: 600, clone: true }),
    serializer: "JSON",
    requestTimeout: 30_000,
    retryPolicy: { enabled: false },
    // Graceful shutdown: stopping waits for in-flight requests (up to 10 s).
    tracking: { enabled: true, shutdownTimeout: 10_000 },
    registry: { strategy: "RoundRobin", preferLocal: true },
    circuitBreaker: { enabled: false },
    validator: true,
    // Served by the gateway at GET /metrics; METRICS_PORT adds Moleculer's own scrape port (nodes without a gateway).
    metrics: {
      enabled: true,
      // Moleculer accepts reporter instances; its typings list only names and configs.
      reporter: [
        new PrometheusText() as unknown as "Prometheus",
        ...(config.metricsPort ? [{ type: "Prometheus" as const, options: { port: config.metricsPort } }] : []),
      ],
    },
    tracing: { enabled: false },
    // AccessGate first: innermost, right around each handler (see platform/access-gate.ts).
    middlewares: [AccessGate, RequestContextMiddleware],
    // start.ts owns SIGTERM: broker first, then the pool and the child processes (Moleculer's own handler
    // would exit right after the broker and leave the embedded IdP and PGlite behind).
    skipProcessEventRegistration: true,
  };
}
