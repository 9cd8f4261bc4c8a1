/**
 * Operating the platform (issue 11: metrics, probes, tracing) on a gateway node and a domain node over the real
 * RabbitMQ, with the real Celery worker and Redis result backend:
 * - the main scenario (sign in → course → lab → start → running through the worker → stop), then each node's
 *   scrape on its own METRICS_PORT: the seed's names, every counter moved by exactly what was done, and
 *   `promtool check metrics` clean;
 * - one request's spans on both nodes, exported by the real Zipkin exporter to a collector of this test, its
 *   `traceparent` honoured at the gateway and handed on to the Celery worker in the message headers;
 * - /livez and /readyz on the ops port and the gateway's API port, and never /metrics on the API port.
 */
import { execFile } from "node:child_process";
import { randomBytes } from "node:crypto";
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { startCeleryWorker, type CeleryWorker } from "../support/celery-worker";
import { startIdp, type TestIdp } from "../support/idp";
import { until, world, type Instance, type World, type WorldPlatform } from "../support/lab-instances";
import { freePort } from "../support/net";
import { startZipkinCollector, type ZipkinCollector } from "../support/zipkin";
import {
  AMQP_URL,
  REDIS_URL,
  createTestDatabase,
  startGatewayAndDomain,
  type ApiResponse,
  type PlatformNode,
  type TestDatabase,
} from "../support/platform";
import { redisUrl } from "../support/servers";

const namespace = `obs-${randomBytes(4).toString("hex")}`;
const RESULTS = redisUrl(9);

/** Prometheus text → "name{labels}" → value (samples only). */
function samples(text: string): Map<string, number> {
  const m = new Map<string, number>();
  for (const line of text.split("\n")) {
    if (line === "" || line.startsWith("#")) continue;
    const i = line.lastIndexOf(" ");
    m.set(line.slice(0, i), Number(line.slice(i + 1)));
  }
  return m;
}

function promtool(text: string): Promise<{ code: number; output: string }> {
  const dir = mkdtempSync(join(tmpdir(), "autolabs-promtool-"));
  const file = join(dir, "scrape.txt");
  writeFileSync(file, text);
  return new Promise((resolve) => {
    // promtool reads the scrape on stdin; `check metrics` lints names, types, HELP and label names.
    const child = execFile("/bin/sh", ["-c", `/usr/bin/promtool check metrics < "${file}"`], (err, stdout, stderr) => {
      rmSync(dir, { recursive: true, force: true });
      resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, output: `${stdout}${stderr}` });
    });
    child.stdin?.end();
  });
}

let db: TestDatabase;
let idp: TestIdp;
let worker: CeleryWorker;
let collector: ZipkinCollector;
let gateway: PlatformNode;
let domain: PlatformNode;
let ports: { gateway: number; domain: number };
let w: World;
const tokens = new Map<string, string>();

async function token(account: string): Promise<string> {
  let t = tokens.get(account);
  if (!t) tokens.set(account, (t = (await idp.getToken(account)).accessToken));
  return t;
}

async function api(
  method: string,
  path: string,
  opts: { as?: string; body?: unknown; headers?: Record<string, string> } = {},
): Promise<ApiResponse> {
  const headers: Record<string, string> = { ...opts.headers };
  if (opts.as) headers.authorization = `Bearer ${await token(opts.as)}`;
  if (opts.body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(`${gateway.url}/api/v1${path}`, {
    method,
    headers,
    body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
  });
  const text = await res.text();
  const body: unknown = text ? JSON.parse(text) : null;
  return { status: res.status, headers: res.headers, body, json: <T>() => body as T };
}

const scrape = async (port: number) => {
  const res = await fetch(`http://127.0.0.1:${port}/metrics`);
  expect(res.status).toBe(200);
  expect(res.headers.get("content-type")).toBe("text/plain; version=0.0.4; charset=utf-8");
  return res.text();
};

beforeAll(async () => {
  const queue = `obs-${randomBytes(4).toString("hex")}`;
  [db, idp, collector, worker] = await Promise.all([
    createTestDatabase(),
    startIdp(),
    startZipkinCollector(),
    startCeleryWorker({ queue, brokerUrl: AMQP_URL, resultBackend: RESULTS }),
  ]);
  ports = { gateway: await freePort(), domain: await freePort() };
  ({ gateway, domain } = await startGatewayAndDomain(
    db.url,
    namespace,
    {
      OIDC_ISSUER: idp.issuer,
      REDIS_URL,
      CELERY_BROKER_URL: AMQP_URL,
      CELERY_RESULT_BACKEND: RESULTS,
      CELERY_QUEUE: queue,
      TRACING_EXPORTER: "zipkin",
      TRACING_ZIPKIN_URL: collector.url,
    },
    ["auth", "courses", "labs", "lab-instances", "access", "tasks"],
    { gateway: { METRICS_PORT: String(ports.gateway) }, domain: { METRICS_PORT: String(ports.domain) } },
  ));
  const p = { api, userId: undefined, broker: domain.broker, sequelize: domain.sequelize, config: domain.config };
  p.userId = (async (account: string) =>
    (await api("GET", "/auth/me", { as: account })).json<{ id: number }>().id) as never;
  w = await world({ ...p, url: gateway.url } as unknown as WorldPlatform, 1);
}, 120_000);

afterAll(async () => {
  // Each step on its own: a failed start leaves some of these unset.
  for (const step of [() => gateway.stop(), () => domain.stop(), () => worker.stop(), () => collector.stop()]) {
    await Promise.resolve()
      .then(step)
      .catch(() => undefined);
  }
  await Promise.allSettled([Promise.resolve().then(() => db.drop()), Promise.resolve().then(() => idp.stop())]);
});

describe("metrics after the main scenario", () => {
  let afterScenario: { gateway: string; domain: string };

  beforeAll(async () => {
    const before = { gateway: samples(await scrape(ports.gateway)), domain: samples(await scrape(ports.domain)) };
    const started = await w.start(w.labs[0]);
    expect(started.status).toBe(202);
    const id = started.json<Instance>().id;
    await until("running", async () => (await w.get(id)).status === "running", 20_000);
    const running = samples(await scrape(ports.domain));
    expect(running.get('lab_instances{status="running"}')).toBe(1);
    expect((await api("POST", `/lab-instances/${id}/stop`, { as: "student" })).status).toBe(202);
    await until("stopped", async () => (await w.get(id)).status === "stopped", 20_000);
    afterScenario = { gateway: await scrape(ports.gateway), domain: await scrape(ports.domain) };
    const after = { gateway: samples(afterScenario.gateway), domain: samples(afterScenario.domain) };
    const delta = (node: "gateway" | "domain", key: string) =>
      (after[node].get(key) ?? 0) - (before[node].get(key) ?? 0);
    Object.assign(moved, {
      startPosts: delta("gateway", 'http_requests_total{method="POST",route="/api/v1/lab-instances",status="202"}'),
      startTimed: delta("gateway", 'http_request_duration_seconds_count{method="POST",route="/api/v1/lab-instances"}'),
      stopPosts: delta(
        "gateway",
        'http_requests_total{method="POST",route="/api/v1/lab-instances/:id/stop",status="202"}',
      ),
      startLab: delta("domain", 'celery_tasks_sent_total{task="start_lab"}'),
      stopLab: delta("domain", 'celery_tasks_sent_total{task="stop_lab"}'),
      startDurations: delta("domain", "lab_start_duration_seconds_count"),
      resultsApplied: delta("domain", 'celery_result_apply_lag_seconds_count{task="start_lab"}'),
      running: after.domain.get('lab_instances{status="running"}'),
    });
  }, 60_000);
  const moved: Record<string, number | undefined> = {};

  it("serves the seed's names on each node's ops port, in Prometheus text", () => {
    for (const name of [
      "http_requests_total",
      "http_request_duration_seconds",
      "database_queries_total",
      "cache_hits_total",
      "cache_misses_total",
      "celery_tasks_sent_total",
    ]) {
      const text = name.startsWith("http_") ? afterScenario.gateway : afterScenario.domain;
      expect(text).toContain(`# TYPE ${name} ${name === "http_request_duration_seconds" ? "histogram" : "counter"}`);
    }
    for (const name of [
      "outbox_backlog",
      "outbox_oldest_unsent_age_seconds",
      "celery_results_awaiting",
      "lab_instances",
    ]) {
      expect(afterScenario.domain).toContain(`# TYPE ${name} gauge`);
    }
    expect(afterScenario.domain).toContain("# TYPE lab_start_duration_seconds histogram");
    expect(afterScenario.domain).toContain("# TYPE celery_result_apply_lag_seconds histogram");
    // What the node's host is (command line, OS user, addresses) is nobody's business at a scrape.
    expect(afterScenario.gateway).not.toMatch(/process_arguments|os_user|os_network|hostname|nodeID/);
    console.log(
      "Seed metrics after the main scenario (gateway, then domain):\n" +
        [
          ...afterScenario.gateway.split("\n").filter((l) => /^http_requests_total\{.*lab-instances/.test(l)),
          ...afterScenario.gateway
            .split("\n")
            .filter((l) =>
              /^http_request_duration_seconds_(count|sum)\{method="POST",route="\/api\/v1\/lab-instances"/.test(l),
            ),
          ...afterScenario.domain
            .split("\n")
            .filter((l) =>
              /^(database_queries_total|cache_(hits|misses)_total|celery_tasks_sent_total|lab_instances|lab_start_duration_seconds_count)/.test(
                l,
              ),
            ),
        ].join("\n"),
    );
  });

  it("has every metric the Grafana dashboard (k8s/grafana-dashboard.json) queries", () => {
    const dashboard = JSON.parse(readFileSync(join(__dirname, "../../k8s/grafana-dashboard.json"), "utf8")) as {
      panels: { targets: { expr: string }[] }[];
    };
    const exprs = dashboard.panels.flatMap((p) => p.targets.map((t) => t.expr));
    const names = new Set(
      exprs
        .flatMap((e) => e.match(/[a-z][a-z0-9_]*_[a-z0-9_]+/g) ?? [])
        .filter((n) => n !== "histogram_quantile" && n !== "rate_interval")
        .map((n) => n.replace(/_bucket$/, "")),
    );
    expect(names.size).toBeGreaterThan(10);
    const scraped = `${afterScenario.gateway}\n${afterScenario.domain}`;
    for (const name of names) expect(`${name}: ${scraped.includes(`# TYPE ${name} `)}`).toBe(`${name}: true`);
  });

  it("moves each counter by exactly what the scenario did", () => {
    expect(moved).toEqual({
      startPosts: 1,
      startTimed: 1,
      stopPosts: 1,
      startLab: 1,
      stopLab: 1,
      startDurations: 1,
      resultsApplied: 1,
      running: 0,
    });
  });

  it("is clean for promtool check metrics, on both nodes", async () => {
    for (const text of [afterScenario.gateway, afterScenario.domain]) {
      const result = await promtool(text);
      expect(result).toEqual({ code: 0, output: "" });
    }
  });

  it("counts cache hits and misses per scope", async () => {
    const course = `/courses/${w.course}`;
    // A write to courses invalidates its scope: the next read misses, the one after hits.
    expect((await api("PUT", course, { as: "teacher", body: { description: "metrics" } })).status).toBe(200);
    const before = samples(await scrape(ports.domain));
    expect((await api("GET", course, { as: "teacher" })).status).toBe(200);
    const mid = samples(await scrape(ports.domain));
    expect((await api("GET", course, { as: "teacher" })).status).toBe(200);
    const after = samples(await scrape(ports.domain));
    const of = (m: Map<string, number>, k: string) => m.get(k) ?? 0;
    expect(of(mid, 'cache_misses_total{scope="courses"}') - of(before, 'cache_misses_total{scope="courses"}')).toBe(1);
    expect(of(mid, 'cache_hits_total{scope="courses"}') - of(before, 'cache_hits_total{scope="courses"}')).toBe(0);
    expect(of(after, 'cache_hits_total{scope="courses"}') - of(mid, 'cache_hits_total{scope="courses"}')).toBe(1);
    expect(of(after, 'cache_misses_total{scope="courses"}') - of(mid, 'cache_misses_total{scope="courses"}')).toBe(0);
  });

  it("counts every SQL statement a node sends: one per readiness check on a gateway node", async () => {
    const count = async () => samples(await scrape(ports.gateway)).get("database_queries_total") ?? NaN;
    const before = await count();
    expect((await fetch(`${gateway.url}/readyz`)).status).toBe(200);
    expect((await fetch(`${gateway.url}/readyz`)).status).toBe(200);
    expect((await count()) - before).toBe(2);
  });

  it("labels unrouted paths as one route and counts 404s", async () => {
    const key = 'http_requests_total{method="GET",route="unmatched",status="404"}';
    const before = samples(await scrape(ports.gateway)).get(key) ?? 0;
    for (const path of ["/api/v1/nope-1", "/api/v1/nope-2", "/wp-admin.php"]) {
      expect((await fetch(`${gateway.url}${path}`)).status).toBe(404);
    }
    expect(samples(await scrape(ports.gateway)).get(key)).toBe(before + 3);
  });
});

describe("probes", () => {
  it("answers /livez and /readyz on the ops port of each node and on the gateway's API port", async () => {
    for (const base of [`http://127.0.0.1:${ports.gateway}`, `http://127.0.0.1:${ports.domain}`, gateway.url]) {
      const live = await fetch(`${base}/livez`);
      expect(live.status).toBe(200);
      expect(await live.json()).toMatchObject({ status: "alive" });
      const ready = await fetch(`${base}/readyz`);
      expect(ready.status).toBe(200);
      expect(await ready.json()).toMatchObject({ status: "ready", checks: { database: "ok", transporter: "ok" } });
    }
    // What each node needs: sessions' Redis on the gateway, the Celery publisher and the outbox on the tasks node.
    const gw = (await (await fetch(`http://127.0.0.1:${ports.gateway}/readyz`)).json()) as { checks: object };
    expect(gw.checks).toEqual({ database: "ok", transporter: "ok", redis: "ok" });
    const dom = (await (await fetch(`http://127.0.0.1:${ports.domain}/readyz`)).json()) as { checks: object };
    expect(dom.checks).toEqual({ database: "ok", transporter: "ok", celery_publisher: "ok", outbox: "ok" });
  });

  it("never serves /metrics on the API port", async () => {
    expect((await fetch(`${gateway.url}/metrics`)).status).toBe(404);
  });

  it("names the Celery publisher as rabbitmq and the transporter separately in /api/v1/health", async () => {
    const health = await api("GET", "/health");
    expect(health.status).toBe(200);
    expect(health.body).toMatchObject({
      status: "healthy",
      checks: { database: "ok", redis: "ok", rabbitmq: "ok", transporter: "ok" },
    });
  });
});

describe("tracing", () => {
  it("continues a client's traceparent across both nodes and into the Celery message", async () => {
    await w.reset();
    const traceId = randomBytes(16).toString("hex");
    const parentId = randomBytes(8).toString("hex");
    const res = await api("POST", "/lab-instances", {
      as: "student",
      body: { lab_id: w.labs[0], course_id: w.course },
      headers: { traceparent: `00-${traceId}-${parentId}-01` },
    });
    expect(res.status).toBe(202);
    // The request id is the trace id: one id to look for in logs, traces and the client's report.
    expect(res.headers.get("x-request-id")).toBe(traceId);
    const id = res.json<Instance>().id;

    // Zipkin's exporter sends every 5 s.
    const spans = await until(
      "spans of the start on both nodes",
      () => {
        const mine = collector.spans.filter((s) => s.traceId === traceId);
        const nodes = new Set(mine.map((s) => s.tags.nodeID));
        return Promise.resolve(nodes.has(gateway.broker.nodeID) && nodes.has(domain.broker.nodeID) && mine);
      },
      20_000,
    );
    const byName = new Map(spans.map((s) => [s.name, s]));
    // moleculer-web names its span after the route.
    const rest = byName.get("POST /api/v1/lab-instances");
    const create = byName.get("action 'lab-instances.create'");
    expect(rest?.tags.nodeID).toBe(gateway.broker.nodeID);
    expect(create?.tags.nodeID).toBe(domain.broker.nodeID);
    // The gateway's span is the child of the client's; the create span descends from the gateway's.
    expect(rest?.parentId).toBe(parentId);
    const ids = new Set(spans.map((s) => s.id));
    expect(byName.get("action 'auth.authenticate'")?.parentId).toBe(rest?.id);
    expect(create?.parentId).toBe(rest?.id);
    expect(spans.every((s) => s.parentId === parentId || ids.has(s.parentId ?? ""))).toBe(true);
    console.log(
      `One request's spans (trace ${traceId}):\n` +
        spans.map((s) => `  ${s.tags.nodeID.padEnd(24)} ${s.id} ← ${s.parentId ?? "-"}  ${s.name}`).join("\n"),
    );

    // The start_lab message carries the create span as its parent: the worker saw it in its headers.
    const [row] = (
      await domain.sequelize.query("SELECT id, traceparent FROM task_outbox WHERE lab_instance_id = $id", {
        bind: { id },
      })
    )[0] as { id: string; traceparent: string }[];
    expect(row.traceparent).toBe(`00-${traceId}-${create?.id}-01`);
    await until("the worker's trace context line", () =>
      Promise.resolve(worker.output().includes(`start_lab ${row.id}: traceparent=${row.traceparent}`)),
    );
  });
});
