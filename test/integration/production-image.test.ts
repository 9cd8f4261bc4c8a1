/**
 * The production image, as far as it can be checked without a Docker engine:
 * - the Dockerfile's stages: build (compiler) → deps (`npm ci --omit=dev`) → runtime with package.json,
 *   node_modules and dist/ only, numeric USER, node HEALTHCHECK, APP_VERSION build arg; every COPY source
 *   exists and passes .dockerignore;
 * - the image's file set, built here exactly as the build stage does (tsc -p tsconfig.build.json, dist/dev
 *   deleted): no tests, no dev stand-ins, the CMD/HEALTHCHECK/k8s entry files present, and no module it
 *   loads is a devDependency;
 * - that tree run as the image runs it: start refuses embedded mode with the variable to set, the
 *   HEALTHCHECK script against a real HTTP server, `migrate-cli wait` (the k8s init container) against real
 *   PostgreSQL, as a role without DDL, waiting until another process migrates.
 */
import { spawn } from "node:child_process";
import { randomBytes } from "node:crypto";
import { copyFileSync, cpSync, existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, symlinkSync } from "node:fs";
import { createServer, type Server } from "node:http";
import { builtinModules } from "node:module";
import { tmpdir } from "node:os";
import path from "node:path";
import { Client } from "pg";
import { createSequelize } from "../../platform/db";
import { migrateUp } from "../../platform/migrator";
import { migrations } from "../../platform/migrations";
import { freePort } from "../support/net";
import { PG_ADMIN_URL } from "../support/platform";

const ROOT = path.resolve(__dirname, "../..");
const read = (rel: string) => readFileSync(path.join(ROOT, rel), "utf8");

interface Instruction {
  op: string;
  args: string;
}
interface Stage {
  from: string;
  name: string | undefined;
  steps: Instruction[];
}

/** Dockerfile → stages of instructions (comments dropped, `\` continuations joined). */
function parseDockerfile(text: string): Stage[] {
  const logical = text
    .replace(/\\\n/g, " ")
    .split("\n")
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith("#"));
  const stages: Stage[] = [];
  for (const line of logical) {
    const [, op, args] = /^(\w+)\s+(.*)$/.exec(line) ?? [];
    if (!op) throw new Error(`unparsed Dockerfile line: ${line}`);
    if (op.toUpperCase() === "FROM") {
      const [from, as, name] = args.split(/\s+/) as [string, string | undefined, string | undefined];
      stages.push({ from, name: as?.toUpperCase() === "AS" ? name : undefined, steps: [] });
    } else if (stages.length) stages[stages.length - 1].steps.push({ op: op.toUpperCase(), args });
  }
  return stages;
}

const stages = parseDockerfile(read("Dockerfile"));
const runtime = stages[stages.length - 1];
const stage = (name: string) => stages.find((s) => s.name === name)!;
const execForm = (args: string): string[] => JSON.parse(args) as string[];
const cmdOf = (s: Stage) => execForm(s.steps.find((i) => i.op === "CMD")!.args);
const healthcheckOf = (s: Stage) => {
  const hc = s.steps.find((i) => i.op === "HEALTHCHECK")!.args;
  return execForm(hc.slice(hc.indexOf("CMD ") + 4));
};

interface Run {
  code: number | null;
  stdout: string;
  stderr: string;
}

/** A child process with only the environment given (never the test's own DATABASE_URL and friends). */
function start(cwd: string, args: string[], env: Record<string, string>) {
  const child = spawn(process.execPath, args, { cwd, env: { PATH: process.env.PATH ?? "", ...env } });
  const out = { stdout: "", stderr: "" };
  child.stdout.on("data", (b: Buffer) => (out.stdout += b.toString()));
  child.stderr.on("data", (b: Buffer) => (out.stderr += b.toString()));
  const done = new Promise<Run>((resolve) => child.on("close", (code) => resolve({ code, ...out })));
  /** Resolves once stdout contains `text` (the process keeps running). */
  const printed = (text: string) =>
    new Promise<void>((resolve, reject) => {
      const check = () => {
        if (out.stdout.includes(text)) resolve();
      };
      child.stdout.on("data", check);
      void done.then((r) =>
        reject(new Error(`exited ${String(r.code)} before printing "${text}": ${r.stdout}${r.stderr}`)),
      );
      check();
    });
  return { child, done, printed };
}

let workspace: string;
let image: string; // the runtime stage's /app, built here

beforeAll(async () => {
  workspace = mkdtempSync(path.join(tmpdir(), "autolabs-image-"));
  // The build stage's /app: only what its COPY instructions bring (a source the build needs but the stage
  // does not copy fails here as it would in `docker build`), and its dependencies (npm ci: all of them).
  const build = path.join(workspace, "build");
  for (const step of stage("build").steps.filter((i) => i.op === "COPY")) {
    const parts = step.args.split(/\s+/);
    const dest = parts[parts.length - 1];
    for (const src of parts.slice(0, -1)) {
      const target = dest.endsWith("/") ? path.join(build, dest, path.basename(src)) : path.join(build, dest);
      cpSync(path.join(ROOT, src), target, { recursive: true });
    }
  }
  symlinkSync(path.join(ROOT, "node_modules"), path.join(build, "node_modules"));
  const compile = stage("build").steps.find((i) => i.op === "RUN" && i.args.includes("tsc"))!.args;
  expect(compile).toBe("npx tsc -p tsconfig.build.json && rm -rf dist/dev");
  const r = await start(build, [require.resolve("typescript/bin/tsc"), "-p", "tsconfig.build.json"], {}).done;
  expect({ code: r.code, out: r.stdout + r.stderr }).toEqual({ code: 0, out: "" });
  rmSync(path.join(build, "dist", "dev"), { recursive: true, force: true });
  // The runtime stage: package.json, dist/ from the build stage, node_modules (here with dev packages too:
  // which of them the tree may load is checked statically below).
  image = path.join(workspace, "app");
  cpSync(path.join(build, "dist"), path.join(image, "dist"), { recursive: true });
  copyFileSync(path.join(ROOT, "package.json"), path.join(image, "package.json"));
  symlinkSync(path.join(ROOT, "node_modules"), path.join(image, "node_modules"));
}, 240_000);

afterAll(() => {
  rmSync(workspace, { recursive: true, force: true });
});

describe("Dockerfile", () => {
  it("builds in a compiler stage, installs production dependencies in another, and ships only their output", () => {
    expect(stages.map((s) => s.name)).toEqual(["build", "deps", undefined]);
    for (const s of stages) expect(s.from).toMatch(/^node:22-bookworm-slim$/);
    expect(
      stage("deps")
        .steps.filter((i) => i.op === "RUN")
        .map((i) => i.args),
    ).toEqual([expect.stringMatching(/^npm ci --omit=dev --ignore-scripts .*&& npm cache clean --force$/)]);
    const copies = runtime.steps.filter((i) => i.op === "COPY" || i.op === "ADD").map((i) => i.args);
    expect(copies.sort()).toEqual(
      [
        "--from=build /app/dist ./dist",
        "--from=build /app/main/run.js ./main/run.js",
        "--from=deps /app/node_modules ./node_modules",
        "package.json ./",
      ].sort(),
    );
  });

  it("runs as a numeric non-root user, with the version as a build argument and a node HEALTHCHECK", () => {
    const user = runtime.steps.filter((i) => i.op === "USER").map((i) => i.args);
    expect(user).toHaveLength(1);
    expect(user[0]).toMatch(/^[1-9]\d*:[1-9]\d*$/);
    expect(runtime.steps).toContainEqual({ op: "ARG", args: 'APP_VERSION=""' });
    expect(runtime.steps.find((i) => i.op === "ENV")?.args).toMatch(/APP_VERSION=\$\{APP_VERSION\}/);
    expect(healthcheckOf(runtime)[0]).toBe("node");
    expect(read("Dockerfile")).toMatch(
      /^HEALTHCHECK --interval=\d+s --timeout=\d+s --start-period=\d+s --retries=\d+ CMD \[/m,
    );
    expect(cmdOf(runtime)).toEqual(["node", "dist/main/start.js"]);
  });

  it("copies only sources that exist and that .dockerignore lets into the build context", () => {
    const ignore = read(".dockerignore")
      .split("\n")
      .map((l) => l.trim())
      .filter((l) => l && !l.startsWith("#"));
    expect(ignore[0]).toBe("*"); // everything out, then only what the build needs back in
    const allowed = ignore.slice(1).map((l) => l.replace(/^!/, "").replace(/\/$/, ""));
    const sources = stages
      .flatMap((s) => s.steps)
      .filter((i) => i.op === "COPY" && !i.args.startsWith("--from="))
      .flatMap((i) => i.args.split(/\s+/).slice(0, -1));
    expect(sources.length).toBeGreaterThan(5);
    for (const src of sources) {
      expect({
        src,
        exists: existsSync(path.join(ROOT, src)),
        allowed: allowed.includes(src.replace(/\/$/, "")),
      }).toEqual({
        src,
        exists: true,
        allowed: true,
      });
    }
    // Nothing the context admits is left unused, and never the tests.
    expect(allowed.filter((a) => !sources.includes(a))).toEqual([]);
    expect(allowed).not.toContain("test");
  });

  it("needs no install script of a production dependency (so `npm ci --ignore-scripts` leaves nothing undone)", () => {
    const lock = JSON.parse(read("package-lock.json")) as {
      packages: Record<string, { dev?: boolean; devOptional?: boolean; hasInstallScript?: boolean }>;
    };
    // Reviewed: es5-ext (via moleculer-repl's clui) has a postinstall that only prints a message; nothing to build.
    // @scarf/scarf (via swagger-ui-dist) posts install analytics: skipping it is what we want.
    const reviewed = ["node_modules/es5-ext", "node_modules/@scarf/scarf"];
    const withScripts = Object.entries(lock.packages)
      .filter(([name, p]) => name !== "" && !p.dev && !p.devOptional && p.hasInstallScript)
      .map(([name]) => name);
    expect(withScripts.filter((name) => !reviewed.includes(name))).toEqual([]);
  });
});

describe("the image's file set", () => {
  const files = (dir: string): string[] =>
    readdirSync(dir, { withFileTypes: true }).flatMap((e) =>
      e.isDirectory() ? files(path.join(dir, e.name)) : [path.join(dir, e.name)],
    );

  it("holds the entry points of CMD, HEALTHCHECK and the k8s commands, and no tests or dev stand-ins", () => {
    const dist = path.join(image, "dist");
    const rel = files(dist).map((f) => path.relative(image, f));
    // package.json: platform/config.ts reads the version from it (compiled in as dist/package.json).
    expect(readdirSync(dist).sort()).toEqual(["lib", "main", "package.json", "platform", "services"]);
    expect(rel.filter((f) => /test|\.map$|\.tsbuildinfo$/.test(f))).toEqual([]);
    for (const entry of [cmdOf(runtime)[1], healthcheckOf(runtime)[1], "dist/main/migrate-cli.js"]) {
      expect(rel).toContain(entry);
    }
  });

  it("loads only node built-ins and production dependencies; dev/ only behind the embedded-mode guard", () => {
    const pkg = JSON.parse(read("package.json")) as {
      dependencies: Record<string, string>;
      devDependencies: Record<string, string>;
    };
    const bare = new Set<string>();
    const intoDev: string[] = [];
    for (const file of files(path.join(image, "dist")).filter((f) => f.endsWith(".js"))) {
      for (const [, spec] of readFileSync(file, "utf8").matchAll(/require\("([^"]+)"\)/g)) {
        if (spec.startsWith(".")) {
          const target = path.resolve(path.dirname(file), spec);
          if (target.startsWith(path.join(image, "dist", "dev"))) intoDev.push(path.relative(image, file));
          else
            expect({
              spec,
              resolves: [target, `${target}.js`, path.join(target, "index.js")].some(existsSync),
            }).toEqual({ spec, resolves: true });
        } else bare.add(spec.startsWith("@") ? spec.split("/").slice(0, 2).join("/") : spec.split("/")[0]);
      }
    }
    const external = [...bare].filter((m) => !m.startsWith("node:") && !builtinModules.includes(m));
    expect(external.filter((m) => !(m in pkg.dependencies))).toEqual([]);
    expect(external.length).toBeGreaterThan(5);
    // Both guarded by requireDevTree (main/dev-tree.ts), checked by running them below.
    expect([...new Set(intoDev)].sort()).toEqual(["dist/main/migrate-cli.js", "dist/main/start.js"]);
  });

  it("reports package.json's version, or the APP_VERSION build argument", async () => {
    const { version } = JSON.parse(read("package.json")) as { version: string };
    const print = "console.log(require('./dist/platform/config').loadConfig().version)";
    // The Dockerfile's ENV sets APP_VERSION to the build argument, empty when none was given.
    expect((await start(image, ["-e", print], { APP_VERSION: "" }).done).stdout.trim()).toBe(version);
    expect((await start(image, ["-e", print], { APP_VERSION: "2.0.0-abc" }).done).stdout.trim()).toBe("2.0.0-abc");
  });

  it("refuses embedded mode at start, naming the variable to set", async () => {
    const noDb = await start(image, ["dist/main/start.js"], {}).done;
    expect(noDb.code).not.toBe(0);
    expect(noDb.stderr).toContain("DATABASE_URL is not set, and this build has no embedded stand-in");
    const noIdp = await start(image, ["dist/main/start.js"], {
      DATABASE_URL: "postgres://nobody@127.0.0.1:1/none",
      SERVICES: "auth",
    }).done;
    expect(noIdp.code).not.toBe(0);
    expect(noIdp.stderr).toContain("OIDC_ISSUER is not set, and this build has no embedded stand-in");
  });

  describe("HEALTHCHECK", () => {
    let server: Server | undefined;
    afterEach(async () => {
      await new Promise((resolve) => (server ? server.close(resolve) : resolve(undefined)));
      server = undefined;
    });
    const serve = async (status: number) => {
      const port = await freePort();
      server = createServer((req, res) => {
        res.statusCode = req.url === "/livez" ? status : 404;
        res.end();
      });
      await new Promise<void>((resolve) => server!.listen(port, "127.0.0.1", resolve));
      return port;
    };
    const check = (port: number) => start(image, healthcheckOf(runtime).slice(1), { METRICS_PORT: String(port) }).done;

    it("passes when /livez on the ops port answers 200", async () => {
      expect((await check(await serve(200))).code).toBe(0);
    });

    it("fails on another status and when nothing listens", async () => {
      const unhealthy = await check(await serve(503));
      expect(unhealthy.code).toBe(1);
      expect(unhealthy.stderr).toContain("/livez answered 503");
      const closed = await check(await freePort());
      expect(closed.code).toBe(1);
      expect(closed.stderr).toContain("ECONNREFUSED");
    });
  });

  describe("migrate-cli wait (the Deployments' init container)", () => {
    const suffix = randomBytes(4).toString("hex");
    const dbName = `autolabs_t_wait_${suffix}`;
    const role = `autolabs_t_ro_${suffix}`;
    const admin = new Client({ connectionString: PG_ADMIN_URL });
    const urlAs = (user: string | undefined) => {
      const u = new URL(PG_ADMIN_URL);
      u.pathname = `/${dbName}`;
      if (user) u.username = user;
      return u.toString();
    };

    beforeAll(async () => {
      await admin.connect();
      await admin.query(`CREATE DATABASE ${dbName}`);
      await admin.query(`CREATE ROLE ${role} LOGIN`);
    });

    afterAll(async () => {
      await admin.query(`DROP DATABASE IF EXISTS ${dbName} WITH (FORCE)`);
      await admin.query(`DROP ROLE IF EXISTS ${role}`);
      await admin.end();
    });

    it("gives up at its timeout while migrations are pending", async () => {
      const r = await start(image, ["dist/main/migrate-cli.js", "wait", "--timeout", "1"], {
        DATABASE_URL: urlAs(undefined),
      }).done;
      expect(r.code).toBe(1);
      expect(r.stderr).toContain(`Gave up after 1 s: ${migrations.length} migration(s) pending`);
    });

    it("waits, as a role without DDL, until another process applies the migrations, then succeeds", async () => {
      // The serving role may read schema_migrations once it exists and nothing more: no CREATE anywhere.
      const db = new Client({ connectionString: urlAs(undefined) });
      await db.connect();
      await db.query(`REVOKE CREATE ON SCHEMA public FROM PUBLIC`);
      await db.query(`GRANT USAGE ON SCHEMA public TO ${role}`);
      await db.query(`ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT SELECT ON TABLES TO ${role}`);
      await db.end();

      const waiting = start(image, ["dist/main/migrate-cli.js", "wait", "--timeout", "120"], {
        DATABASE_URL: urlAs(role),
      });
      await waiting.printed(`${migrations.length} migration(s) pending`);

      const owner = createSequelize(urlAs(undefined), { poolMax: 1 });
      try {
        await migrateUp(owner);
      } finally {
        await owner.close();
      }
      const r = await waiting.done;
      expect({ code: r.code, stderr: r.stderr }).toEqual({ code: 0, stderr: "" });
      expect(r.stdout).toContain("Schema is up to date.");
    });
  });
});
