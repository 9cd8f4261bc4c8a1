/**
 * `npm start`'s program as a user runs it: no environment but ports and a data dir. The embedded platform
 * (PGlite and the IdP as child processes, migrations, demo seed) becomes healthy; the token script gives a
 * teacher's token; the teacher lists the demo course, creates a course and a lab and submits it; the admin
 * approves it. SIGTERM stops everything, children included; a restart on the same data keeps the data and
 * does not seed twice.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import { startReadyChild, type ReadyChild } from "../../platform/child-process";
import { freePort } from "../support/net";

const DIST = resolve(__dirname, "../../dist");
const run = promisify(execFile);

let env: NodeJS.ProcessEnv;
let base: string;
let dataDir: string;
let platform: ReadyChild | undefined;

async function start(): Promise<ReadyChild> {
  return startReadyChild({
    name: "embedded platform",
    command: process.execPath,
    args: [join(DIST, "main/start.js")],
    env,
    ready: /platform ready in (\d+) ms/,
    timeoutMs: 90_000,
  });
}

async function token(account: string): Promise<string> {
  const { stdout } = await run(process.execPath, [join(DIST, "dev/token-cli.js"), account], { env });
  return stdout.trim();
}

async function api(method: string, path: string, tok: string, body?: unknown) {
  const res = await fetch(`${base}/api/v1${path}`, {
    method,
    headers: { authorization: `Bearer ${tok}`, ...(body ? { "content-type": "application/json" } : {}) },
    body: body ? JSON.stringify(body) : undefined,
  });
  return { status: res.status, body: (await res.json()) as Record<string, unknown> };
}

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), "autolabs-embedded-"));
  const [port, idpPort, pgPort] = [await freePort(), await freePort(), await freePort()];
  env = {
    PATH: process.env.PATH,
    PORT: String(port),
    EMBEDDED_IDP_PORT: String(idpPort),
    // The default 3030 may be taken on a shared machine; this test is not about metrics.
    METRICS_PORT: "0",
    EMBEDDED_PG_PORT: String(pgPort),
    DATA_DIR: dataDir,
    LOGLEVEL: "warn",
  };
  base = `http://127.0.0.1:${port}`;
});

afterAll(async () => {
  await platform?.stop(20_000);
  rmSync(dataDir, { recursive: true, force: true });
});

it("starts healthy with no configuration and serves the teacher's and admin's first workflow", async () => {
  platform = await start();
  const health = await fetch(`${base}/api/v1/health`);
  expect(health.status).toBe(200);
  expect(await health.json()).toMatchObject({
    status: "healthy",
    checks: { database: "ok", redis: "embedded", rabbitmq: "embedded" },
  });

  const teacher = await token("teacher");
  const admin = await token("admin");
  const courses = await api("GET", "/courses", teacher);
  expect(courses.status).toBe(200);
  expect(courses.body).toMatchObject({ total: 1, items: [{ name: "Introduction to Linux" }] });
  // The demo course is listed: a student outside it finds it in the catalog.
  const catalog = await api("GET", "/courses/catalog", await token("student2"));
  expect(catalog.body).toMatchObject({ total: 1, items: [{ name: "Introduction to Linux", membership: "none" }] });

  expect((await api("POST", "/courses", teacher, { name: "Operating systems" })).status).toBe(201);
  const lab = await api("POST", "/labs", teacher, {
    name: "Shell lab",
    docker_image: "debian:12-slim",
    resources: { cpu: "250m", memory: "256Mi", storage: "1Gi" },
  });
  expect(lab.status).toBe(201);
  const labId = lab.body.id as number;
  expect((await api("POST", `/labs/${labId}/submit`, teacher)).body.status).toBe("pending_approval");
  const approved = await api("POST", `/labs/${labId}/approve`, admin);
  expect(approved.status).toBe(200);
  expect(approved.body.status).toBe("approved");
}, 120_000);

it("stops on SIGTERM with its child processes, and restarts on its data without seeding twice", async () => {
  const child = platform!.child;
  const exited = new Promise<number | null>((r) => child.once("exit", (code) => r(code)));
  child.kill("SIGTERM");
  expect(await exited).toBe(0);
  // The embedded IdP and PGlite were stopped before the platform exited: their ports are free again.
  expect(platform!.output()).toMatch(/embedded IdP stopping/);
  platform = await start();
  const teacher = await token("teacher");
  const courses = await api("GET", "/courses", teacher);
  expect(courses.body.total).toBe(2);
}, 120_000);
