/**
 * The Prometheus text of one node, served by platform/ops-server.ts on METRICS_PORT.
 *
 * Instruments that move per request (HTTP answers, action calls, cache hits, tasks sent, start durations) are
 * plain in-process counters and histograms kept per broker: a caller resolves its series once (`child`) and an
 * update is an addition, no label hashing, no timestamp, no reservoir. Moleculer's own metrics stay off: its
 * middleware cost ~4 µs per action call (labels, rates, a quantile reservoir) and a few calls make one request;
 * MetricsMiddleware below counts and times every action and event for a fraction of that. Values cheaper to read
 * at scrape time than to maintain (SQL statements run, rows by status, outbox backlog, nodes online) come from
 * collectors. METRICS_PORT=0 turns all of it off: the instruments are no-ops.
 */
import { monitorEventLoopDelay } from "node:perf_hooks";
import type { Middleware, ServiceBroker } from "moleculer";
import { statementsRun } from "./db";
import { attachedPlatform, platformOf } from "./platform";

type LabelValue = string | number;
export type Labels = Record<string, LabelValue>;

export interface Sample {
  labels?: Labels;
  value: number;
}

/** A family computed at scrape time. */
export interface CollectedFamily {
  name: string;
  help: string;
  type: "counter" | "gauge";
  samples: Sample[];
}

export type Collector = () => Promise<CollectedFamily[]> | CollectedFamily[];

/** The per-request instruments, by their Prometheus names. */
export const METRIC = {
  httpRequests: "http_requests_total",
  httpDuration: "http_request_duration_seconds",
  cacheHits: "cache_hits_total",
  cacheMisses: "cache_misses_total",
  cacheDropped: "cache_dropped_fills_total",
  celeryTasksSent: "celery_tasks_sent_total",
  celeryPublishFailures: "celery_task_publish_failures_total",
  labStartDuration: "lab_start_duration_seconds",
  resultApplyLag: "celery_result_apply_lag_seconds",
  actionCalls: "moleculer_requests_total",
  actionErrors: "moleculer_request_errors_total",
  actionDuration: "moleculer_request_duration_seconds",
  eventsReceived: "moleculer_events_received_total",
} as const;
type MetricName = (typeof METRIC)[keyof typeof METRIC];

/** Upper bounds of an API answer's duration (s): fast cached reads to a slow write under load. */
const HTTP_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** Accepted → running: a Celery worker pulling an image and scheduling a pod takes seconds to minutes. */
const START_BUCKETS = [1, 2, 5, 10, 20, 30, 60, 120, 300, 600];
/** An action call inside the cluster: a cached read takes tens of µs, a locked write a few ms. */
const ACTION_BUCKETS = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 5];
/** A result stored by the worker → applied here: sub-second on pub/sub, up to the reconcile interval otherwise. */
const LAG_BUCKETS = [0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 300];

interface OwnMetric {
  name: MetricName;
  type: "counter" | "histogram";
  labelNames: string[];
  description: string;
  buckets?: number[];
}

const OWN: OwnMetric[] = [
  {
    name: METRIC.httpRequests,
    type: "counter",
    labelNames: ["method", "route", "status"],
    description: "HTTP answers of this node's API port, by route template",
  },
  {
    name: METRIC.httpDuration,
    type: "histogram",
    labelNames: ["method", "route"],
    description: "Time from receiving an HTTP request to the end of its answer (event streams excluded)",
    buckets: HTTP_BUCKETS,
  },
  {
    name: METRIC.cacheHits,
    type: "counter",
    labelNames: ["scope"],
    description: "Answers served from the cache, by scope (service)",
  },
  {
    name: METRIC.cacheMisses,
    type: "counter",
    labelNames: ["scope"],
    description: "Answers computed on a cache miss, by scope (service)",
  },
  {
    name: METRIC.cacheDropped,
    type: "counter",
    labelNames: ["scope"],
    description: "Computed answers not cached because a write invalidated them meanwhile",
  },
  {
    name: METRIC.celeryTasksSent,
    type: "counter",
    labelNames: ["task"],
    description: "Celery tasks published and confirmed by the broker (or taken by the simulated runner)",
  },
  {
    name: METRIC.celeryPublishFailures,
    type: "counter",
    labelNames: ["task"],
    description: "Celery task publish attempts that failed (the row stays in the outbox and is retried)",
  },
  {
    name: METRIC.labStartDuration,
    type: "histogram",
    labelNames: [],
    description: "Lab instance start, from the accepted request to the running status",
    buckets: START_BUCKETS,
  },
  {
    name: METRIC.resultApplyLag,
    type: "histogram",
    labelNames: ["task"],
    description: "Result consumer lag: from the worker storing a final result (date_done) to this node applying it",
    buckets: LAG_BUCKETS,
  },
  {
    name: METRIC.actionCalls,
    type: "counter",
    labelNames: ["action"],
    description: "Action calls handled by this node (Moleculer), by action",
  },
  {
    name: METRIC.actionErrors,
    type: "counter",
    labelNames: ["action", "code", "error"],
    description: "Action calls that failed on this node, by action, error code and name",
  },
  {
    name: METRIC.actionDuration,
    type: "histogram",
    labelNames: ["action"],
    description: "Time an action call took on this node, handler and its middlewares",
    buckets: ACTION_BUCKETS,
  },
  {
    name: METRIC.eventsReceived,
    type: "counter",
    labelNames: ["event"],
    description: "Events handled by this node, by event",
  },
];

interface Series {
  labels: Labels;
  value: number;
  /** Histograms: count per bucket (not cumulative), then sum and count. */
  buckets?: number[];
  sum?: number;
}

/** A counter or histogram of one broker: series by label values, each resolved once by `child`. */
class Instrument {
  readonly series = new Map<string, Series>();
  constructor(readonly def: OwnMetric) {}

  private seriesOf(labels: Labels | undefined): Series {
    let key = "";
    if (labels) for (const n of this.def.labelNames) key += `${labels[n] ?? ""}\u0001`;
    let s = this.series.get(key);
    if (!s) {
      const own: Labels = {};
      for (const n of this.def.labelNames) own[n] = labels?.[n] ?? "";
      s = { labels: own, value: 0 };
      if (this.def.buckets) {
        s.buckets = this.def.buckets.map(() => 0);
        s.sum = 0;
      }
      this.series.set(key, s);
    }
    return s;
  }

  child(labels?: Labels): Child {
    const s = this.seriesOf(labels);
    const bounds = this.def.buckets;
    return {
      increment(by = 1) {
        s.value += by;
      },
      observe(v: number) {
        s.value++;
        s.sum = (s.sum ?? 0) + v;
        if (!bounds || !s.buckets) return;
        for (let i = 0; i < bounds.length; i++) {
          if (v <= bounds[i]) {
            s.buckets[i]++;
            return;
          }
        }
      },
    };
  }
}

interface Child {
  increment(by?: number): void;
  observe(value: number): void;
}

export interface Counter {
  increment(labels?: Labels, by?: number): void;
  child(labels?: Labels): Pick<Child, "increment">;
}
export interface Histogram {
  observe(value: number, labels?: Labels): void;
  child(labels?: Labels): Pick<Child, "observe">;
}

const NOOP_CHILD: Child = { increment: () => undefined, observe: () => undefined };
const NOOP: Counter & Histogram = { increment: () => undefined, observe: () => undefined, child: () => NOOP_CHILD };

const instruments = new WeakMap<ServiceBroker, Map<MetricName, Instrument>>();

/**
 * null when this node collects no metrics (METRICS_PORT=0), or for what runs before its platform is attached
 * (the broker's own $node actions, wrapped in its constructor: not worth a series).
 */
function instrumentsOf(broker: ServiceBroker): Map<MetricName, Instrument> | null {
  let m = instruments.get(broker);
  if (!m) {
    const platform = attachedPlatform(broker);
    if (!platform || platform.config.metricsPort === 0) return null;
    m = new Map(OWN.map((def) => [def.name, new Instrument(def)]));
    instruments.set(broker, m);
  }
  return m;
}

function instrument(broker: ServiceBroker, name: MetricName): Counter & Histogram {
  const i = instrumentsOf(broker)?.get(name);
  if (!i) return NOOP;
  return {
    increment: (labels, by) => i.child(labels).increment(by),
    observe: (v, labels) => i.child(labels).observe(v),
    child: (labels) => i.child(labels),
  };
}

/** The counter named `name` of this broker (a no-op when metrics are off). */
export function counter(broker: ServiceBroker, name: MetricName): Counter {
  return instrument(broker, name);
}

export function histogram(broker: ServiceBroker, name: MetricName): Histogram {
  return instrument(broker, name);
}

/**
 * Counts and times every action call and event this node handles. The series of an action is resolved when the
 * action is wrapped, so a call costs two clock reads and three additions.
 */
export const MetricsMiddleware = {
  name: "AutolabsMetrics",
  localAction(this: ServiceBroker, next: (ctx: unknown) => Promise<unknown>, action: { name: string }) {
    if (!instrumentsOf(this)) return next;
    const calls = counter(this, METRIC.actionCalls).child({ action: action.name });
    const durations = histogram(this, METRIC.actionDuration).child({ action: action.name });
    const errors = counter(this, METRIC.actionErrors);
    return (ctx: unknown) => {
      const t0 = performance.now();
      return next(ctx).then(
        (res) => {
          calls.increment();
          durations.observe((performance.now() - t0) / 1000);
          return res;
        },
        (err: unknown) => {
          calls.increment();
          durations.observe((performance.now() - t0) / 1000);
          const { code, name } = err as { code?: unknown; name?: unknown };
          errors.increment({
            action: action.name,
            code: typeof code === "string" || typeof code === "number" ? code : "",
            error: typeof name === "string" ? name : "Error",
          });
          throw err;
        },
      );
    };
  },
  localEvent(this: ServiceBroker, next: (ctx: unknown) => Promise<unknown>, event: { name: string }) {
    if (!instrumentsOf(this)) return next;
    const received = counter(this, METRIC.eventsReceived).child({ event: event.name });
    return (ctx: unknown) => {
      received.increment();
      return next(ctx);
    };
  },
} as unknown as Middleware;

const collectors = new WeakMap<ServiceBroker, Map<string, Collector>>();

/** Adds (or replaces, by `key`) a scrape-time collector of this broker. */
export function addCollector(broker: ServiceBroker, key: string, collector: Collector): void {
  let m = collectors.get(broker);
  if (!m) collectors.set(broker, (m = new Map<string, Collector>()));
  m.set(key, collector);
}

export function removeCollector(broker: ServiceBroker, key: string): void {
  collectors.get(broker)?.delete(key);
}

// The event-loop delay of this process, sampled by libuv every 20 ms (one timer; nothing per request).
const loopDelay = monitorEventLoopDelay({ resolution: 20 });
loopDelay.enable();

/** p99 of the event-loop delay since the last scrape, seconds (also in /livez). */
export function eventLoopDelayP99S(): number {
  const p99 = loopDelay.percentile(99);
  return Number.isFinite(p99) ? p99 / 1e9 : 0;
}

function processFamilies(): CollectedFamily[] {
  const cpu = process.cpuUsage();
  const mem = process.memoryUsage();
  const families: CollectedFamily[] = [
    {
      name: "process_cpu_seconds_total",
      help: "User and system CPU time of this process",
      type: "counter",
      samples: [{ value: (cpu.user + cpu.system) / 1e6 }],
    },
    {
      name: "process_resident_memory_bytes",
      help: "Resident memory of this process",
      type: "gauge",
      samples: [{ value: mem.rss }],
    },
    {
      name: "nodejs_heap_used_bytes",
      help: "V8 heap in use",
      type: "gauge",
      samples: [{ value: mem.heapUsed }],
    },
    {
      name: "nodejs_eventloop_delay_p99_seconds",
      help: "99th percentile of the event-loop delay since the previous scrape",
      type: "gauge",
      samples: [{ value: eventLoopDelayP99S() }],
    },
    {
      name: "process_uptime_seconds",
      help: "Time since this process started",
      type: "gauge",
      samples: [{ value: process.uptime() }],
    },
  ];
  loopDelay.reset();
  return families;
}

function escapeLabel(v: LabelValue): string {
  return String(v).replace(/\\/g, "\\\\").replace(/"/g, '\\"').replace(/\n/g, "\\n");
}

function labelText(labels: Labels | undefined, extra?: [string, string]): string {
  const parts: string[] = [];
  if (labels) for (const k of Object.keys(labels)) parts.push(`${k}="${escapeLabel(labels[k])}"`);
  if (extra) parts.push(`${extra[0]}="${extra[1]}"`);
  return parts.length ? `{${parts.join(",")}}` : "";
}

function num(v: number): string {
  if (Number.isNaN(v)) return "NaN";
  if (v === Infinity) return "+Inf";
  if (v === -Infinity) return "-Inf";
  return String(v);
}

function renderInstrument(out: string[], i: Instrument): void {
  const { name, description, type, buckets } = i.def;
  out.push(`# HELP ${name} ${description}`, `# TYPE ${name} ${type}`);
  for (const s of i.series.values()) {
    if (!buckets || !s.buckets) {
      out.push(`${name}${labelText(s.labels)} ${num(s.value)}`);
      continue;
    }
    let cumulative = 0;
    buckets.forEach((le, k) => {
      cumulative += s.buckets?.[k] ?? 0;
      out.push(`${name}_bucket${labelText(s.labels, ["le", num(le)])} ${cumulative}`);
    });
    out.push(`${name}_bucket${labelText(s.labels, ["le", "+Inf"])} ${s.value}`);
    out.push(`${name}_sum${labelText(s.labels)} ${num(s.sum ?? 0)}`);
    out.push(`${name}_count${labelText(s.labels)} ${s.value}`);
  }
}

/**
 * This node's counters in the shape of Moleculer's `$node.metrics` answer (its metrics module is off): the REPL's
 * `cache stats` reads them from every node. `includes`: a Moleculer pattern such as `**cache**`.
 */
export function metricsList(
  broker: ServiceBroker,
  params: { types?: string | string[]; includes?: string | string[] },
): { name: string; type: string; description: string; values: { labels: Labels; value: number }[] }[] {
  const types = params.types === undefined ? undefined : ([] as string[]).concat(params.types);
  const patterns = params.includes === undefined ? undefined : ([] as string[]).concat(params.includes);
  const matchers = patterns?.map(
    (p) =>
      new RegExp(
        `^${p
          .replace(/[.+?^${}()|[\]\\]/g, "\\$&")
          .replace(/\*\*/g, ".*")
          .replace(/(?<!\.)\*/g, "[^.]*")}$`,
      ),
  );
  return [...(instrumentsOf(broker)?.values() ?? [])]
    .filter((i) => !types || types.includes(i.def.type))
    .filter((i) => !matchers || matchers.some((m) => m.test(i.def.name)))
    .map((i) => ({
      name: i.def.name,
      type: i.def.type,
      description: i.def.description,
      values: [...i.series.values()].map((s) => ({ labels: s.labels, value: s.value })),
    }));
}

/** What the broker knows of the cluster, read at scrape time. */
function brokerFamilies(broker: ServiceBroker): CollectedFamily[] {
  const nodes = broker.registry.getNodeList({ onlyAvailable: true, withServices: false }).length;
  const pending = (broker.transit as unknown as { pendingRequests?: Map<string, unknown> } | undefined)
    ?.pendingRequests;
  return [
    {
      name: "moleculer_nodes_online",
      help: "Nodes of the cluster this node sees online (itself included)",
      type: "gauge",
      samples: [{ value: nodes }],
    },
    {
      name: "moleculer_transit_requests_pending",
      help: "Calls this node sent to other nodes that have not answered yet",
      type: "gauge",
      samples: [{ value: pending?.size ?? 0 }],
    },
  ];
}

function renderCollected(out: string[], f: CollectedFamily): void {
  out.push(`# HELP ${f.name} ${f.help}`, `# TYPE ${f.name} ${f.type}`);
  for (const s of f.samples) out.push(`${f.name}${labelText(s.labels)} ${num(s.value)}`);
}

/** Collectors that do I/O are bounded: a scrape answers within this even with the database away. */
const COLLECTOR_TIMEOUT_MS = 2000;

function bounded<T>(p: Promise<T>): Promise<T> {
  return Promise.race([
    p,
    new Promise<T>((_, reject) =>
      setTimeout(() => reject(new Error("collector timed out")), COLLECTOR_TIMEOUT_MS).unref(),
    ),
  ]);
}

/** The Prometheus exposition text (format 0.0.4) of this node. */
export async function scrape(broker: ServiceBroker): Promise<string> {
  const out: string[] = [];
  for (const i of instrumentsOf(broker)?.values() ?? []) renderInstrument(out, i);
  for (const f of brokerFamilies(broker)) renderCollected(out, f);
  for (const f of processFamilies()) renderCollected(out, f);
  renderCollected(out, {
    name: "database_queries_total",
    help: "SQL statements this node sent to PostgreSQL (transaction control included)",
    type: "counter",
    samples: [{ value: statementsRun(platformOf(broker).sequelize) }],
  });
  const up: Sample[] = [];
  const entries = [...(collectors.get(broker) ?? new Map<string, Collector>()).entries()];
  const results = await Promise.allSettled(entries.map(([, c]) => bounded(Promise.resolve().then(c))));
  results.forEach((r, i) => {
    up.push({ labels: { collector: entries[i][0] }, value: r.status === "fulfilled" ? 1 : 0 });
    if (r.status === "fulfilled") for (const f of r.value) renderCollected(out, f);
  });
  renderCollected(out, {
    name: "metrics_collector_up",
    help: "1 if the collector's values are in this scrape, 0 if it failed (e.g. its database is away)",
    type: "gauge",
    samples: up,
  });
  out.push("");
  return out.join("\n");
}
