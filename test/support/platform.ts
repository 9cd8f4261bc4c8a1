/**
 * Integration harness: a real platform node in the test process (services chosen per test), a fresh
 * database on the real PostgreSQL with the migrations applied, the embedded IdP as a real child process,
 * and the HTTP gateway on a free port. Everything is torn down by stop().
 */
import { randomBytes } from "node:crypto";
import { PROBE_HEADERS } from "./answer-recorder-env";
import type { AddressInfo } from "node:net";
import type { Server } from "node:http";
import type { ServiceBroker } from "moleculer";
import { Client } from "pg";
import type { Sequelize } from "sequelize";
import { createPlatformBroker } from "../../main/broker";
import { migrateUp } from "../../platform/migrator";
import { loadConfig, type Config } from "../../platform/config";
import { createSequelize } from "../../platform/db";
import { startIdp, type TestIdp } from "./idp";

import { PG_ADMIN_URL, AMQP_URL } from "./servers";

export { PG_ADMIN_URL, REDIS_URL, AMQP_URL } from "./servers";

export interface TestDatabase {
  url: string;
  name: string;
  drop(): Promise<void>;
}

/** A new, migrated database on the real PostgreSQL. */
export async function createTestDatabase(): Promise<TestDatabase> {
  const name = `autolabs_t_${randomBytes(5).toString("hex")}`;
  const admin = new Client({ connectionString: PG_ADMIN_URL });
  await admin.connect();
  await admin.query(`CREATE DATABASE ${name}`);
  await admin.end();
  const url = new URL(PG_ADMIN_URL);
  url.pathname = `/${name}`;
  const sequelize = createSequelize(url.toString(), { poolMax: 2 });
  await migrateUp(sequelize);
  await sequelize.close();
  return {
    url: url.toString(),
    name,
    async drop() {
      const c = new Client({ connectionString: PG_ADMIN_URL });
      await c.connect();
      await c.query(`DROP DATABASE IF EXISTS ${name} WITH (FORCE)`);
      await c.end();
    },
  };
}

export interface PlatformNode {
  broker: ServiceBroker;
  sequelize: Sequelize;
  config: Config;
  /** http://127.0.0.1:<port> of this node's gateway (when it runs one). */
  url: string;
  stop(): Promise<void>;
}

/**
 * Starts one node with the given env (merged over the test defaults) against `databaseUrl`. `pglite`: the URL is
 * the embedded PGlite server, whose connections share one session: no named prepared statements (as main/start.ts).
 */
export async function startNode(
  databaseUrl: string,
  env: Record<string, string> = {},
  opts: { pglite?: boolean } = {},
): Promise<PlatformNode> {
  // Unique node ids: several nodes of one test live in one process (Moleculer's default is host-pid).
  // Errors only: the expected warnings of outage tests would bury a failure's own output (TEST_LOGLEVEL to see more).
  // The per-user rate limits are off unless a test sets them (rate-limit.test.ts): a test drives a few users at
  // machine speed, and a faster machine would turn its setup into 429s.
  const config = loadConfig({
    DATABASE_URL: databaseUrl,
    LOGLEVEL: process.env.TEST_LOGLEVEL ?? "error",
    NODEID: `test-${randomBytes(4).toString("hex")}`,
    RATE_LIMIT_RPS: "0",
    RATE_LIMIT_LAB_STARTS_PER_MIN: "0",
    // Several nodes share this process: no ops server unless a test asks for one (any free port: "0" is off).
    METRICS_PORT: "0",
    ...env,
  });
  // Port 0: any free port, read back below (unless the test needs a known one, e.g. for PUBLIC_URL).
  if (!("PORT" in env)) config.port = 0;
  const sequelize = createSequelize(databaseUrl, {
    poolMax: config.databasePoolMax,
    preparedStatements: opts.pglite !== true,
  });
  const broker = createPlatformBroker(config, sequelize);
  await broker.start();
  let url = "";
  if (config.services.includes("api-gateway")) {
    const gateway = broker.getLocalService("api-gateway") as unknown as { server: Server };
    url = `http://127.0.0.1:${(gateway.server.address() as AddressInfo).port}`;
  }
  return {
    broker,
    sequelize,
    config,
    url,
    async stop() {
      await broker.stop();
      await sequelize.close();
    },
  };
}

/**
 * A gateway node and a domain node over the real RabbitMQ (namespace `namespace`, env `common` on both), the
 * gateway routing the domain node's services once this resolves (it regenerates its aliases when they appear).
 */
export async function startGatewayAndDomain(
  databaseUrl: string,
  namespace: string,
  common: Record<string, string>,
  domainServices: string[],
  own: { gateway?: Record<string, string>; domain?: Record<string, string> } = {},
): Promise<{ gateway: PlatformNode; domain: PlatformNode }> {
  const env = { TRANSPORTER: AMQP_URL, NAMESPACE: namespace, ...common };
  const domain = await startNode(databaseUrl, {
    ...env,
    NODEID: `${namespace}-domain`,
    SERVICES: domainServices.join(","),
    ...own.domain,
  });
  const gateway = await startNode(databaseUrl, {
    ...env,
    NODEID: `${namespace}-gateway`,
    SERVICES: "api-gateway",
    ...own.gateway,
  });
  await gateway.broker.waitForServices(domainServices, 20_000);
  const probe = domainServices.includes("labs") ? "/labs" : "/courses";
  const deadline = Date.now() + 20_000;
  while ((await fetch(`${gateway.url}/api/v1${probe}`, { headers: PROBE_HEADERS })).status === 404) {
    if (Date.now() > deadline) throw new Error("gateway never routed the remote services");
    await new Promise((r) => setTimeout(r, 100));
  }
  return { gateway, domain };
}

export interface TestPlatform extends PlatformNode {
  db: TestDatabase;
  idp: TestIdp;
  /** A Bearer access token of a demo account (admin, teacher, student, student2). */
  token(account: string): Promise<string>;
  /** The users row id of a demo account (created on its first authenticated request). */
  userId(account: string): Promise<number>;
  /** fetch against the gateway with JSON and an optional account's token. */
  api(
    method: string,
    path: string,
    opts?: { as?: string; body?: unknown; headers?: Record<string, string> },
  ): Promise<ApiResponse>;
}

export interface ApiResponse {
  status: number;
  headers: Headers;
  body: unknown;
  // Convenience for tests that know the shape.
  json<T>(): T;
}

/** The usual case: one node with every service, a fresh database, the embedded IdP. */
export async function startTestPlatform(env: Record<string, string> = {}): Promise<TestPlatform> {
  const [db, idp] = await Promise.all([createTestDatabase(), startIdp()]);
  let node: PlatformNode;
  try {
    node = await startNode(db.url, { OIDC_ISSUER: idp.issuer, ...env });
  } catch (err) {
    // A failed start must not leave the IdP child running (jest would never exit).
    await Promise.allSettled([db.drop(), idp.stop()]);
    throw err;
  }
  const tokens = new Map<string, string>();
  const token = async (account: string) => {
    let t = tokens.get(account);
    if (!t) {
      t = (await idp.getToken(account)).accessToken;
      tokens.set(account, t);
    }
    return t;
  };
  const api: TestPlatform["api"] = async (method, path, opts = {}) => {
    const headers: Record<string, string> = { ...opts.headers };
    if (opts.as) headers.authorization = `Bearer ${await token(opts.as)}`;
    let body: string | undefined;
    if (opts.body !== undefined) {
      body = typeof opts.body === "string" ? opts.body : JSON.stringify(opts.body);
      headers["content-type"] ??= "application/json";
    }
    const res = await fetch(`${node.url}/api/v1${path}`, { method, headers, body });
    const text = await res.text();
    let parsed: unknown = text;
    try {
      parsed = text ? JSON.parse(text) : null;
    } catch {
      /* not JSON: keep the text */
    }
    return { status: res.status, headers: res.headers, body: parsed, json: <T>() => parsed as T };
  };
  const userId = async (account: string) => {
    const me = await api("GET", "/auth/me", { as: account });
    if (me.status !== 200) throw new Error(`/auth/me for ${account}: ${me.status} ${JSON.stringify(me.body)}`);
    return (me.body as { id: number }).id;
  };
  return {
    ...node,
    db,
    idp,
    token,
    userId,
    api,
    async stop() {
      await node.stop();
      await Promise.all([db.drop(), idp.stop()]);
    },
  };
}
