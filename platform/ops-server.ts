/**
 * The operations HTTP server of every node, on METRICS_PORT (0: off), never on the public API port:
 * - GET /metrics: Prometheus text of this node (platform/metrics.ts);
 * - GET /livez: the process answers and its event loop turns. Never asks a neighbour: a database or Redis
 *   outage must not make Kubernetes restart every pod at once;
 * - GET /readyz: what this node needs to serve: the database, the transporter, and what its services add
 *   (the gateway's session Redis, the tasks node's Celery publisher and outbox age). 503 names what failed,
 *   and once the node is stopping (so the endpoints drop it before its listener closes).
 * The gateway's API port answers /livez and /readyz with the same handlers (never /metrics).
 */
import { createServer, type IncomingMessage, type Server, type ServerResponse } from "node:http";
import type { AddressInfo } from "node:net";
import type { Middleware, ServiceBroker } from "moleculer";
import { platformOf } from "./platform";
import { eventLoopDelayP99S, scrape } from "./metrics";

/** "ok" or why not; never throws (a check that throws counts as failed with its message). */
export type ReadinessCheck = () => Promise<string> | string;

interface OpsState {
  checks: Map<string, ReadinessCheck>;
  stopping: boolean;
  server: Server | null;
}

const states = new WeakMap<ServiceBroker, OpsState>();

function stateOf(broker: ServiceBroker): OpsState {
  let s = states.get(broker);
  if (!s) states.set(broker, (s = { checks: new Map(), stopping: false, server: null }));
  return s;
}

/** A service adds what its node needs to serve (keyed by name; a later add replaces it). */
export function addReadinessCheck(broker: ServiceBroker, name: string, check: ReadinessCheck): void {
  stateOf(broker).checks.set(name, check);
}

/** From now on /readyz answers 503 (a node draining before it stops). */
export function markStopping(broker: ServiceBroker): void {
  stateOf(broker).stopping = true;
}

export function removeReadinessCheck(broker: ServiceBroker, name: string): void {
  stateOf(broker).checks.delete(name);
}

/** Rejects after `ms`: a probe answers within Kubernetes' timeout even when a dependency hangs. */
export function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([
    p,
    new Promise<T>((_, reject) =>
      setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms).unref(),
    ),
  ]);
}

const CHECK_TIMEOUT_MS = 2000;

export interface ProbeAnswer {
  status: number;
  body: Record<string, unknown>;
}

export function livez(): ProbeAnswer {
  return {
    status: 200,
    body: {
      status: "alive",
      uptime_s: Math.round(process.uptime()),
      event_loop_delay_p99_ms: Math.round(eventLoopDelayP99S() * 1e4) / 10,
    },
  };
}

async function runCheck(check: ReadinessCheck, name: string): Promise<string> {
  try {
    return await withTimeout(Promise.resolve().then(check), CHECK_TIMEOUT_MS, name);
  } catch (err) {
    return `failed: ${err instanceof Error ? err.message : String(err)}`;
  }
}

/** The database check: one round trip on the node's pool. */
export async function checkDatabase(broker: ServiceBroker): Promise<string> {
  await withTimeout(platformOf(broker).sequelize.query("SELECT 1"), CHECK_TIMEOUT_MS, "database");
  return "ok";
}

/** The Moleculer transporter ("embedded": none configured, one process). */
export function checkTransporter(broker: ServiceBroker): string {
  const transit = broker.transit;
  if (!platformOf(broker).config.transporter || !transit) return "embedded";
  return transit.connected && !transit.disconnecting ? "ok" : "failed: transporter disconnected";
}

export async function readyz(broker: ServiceBroker): Promise<ProbeAnswer> {
  const state = stateOf(broker);
  const all: [string, ReadinessCheck][] = [
    ["database", () => checkDatabase(broker)],
    ["transporter", () => checkTransporter(broker)],
    ...state.checks,
  ];
  const results = await Promise.all(all.map(([name, check]) => runCheck(check, name)));
  const checks: Record<string, string> = {};
  all.forEach(([name], i) => (checks[name] = results[i]));
  if (state.stopping || !broker.started) checks.node = state.stopping ? "failed: stopping" : "failed: starting";
  const ready = Object.values(checks).every((c) => c === "ok" || c === "embedded" || c === "simulated");
  return { status: ready ? 200 : 503, body: { status: ready ? "ready" : "not_ready", checks } };
}

function sendJson(res: ServerResponse, answer: ProbeAnswer, head: boolean): void {
  res.writeHead(answer.status, { "Content-Type": "application/json; charset=utf-8", "Cache-Control": "no-store" });
  res.end(head ? undefined : JSON.stringify(answer.body));
}

/** /livez and /readyz as request handlers (the gateway mounts them on the API port too). */
export function probeHandlers(broker: ServiceBroker): {
  livez: (req: IncomingMessage, res: ServerResponse) => void;
  readyz: (req: IncomingMessage, res: ServerResponse) => void;
} {
  return {
    livez: (req, res) => sendJson(res, livez(), req.method === "HEAD"),
    readyz: (req, res) => {
      readyz(broker).then(
        (a) => sendJson(res, a, req.method === "HEAD"),
        () => sendJson(res, { status: 503, body: { status: "not_ready" } }, req.method === "HEAD"),
      );
    },
  };
}

function handle(broker: ServiceBroker, req: IncomingMessage, res: ServerResponse): void {
  const path = (req.url ?? "/").split("?")[0];
  const known = path === "/metrics" || path === "/livez" || path === "/readyz";
  if (!known) {
    sendJson(res, { status: 404, body: { detail: "Not found" } }, false);
    return;
  }
  if (req.method !== "GET" && req.method !== "HEAD") {
    res.setHeader("Allow", "GET, HEAD");
    sendJson(res, { status: 405, body: { detail: "Method not allowed" } }, false);
    return;
  }
  const probes = probeHandlers(broker);
  if (path === "/livez") {
    probes.livez(req, res);
    return;
  }
  if (path === "/readyz") {
    probes.readyz(req, res);
    return;
  }
  scrape(broker).then(
    (text) => {
      res.writeHead(200, { "Content-Type": "text/plain; version=0.0.4; charset=utf-8", "Cache-Control": "no-store" });
      res.end(req.method === "HEAD" ? undefined : text);
    },
    (err: unknown) => {
      broker.getLogger("ops").error(`metrics scrape failed: ${err instanceof Error ? err.message : String(err)}`);
      sendJson(res, { status: 500, body: { detail: "Metrics unavailable" } }, false);
    },
  );
}

/** The port the ops server of `broker` listens on (tests: METRICS_PORT may be any free port). */
export function opsPort(broker: ServiceBroker): number | undefined {
  const server = stateOf(broker).server;
  return server ? (server.address() as AddressInfo).port : undefined;
}

/**
 * Opens the ops server once the broker has started (so /readyz never answers for a node half-way up) and
 * closes it after the broker stopped; readyz turns 503 as soon as stopping begins.
 */
export const OpsServerMiddleware: Middleware = {
  name: "OpsServer",
  async started(this: unknown, broker: ServiceBroker) {
    const port = platformOf(broker).config.metricsPort;
    if (port === 0) return;
    const server = createServer((req, res) => handle(broker, req, res));
    // A scrape or probe is one short request: no keep-alive sockets left behind by a stopped node.
    server.keepAliveTimeout = 1000;
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(port, "0.0.0.0", () => {
        server.off("error", reject);
        resolve();
      });
    });
    stateOf(broker).server = server;
    broker
      .getLogger("ops")
      .info(`operations server on port ${(server.address() as AddressInfo).port}: /metrics /livez /readyz`);
  },
  stopping(this: unknown, broker: ServiceBroker) {
    stateOf(broker).stopping = true;
  },
  async stopped(this: unknown, broker: ServiceBroker) {
    const state = stateOf(broker);
    const server = state.server;
    state.server = null;
    if (server) {
      server.closeAllConnections();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    }
  },
} as unknown as Middleware;
