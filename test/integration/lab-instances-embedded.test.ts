/**
 * Lab instances on the embedded PostgreSQL (PGlite via pglite-server), the database `npm start` uses with no
 * environment. PGlite runs one statement at a time and, while a transaction is open, serves only that
 * connection: a query outside the transaction (or a lock wait across connections) would hang. This runs the
 * contended paths there: 50 concurrent starts with their row locks, the sweeper's advisory try-lock every
 * 100 ms, and the tasks service's simulated runner taking an instance to running and back to stopped.
 *
 * Pool of ONE connection: pglite-socket (0.2.x) interleaves the extended-protocol messages (Parse/Bind/
 * Execute/Sync) of different connections outside a transaction, so with a pool of 10 concurrent queries
 * clobber each other's unnamed statement ("unnamed prepared statement does not exist", or silently the
 * wrong statement) and its queue can wedge for good: upstream electric-sql/pglite#1046 (fix proposed in
 * #977). Here it failed 3 runs out of 3 with DATABASE_POOL_MAX=10 and never with 1. PGlite runs one
 * statement at a time anyway, so one connection costs nothing (50 starts: ~650 ms vs ~950 ms).
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { startEmbeddedPostgres, type EmbeddedPostgres } from "../../dev/embedded-postgres";
import { migrateUp } from "../../platform/migrator";
import { createSequelize } from "../../platform/db";
import { startIdp, type TestIdp } from "../support/idp";
import { startNode, type ApiResponse, type PlatformNode } from "../support/platform";
import {
  must,
  openStream,
  statusOf,
  until,
  world,
  type Instance,
  type World,
  type WorldPlatform,
} from "../support/lab-instances";
import { freePort } from "../support/net";
import { Chromium } from "../support/chromium";

const dataDir = mkdtempSync(path.join(tmpdir(), "autolabs-li-embedded-"));
let pg: EmbeddedPostgres | undefined;
let idp: TestIdp | undefined;
let node: PlatformNode | undefined;
let p: WorldPlatform;
let w: World;
const tokens = new Map<string, string>();

async function token(account: string): Promise<string> {
  let t = tokens.get(account);
  if (!t) {
    t = (await idp!.getToken(account)).accessToken;
    tokens.set(account, t);
  }
  return t;
}

beforeAll(async () => {
  pg = await startEmbeddedPostgres({ dataDir, port: await freePort(), maxConnections: 20 });
  const migrator = createSequelize(pg.url, { poolMax: 1 });
  await migrateUp(migrator);
  await migrator.close();
  idp = await startIdp();
  node = await startNode(pg.url, {
    OIDC_ISSUER: idp.issuer,
    LAB_SWEEP_INTERVAL_MS: "100",
    DATABASE_POOL_MAX: "1",
  });
  const n = node;
  const api = async (
    method: string,
    apiPath: string,
    opts: { as?: string; body?: unknown; headers?: Record<string, string> } = {},
  ) => {
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.as) headers.authorization = `Bearer ${await token(opts.as)}`;
    let body: string | undefined;
    if (opts.body !== undefined) {
      body = JSON.stringify(opts.body);
      headers["content-type"] = "application/json";
    }
    const res = await fetch(`${n.url}/api/v1${apiPath}`, { method, headers, body });
    const text = await res.text();
    const parsed: unknown = text ? JSON.parse(text) : null;
    const answer: ApiResponse = { status: res.status, headers: res.headers, body: parsed, json: <T>() => parsed as T };
    return answer;
  };
  p = {
    api,
    userId: async (account: string) =>
      must("me", await api("GET", "/auth/me", { as: account }), 200).json<{ id: number }>().id,
    broker: n.broker,
    sequelize: n.sequelize,
    config: n.config,
    url: n.url,
  };
  w = await world(p, 2);
}, 180_000);

afterAll(async () => {
  await node?.stop();
  await idp?.stop();
  await pg?.stop();
  if (existsSync(dataDir)) rmSync(dataDir, { recursive: true, force: true });
}, 60_000);

it("50 concurrent starts on PGlite: one 202, 49 × 409, no hang", async () => {
  const t0 = Date.now();
  const answers = await Promise.all(Array.from({ length: 50 }, () => w.start(w.labs[1])));
  const ms = Date.now() - t0;
  expect(answers.filter((a) => a.status === 202)).toHaveLength(1);
  expect(answers.filter((a) => a.status === 409)).toHaveLength(49);
  console.log(`PGlite: 50 concurrent starts of one lab: ${ms} ms`);
}, 60_000);

it("start → running by the simulated runner → stop → stopped, streamed over SSE", async () => {
  const inst = must("start", await w.start(w.labs[0]), 202).json<Instance>();
  const s = await openStream(p, `/lab-instances/${inst.id}/events`, await token("student"));
  await until("running", async () => (await w.get(inst.id)).status === "running", 20_000);
  must("connection", await p.api("GET", `/lab-instances/${inst.id}/connection`, { as: "student" }), 200);
  must("stop", await p.api("POST", `/lab-instances/${inst.id}/stop`, { as: "student" }), 202);
  await until("stopped", async () => (await w.get(inst.id)).status === "stopped", 20_000);
  await s.ended;
  expect(s.events.map(statusOf)).toEqual(["pending", "running", "stopping", "stopped"]);
}, 60_000);

it("the simulated connection URL serves a placeholder page naming the lab and instance (HTTP and Chromium)", async () => {
  const inst = must("start", await w.start(w.labs[1], "student2"), 202).json<Instance>();
  await until("running", async () => (await w.get(inst.id)).status === "running", 20_000);
  const conn = must(
    "connection",
    await p.api("GET", `/lab-instances/${inst.id}/connection`, { as: "student2" }),
    200,
  ).json<{ connection_url: string; port: number }>();
  const url = new URL(conn.connection_url);
  expect(url.pathname).toBe(`/simulated-lab/${inst.id}/${inst.celery_task_id}`);
  // PUBLIC_URL's own port (the node listens on a free one here).
  expect(conn.port).toBe(Number(url.port || 80));
  const local = `${node!.url}${url.pathname}`;

  const page = await fetch(local);
  expect(page.status).toBe(200);
  expect(page.headers.get("content-type")).toBe("text/html; charset=utf-8");
  const html = await page.text();
  expect(html).toContain(`<h1 id="lab">${inst.lab_name}</h1>`);
  expect(html).toContain(`<strong id="instance">${inst.id}</strong>`);
  expect(html).toContain(inst.course_name);
  // The task id is the capability: another id, a wrong or malformed task id → 404, telling nothing.
  for (const bad of [
    `/simulated-lab/${inst.id}/00000000-0000-4000-8000-000000000000`,
    `/simulated-lab/${inst.id + 1000}/${inst.celery_task_id}`,
    `/simulated-lab/${inst.id}/x`,
  ]) {
    const res = await fetch(`${node!.url}${bad}`);
    expect([bad, res.status]).toEqual([bad, 404]);
    expect(await res.text()).not.toContain(inst.lab_name);
  }

  const chromium = await Chromium.launch();
  try {
    const tab = await chromium.newPage();
    await tab.goto(local);
    const shown = await tab.evaluate<{ lab: string; instance: string; title: string }>(
      "({ lab: document.getElementById('lab').textContent, instance: document.getElementById('instance').textContent, title: document.title })",
    );
    expect(shown).toEqual({
      lab: inst.lab_name,
      instance: String(inst.id),
      title: `${inst.lab_name}: simulated lab instance ${inst.id}`,
    });
  } finally {
    await chromium.close();
  }
  must("stop", await p.api("POST", `/lab-instances/${inst.id}/stop`, { as: "student2" }), 202);
}, 60_000);
