/**
 * The Prometheus text of one node, served by platform/ops-server.ts on METRICS_PORT.
 *
 * Instruments that move per request (HTTP answers, cache hits, tasks sent, start durations) live in Moleculer's
 * metric registry, registered once here under their final Prometheus names; a caller keeps the metric object and
 * increments it directly (no name lookup per request). Values that are cheaper to read at scrape time than to
 * maintain (SQL statements run, rows by status, outbox backlog) come from collectors services add per broker.
 *
 * Moleculer's own metrics are rendered from an allow-list: the few an operator reads, renamed to Prometheus
 * conventions (snake_case labels, `_total` counters, seconds instead of milliseconds), with the labels that only
 * multiply series dropped (summed). Everything else Moleculer collects (OS user, host name, network addresses,
 * command line, ~900 series) is never served.
 */
import { monitorEventLoopDelay } from "node:perf_hooks";
import type { ServiceBroker } from "moleculer";
import { statementsRun } from "./db";
import { platformOf } from "./platform";

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
  cacheDropped: "cache_fills_dropped_total",
  celeryTasksSent: "celery_tasks_sent_total",
  celeryPublishFailures: "celery_task_publish_failures_total",
  labStartDuration: "lab_start_duration_seconds",
  resultApplyLag: "celery_result_apply_lag_seconds",
} as const;

/** Upper bounds of an API answer's duration (s): fast cached reads to a slow write under load. */
const HTTP_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];
/** Accepted → running: a Celery worker pulling an image and scheduling a pod takes seconds to minutes. */
const START_BUCKETS = [1, 2, 5, 10, 20, 30, 60, 120, 300, 600];
/** A result stored by the worker → applied here: sub-second on pub/sub, up to the reconcile interval otherwise. */
const LAG_BUCKETS = [0.01, 0.05, 0.1, 0.5, 1, 2, 5, 10, 30, 60, 300];

interface OwnMetric {
  name: string;
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
];

interface BuiltIn {
  from: string;
  name: string;
  help: string;
  /** Labels kept, Moleculer's name → ours; the others are summed away. */
  labels: Record<string, string>;
  /** Values (and bucket bounds) are multiplied by this: Moleculer times in ms → seconds. */
  scale?: number;
}

/** The Moleculer metrics an operator reads. */
const BUILT_INS: BuiltIn[] = [
  {
    from: "moleculer.request.total",
    name: "moleculer_requests_total",
    help: "Action calls handled by this node",
    labels: { action: "action", type: "type" },
  },
  {
    from: "moleculer.request.error.total",
    name: "moleculer_request_errors_total",
    help: "Action calls that failed on this node, by error code",
    labels: { action: "action", errorCode: "code", errorName: "error" },
  },
  {
    from: "moleculer.request.time",
    name: "moleculer_request_duration_seconds",
    help: "Action call durations on this node",
    labels: { action: "action" },
    scale: 0.001,
  },
  {
    from: "moleculer.request.active",
    name: "moleculer_requests_active",
    help: "Action calls in progress on this node",
    labels: { action: "action" },
  },
  {
    from: "moleculer.request.timeout.total",
    name: "moleculer_request_timeouts_total",
    help: "Action calls from this node that timed out",
    labels: { action: "action" },
  },
  {
    from: "moleculer.event.received.total",
    name: "moleculer_events_received_total",
    help: "Events handled by this node",
    labels: { event: "event" },
  },
  {
    from: "moleculer.transit.requests.active",
    name: "moleculer_transit_requests_pending",
    help: "Calls this node sent to other nodes that have not answered yet",
    labels: {},
  },
  {
    from: "moleculer.registry.nodes.online.total",
    name: "moleculer_nodes_online",
    help: "Nodes of the cluster this node sees online (itself included)",
    labels: {},
  },
  {
    from: "moleculer.transporter.packets.sent.total",
    name: "moleculer_transporter_packets_sent_total",
    help: "Packets this node sent over the transporter",
    labels: {},
  },
  {
    from: "moleculer.transporter.packets.received.total",
    name: "moleculer_transporter_packets_received_total",
    help: "Packets this node received over the transporter",
    labels: {},
  },
];

/** Registers this platform's instruments (idempotent: several services of one broker call it). */
export function registerMetrics(broker: ServiceBroker): void {
  const registry = broker.metrics;
  if (!registry.isEnabled()) return;
  for (const m of OWN) {
    if (registry.getMetric(m.name)) continue;
    // No quantiles (a time-window reservoir per series, updated on every observation) and no rate.
    if (m.type === "histogram") registry.register({ ...m, type: "histogram", quantiles: false });
    else registry.register({ ...m, type: "counter", rate: false });
  }
}

interface Counter {
  increment(labels?: Labels, value?: number): void;
}
interface Histogram {
  observe(value: number, labels?: Labels): void;
}
const noop: Counter & Histogram = { increment: () => undefined, observe: () => undefined };

/** The counter named `name` of this broker (a no-op when metrics are off). */
export function counter(broker: ServiceBroker, name: (typeof METRIC)[keyof typeof METRIC]): Counter {
  registerMetrics(broker);
  return (broker.metrics.getMetric(name) as unknown as Counter | null) ?? noop;
}

export function histogram(broker: ServiceBroker, name: (typeof METRIC)[keyof typeof METRIC]): Histogram {
  registerMetrics(broker);
  return (broker.metrics.getMetric(name) as unknown as Histogram | null) ?? noop;
}

const collectors = new WeakMap<ServiceBroker, Map<string, Collector>>();

/** Adds (or replaces, by `key`) a scrape-time collector of this broker. */
export function addCollector(broker: ServiceBroker, key: string, collector: Collector): void {
  let m = collectors.get(broker);
  if (!m) collectors.set(broker, (m = new Map()));
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

interface SnapshotItem {
  labels: Labels;
  value?: number;
  count?: number;
  sum?: number;
  buckets?: Record<string, number>;
}
interface SnapshotMetric {
  type: string;
  description?: string;
  snapshot(): SnapshotItem[];
}

function renderRegistryFamily(
  out: string[],
  metric: SnapshotMetric,
  name: string,
  help: string,
  rename: ((labels: Labels) => Labels) | null,
  scale: number,
): void {
  const items = metric.snapshot();
  const type = metric.type === "histogram" ? "histogram" : metric.type === "counter" ? "counter" : "gauge";
  // Summing away dropped labels: series with the same kept labels add up.
  const merged = new Map<string, SnapshotItem>();
  for (const item of items) {
    const labels = rename ? rename(item.labels) : item.labels;
    const key = labelText(labels);
    const prev = merged.get(key);
    if (!prev) {
      merged.set(key, {
        labels,
        value: item.value,
        count: item.count,
        sum: item.sum,
        buckets: item.buckets ? { ...item.buckets } : undefined,
      });
      continue;
    }
    prev.value = (prev.value ?? 0) + (item.value ?? 0);
    prev.count = (prev.count ?? 0) + (item.count ?? 0);
    prev.sum = (prev.sum ?? 0) + (item.sum ?? 0);
    if (prev.buckets && item.buckets) for (const le of Object.keys(item.buckets)) prev.buckets[le] += item.buckets[le];
  }
  out.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
  for (const item of merged.values()) {
    if (type === "histogram") {
      const bounds = Object.keys(item.buckets ?? {})
        .map(Number)
        .sort((a, b) => a - b);
      for (const le of bounds) {
        out.push(`${name}_bucket${labelText(item.labels, ["le", num(le * scale)])} ${item.buckets?.[le] ?? 0}`);
      }
      out.push(`${name}_bucket${labelText(item.labels, ["le", "+Inf"])} ${item.count ?? 0}`);
      out.push(`${name}_sum${labelText(item.labels)} ${num((item.sum ?? 0) * scale)}`);
      out.push(`${name}_count${labelText(item.labels)} ${item.count ?? 0}`);
    } else {
      out.push(`${name}${labelText(item.labels)} ${num((item.value ?? 0) * scale)}`);
    }
  }
}

function renameLabels(map: Record<string, string>): (labels: Labels) => Labels {
  const entries = Object.entries(map);
  return (labels) => {
    const out: Labels = {};
    for (const [from, to] of entries) {
      const v = labels[from];
      out[to] = v === undefined || v === null ? "" : v;
    }
    return out;
  };
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
  const registry = broker.metrics;
  if (registry.isEnabled()) {
    registerMetrics(broker);
    for (const m of OWN) {
      const metric = registry.getMetric(m.name) as unknown as SnapshotMetric | null;
      if (metric) renderRegistryFamily(out, metric, m.name, m.description, null, 1);
    }
    for (const b of BUILT_INS) {
      const metric = registry.getMetric(b.from) as unknown as SnapshotMetric | null;
      if (metric) renderRegistryFamily(out, metric, b.name, b.help, renameLabels(b.labels), b.scale ?? 1);
    }
  }
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
