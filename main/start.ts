/**
 * `npm start`: one node of the platform. With no environment at all this is the embedded platform: the
 * PGlite server and the embedded IdP as child processes, migrations applied, demo data seeded once, all
 * seven services in this process. Each external part set in the environment replaces its stand-in.
 *
 * Embedded, the node also listens on `<DATA_DIR>/node.sock` (platform/local-socket-transporter.ts) so that
 * `npm run repl` can join it as a node without services; a cluster's REPL joins through TRANSPORTER.
 *
 * SIGTERM/SIGINT: the gateway stops taking connections and answers the requests it has, then the broker
 * stops (in-flight calls finish, Moleculer's tracking), then the pool closes, then the child processes stop.
 */
import path from "node:path";
import type { ServiceBroker } from "moleculer";
import type { Sequelize } from "sequelize";
import { drainGateway } from "../services/api-gateway/api-gateway.service";
import { issuerOf } from "../services/auth/auth.service";
import { ConfigError, loadConfig, type Config } from "../platform/config";
import { createSequelize } from "../platform/db";
import { createPlatformBroker } from "./broker";
import { startReadyChild, type ReadyChild } from "../platform/child-process";
// dev/ is loaded (dynamic import) only when no DATABASE_URL is set: never in production.
import type { EmbeddedPostgres } from "../dev/embedded-postgres";
import { migrateUp } from "../platform/migrator";
import { LocalSocketTransporter, embeddedSocketPath } from "../platform/local-socket-transporter";

const log = (level: "info" | "warn" | "error", msg: string) => {
  const line = `[${new Date().toISOString().substring(11, 23)}] ${level.toUpperCase().padEnd(5)} START: ${msg}`;
  (level === "info" ? console.log : console.error)(line);
};

interface Running {
  broker?: ServiceBroker;
  sequelize?: Sequelize;
  postgres?: EmbeddedPostgres;
  idp?: ReadyChild;
}

async function startIdp(config: Config): Promise<ReadyChild> {
  log(
    "warn",
    `OIDC_ISSUER is not set: starting the EMBEDDED identity provider on port ${config.oidc.embeddedPort} (demo accounts, development only, never production)`,
  );
  return startReadyChild({
    name: "embedded IdP",
    command: process.execPath,
    args: [
      path.join(__dirname, "../dev/embedded-idp.js"),
      "--port",
      String(config.oidc.embeddedPort),
      "--data-dir",
      config.dataDir,
    ],
    env: process.env,
    ready: /embedded IdP listening on (\S+)/,
    timeoutMs: 30_000,
    onLine: (line) => line.trim() && console.log(`  [idp] ${line}`),
  });
}

async function main(): Promise<void> {
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      console.error(err.message);
      process.exit(2);
    }
    throw err;
  }
  const running: Running = {};
  let stopping = false;
  const shutdown = async (signal: string, exitCode = 0) => {
    if (stopping) return;
    stopping = true;
    log("info", `${signal}: stopping`);
    const hardStop = setTimeout(() => process.exit(1), 30_000);
    hardStop.unref();
    try {
      // HTTP first: requests already received are answered while the services they call still run.
      if (running.broker) await drainGateway(running.broker, 10_000);
      await running.broker?.stop();
      await running.sequelize?.close();
      await running.idp?.stop();
      await running.postgres?.stop();
    } finally {
      process.exit(exitCode);
    }
  };
  process.on("SIGTERM", () => void shutdown("SIGTERM"));
  process.on("SIGINT", () => void shutdown("SIGINT"));

  try {
    const started = Date.now();
    let databaseUrl = config.databaseUrl;
    if (!databaseUrl) {
      log(
        "info",
        `DATABASE_URL is not set: starting the embedded PostgreSQL (PGlite) with data in ${path.resolve(config.dataDir, "pg")}`,
      );
      const { startEmbeddedPostgres } = await import("../dev/embedded-postgres");
      running.postgres = await startEmbeddedPostgres({
        dataDir: config.dataDir,
        port: config.embeddedPgPort,
        maxConnections: config.databasePoolMax + 5,
      });
      databaseUrl = running.postgres.url;
    }
    const needsIdp = !config.oidc.issuer && config.services.includes("auth");
    const idpStarting = needsIdp ? startIdp(config) : undefined;

    // One connection to PGlite: it runs one statement at a time anyway, and pglite-socket 0.2 interleaves
    // the extended-protocol messages of concurrent connections (electric-sql/pglite#1046: wrong results,
    // "unnamed prepared statement does not exist", or a jammed queue).
    const poolMax = running.postgres ? 1 : config.databasePoolMax;
    running.sequelize = createSequelize(databaseUrl, {
      poolMax,
      applicationName: `autolabs-${config.nodeId ?? process.pid}`,
      // Not on the embedded PGlite: its connections share one session (platform/db.ts).
      preparedStatements: config.databaseUrl !== undefined,
    });
    // The embedded database is ours to migrate; in a cluster the deploy runs `npm run migrate -- up` (an init container).
    if (running.postgres || process.env.MIGRATE_ON_START === "true") {
      const applied = await migrateUp(running.sequelize);
      if (applied.length) log("info", `migrations applied: ${applied.join(", ")}`);
    }
    if (running.postgres && (await (await import("../dev/demo-seed")).seedDemoData(running.sequelize))) {
      log("info", "demo data seeded: users admin, teacher, student, student2; course 'Introduction to Linux'");
    }
    if (idpStarting) running.idp = await idpStarting;

    running.broker = createPlatformBroker(
      config,
      running.sequelize,
      config.mode === "embedded"
        ? { transporter: new LocalSocketTransporter({ path: embeddedSocketPath(config.dataDir), role: "hub" }) }
        : {},
    );
    await running.broker.start();
    log(
      "info",
      `platform ready in ${Date.now() - started} ms: http://localhost:${config.port}/api/v1/health (services: ${config.services.join(", ")}; identity: ${issuerOf(config)})`,
    );
  } catch (err) {
    log("error", `start-up failed: ${err instanceof Error ? err.message : String(err)}`);
    await shutdown("start-up failure", 1);
  }
}

void main();
