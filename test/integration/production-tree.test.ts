/**
 * The production tree, as the image has it: package.json, package-lock.json, the launcher (main/run.js) and the
 * compiled dist/ without tests and dev stand-ins, dependencies from `npm ci --omit=dev` (no TypeScript). Its
 * commands run there without a compiler: `npm run migrate`, `npm start` (cluster mode: PostgreSQL, RabbitMQ,
 * Redis, an external IdP), `npm run repl`; `npm run token` (a development tool) says so. The Dockerfile's and
 * the manifests' commands name files that exist in it.
 *
 * `npm ci --omit=dev --prefer-offline` is the real install the image does; from npm's cache it took ~25 s on the
 * 2-core CI machine (it goes to the registry only for a package the cache lacks).
 */
import { spawn, spawnSync } from "node:child_process";
import { cpSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { randomBytes } from "node:crypto";
import { Client } from "pg";
import { startIdp, type TestIdp } from "../support/idp";
import { freePort } from "../support/net";
import { AMQP_URL, PG_ADMIN_URL, REDIS_URL } from "../support/platform";
import { startPty } from "../support/pty";

jest.setTimeout(300_000);

const ROOT = path.resolve(__dirname, "../..");
let tree: string;
let idp: TestIdp | undefined;
const dbName = `autolabs_prod_${randomBytes(5).toString("hex")}`;
const dbUrl = (() => {
  const u = new URL(PG_ADMIN_URL);
  u.pathname = `/${dbName}`;
  return u.toString();
})();
const namespace = `prod-${randomBytes(4).toString("hex")}`;

/** A production environment: no NODE_ENV=development, nothing of the developer's shell. */
function prodEnv(extra: Record<string, string> = {}): Record<string, string> {
  return { PATH: process.env.PATH ?? "", HOME: tree, NODE_ENV: "production", DATABASE_URL: dbUrl, ...extra };
}

function npm(args: string[], env: Record<string, string>) {
  const r = spawnSync("npm", args, { cwd: tree, env, encoding: "utf8", timeout: 120_000 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

async function withAdmin<T>(fn: (c: Client) => Promise<T>): Promise<T> {
  const c = new Client({ connectionString: PG_ADMIN_URL });
  await c.connect();
  try {
    return await fn(c);
  } finally {
    await c.end();
  }
}

beforeAll(async () => {
  tree = mkdtempSync(path.join(tmpdir(), "autolabs-prod-"));
  for (const f of ["package.json", "package-lock.json", "main/run.js"]) cpSync(path.join(ROOT, f), path.join(tree, f));
  // dist/ as the image ships it: no compiled tests, no dev stand-ins, no compiler state.
  cpSync(path.join(ROOT, "dist"), path.join(tree, "dist"), {
    recursive: true,
    filter: (src) => !/[/\\]dist[/\\](test|dev)([/\\]|$)|\.tsbuildinfo$/.test(src),
  });
  const install = spawnSync("npm", ["ci", "--omit=dev", "--no-audit", "--no-fund", "--prefer-offline"], {
    cwd: tree,
    env: { PATH: process.env.PATH ?? "", HOME: process.env.HOME ?? tree },
    encoding: "utf8",
    timeout: 240_000,
  });
  if (install.status !== 0) throw new Error(`npm ci --omit=dev failed:\n${install.stderr}`);
  await withAdmin((c) => c.query(`CREATE DATABASE ${dbName}`));
  idp = await startIdp();
});

afterAll(async () => {
  await idp?.stop();
  await withAdmin((c) => c.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`)).catch(() => undefined);
  rmSync(tree, { recursive: true, force: true });
});

it("has no compiler, no tests and no dev stand-ins", () => {
  expect(existsSync(path.join(tree, "node_modules/typescript"))).toBe(false);
  expect(existsSync(path.join(tree, "node_modules/moleculer"))).toBe(true);
  expect(existsSync(path.join(tree, "dist/main/start.js"))).toBe(true);
  expect(existsSync(path.join(tree, "dist/test"))).toBe(false);
  expect(existsSync(path.join(tree, "dist/dev"))).toBe(false);
});

it("npm run migrate: up, then status, against DATABASE_URL", () => {
  const up = npm(["run", "-s", "migrate", "--", "up"], prodEnv());
  expect(up.stderr).not.toMatch(/tsc|not found/);
  expect(up.status).toBe(0);
  const status = npm(["run", "-s", "migrate", "--", "status"], prodEnv());
  expect(status.status).toBe(0);
  expect(status.stdout).toMatch(/^applied {2}0001-initial-schema$/m);
  expect(status.stdout).toMatch(/\d+ applied, 0 pending/);
});

it("npm run token says it is a development tool", () => {
  const token = npm(["run", "-s", "token", "--", "teacher"], prodEnv());
  expect(token.status).toBe(2);
  expect(token.stderr).toMatch(/dev\/token-cli is a development tool/);
});

it("npm start runs a cluster node, npm run repl joins it, SIGTERM stops it", async () => {
  const port = await freePort();
  const env = prodEnv({
    TRANSPORTER: AMQP_URL,
    NAMESPACE: namespace,
    NODEID: `${namespace}-node`,
    CACHER: REDIS_URL,
    REDIS_URL,
    OIDC_ISSUER: idp!.issuer,
    PORT: String(port),
  });
  // Its own process group: the signal reaches npm, its shell and node together, as a container stop does.
  const node = spawn("npm", ["start"], { cwd: tree, env, detached: true });
  let out = "";
  node.stdout.on("data", (c: Buffer) => (out += c.toString()));
  node.stderr.on("data", (c: Buffer) => (out += c.toString()));
  const exited = new Promise<number | null>((resolve) => node.once("exit", (code) => resolve(code)));
  try {
    const deadline = Date.now() + 90_000;
    while (!/platform ready in/.test(out)) {
      if (Date.now() > deadline || node.exitCode !== null) throw new Error(`npm start did not become ready:\n${out}`);
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(out).not.toMatch(/tsc/);
    expect((await fetch(`http://127.0.0.1:${port}/api/v1/health`)).status).toBe(200);
    // The teacher's first request creates their user row.
    const token = (await idp!.getToken("teacher")).accessToken;
    const me = await fetch(`http://127.0.0.1:${port}/api/v1/auth/me`, {
      headers: { authorization: `Bearer ${token}` },
    });
    expect(me.status).toBe(200);

    const repl = startPty("npm", ["run", "-s", "repl"], { ...env, OPERATOR: "ops" }, tree);
    try {
      await repl.until(/Joined .*services: .*courses[\s\S]*autolabs \$ /, 60_000);
      expect(await repl.command("whois teacher@autolabs.local", /autolabs \$ /, 30_000)).toMatch(/role teacher/);
      repl.type("q");
      expect(await repl.exited(20_000)).toBe(0);
    } finally {
      repl.kill();
    }
  } finally {
    if (node.pid && node.exitCode === null) process.kill(-node.pid, "SIGTERM");
  }
  await exited;
  expect(out).toMatch(/SIGTERM: stopping/);
});

it("the Dockerfile's and manifests' commands name files of the production tree", () => {
  const texts = [readFileSync(path.join(ROOT, "Dockerfile"), "utf8")];
  for (const f of readdirSync(path.join(ROOT, "k8s"))) {
    if (/\.ya?ml$/.test(f)) texts.push(readFileSync(path.join(ROOT, "k8s", f), "utf8"));
  }
  const files = new Set(texts.flatMap((t) => [...t.matchAll(/\b((?:dist|main)\/[\w./-]+\.js)\b/g)].map((m) => m[1])));
  expect([...files]).toEqual(expect.arrayContaining(["dist/main/start.js", "dist/main/migrate-cli.js"]));
  for (const f of files) expect([f, existsSync(path.join(tree, f))]).toEqual([f, true]);
  // The image's npm scripts go through the launcher, which the image must ship.
  const scripts = (
    JSON.parse(readFileSync(path.join(tree, "package.json"), "utf8")) as { scripts: Record<string, string> }
  ).scripts;
  for (const name of ["start", "migrate", "repl"]) expect(scripts[name]).toMatch(/^exec node main\/run\.js main\//);
  expect(texts[0]).toMatch(/COPY --from=build \/app\/main\/run\.js/);
});
