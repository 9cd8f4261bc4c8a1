/**
 * Test helper for the cache tests: one or more platform nodes on one fresh database, with the embedded IdP
 * (plus extra accounts: a second teacher, a third student), a chosen cacher (the real Redis on a db of its
 * own under a unique NAMESPACE, or each node's memory), over the real RabbitMQ when there are several nodes.
 * Also: counting the SQL queries a node runs, and holding one query back to stage a race.
 */
import { randomBytes } from "node:crypto";
import { mkdtempSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import Redis from "ioredis";
import type { Sequelize } from "sequelize";
import { statementRunnerOf } from "../../platform/db";
import type { PlatformCacher } from "../../platform/coherent-cache";
import { coherentCacherOf } from "../../platform/coherent-cache";
import { AMQP_URL, createTestDatabase, startNode, type PlatformNode, type TestDatabase } from "./platform";
import { startIdp, type TestIdp } from "./idp";

/** A Redis db no other test file uses; every run also has its own NAMESPACE (key prefix). */
export const CACHE_TEST_REDIS_URL = process.env.TEST_CACHE_REDIS_URL ?? "redis://127.0.0.1:6379/8";

/** Accounts beyond the demo ones (password = login), added through the embedded IdP's accounts file. */
const EXTRA_ACCOUNTS = {
  teacher2: { roles: ["teacher"], name: "Teacher Two" },
  student3: { roles: ["student"], name: "Student Three" },
};

export interface Answer<T = unknown> {
  status: number;
  body: T;
}

export interface CacheCluster {
  db: TestDatabase;
  idp: TestIdp;
  nodes: PlatformNode[];
  namespace: string;
  api<T = Record<string, unknown>>(
    node: number,
    method: string,
    path: string,
    as?: string,
    body?: unknown,
  ): Promise<Answer<T>>;
  /** The users row id of an account (created at its first request). */
  userId(account: string): Promise<number>;
  cacher(node: number): PlatformCacher;
  stop(): Promise<void>;
}

export async function startCacheCluster(opts: {
  nodes: number;
  cacher: "redis" | "memory";
  services?: string;
}): Promise<CacheCluster> {
  const namespace = `cache-${randomBytes(4).toString("hex")}`;
  const accountsDir = mkdtempSync(join(tmpdir(), "autolabs-accounts-"));
  const accountsFile = join(accountsDir, "accounts.json");
  writeFileSync(accountsFile, JSON.stringify(EXTRA_ACCOUNTS));
  const [db, idp] = await Promise.all([
    createTestDatabase(),
    startIdp({ env: { EMBEDDED_IDP_ACCOUNTS_FILE: accountsFile } }),
  ]);
  const nodes: PlatformNode[] = [];
  const stop = async () => {
    for (const n of nodes.reverse()) await n.stop();
    await dropRedisKeys(`${namespace}*`);
    await Promise.allSettled([db.drop(), idp.stop()]);
    rmSync(accountsDir, { recursive: true, force: true });
  };
  try {
    const env: Record<string, string> = {
      OIDC_ISSUER: idp.issuer,
      NAMESPACE: namespace,
      SERVICES: opts.services ?? "api-gateway,auth,courses,labs,lab-instances,access",
      // Started instances stay pending (no tasks service): no sweeper needed while the test runs.
      LAB_SWEEP_INTERVAL_MS: "3600000",
      ...(opts.cacher === "redis" ? { CACHER: CACHE_TEST_REDIS_URL } : {}),
      // A cluster keeps sessions in Redis (auth warns otherwise); unrelated to the cacher under test.
      ...(opts.nodes > 1 ? { TRANSPORTER: AMQP_URL, REDIS_URL: CACHE_TEST_REDIS_URL } : {}),
    };
    for (let i = 0; i < opts.nodes; i++) nodes.push(await startNode(db.url, { ...env, NODEID: `${namespace}-${i}` }));
    if (opts.nodes > 1) {
      // Every node must know every other before a write asks them to invalidate.
      const names = env.SERVICES.split(",").filter((s) => s !== "api-gateway");
      await Promise.all(nodes.map((n) => n.broker.waitForServices(names, 20_000)));
      const deadline = Date.now() + 20_000;
      for (const n of nodes) {
        while (n.broker.registry.getNodeList({ onlyAvailable: true, withServices: false }).length < opts.nodes) {
          if (Date.now() > deadline) throw new Error("nodes never discovered each other");
          await new Promise((r) => setTimeout(r, 100));
        }
      }
    }
  } catch (err) {
    await stop();
    throw err;
  }

  const tokens = new Map<string, string>();
  const token = async (account: string) => {
    let t = tokens.get(account);
    if (!t) tokens.set(account, (t = (await idp.getToken(account)).accessToken));
    return t;
  };
  const api: CacheCluster["api"] = async (node, method, path, as, body) => {
    const headers: Record<string, string> = {};
    if (as) headers.authorization = `Bearer ${await token(as)}`;
    if (body !== undefined) headers["content-type"] = "application/json";
    const res = await fetch(`${nodes[node].url}/api/v1${path}`, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
    });
    const text = await res.text();
    return { status: res.status, body: (text ? JSON.parse(text) : null) as never };
  };
  const ids = new Map<string, number>();
  return {
    db,
    idp,
    nodes,
    namespace,
    api,
    async userId(account) {
      let id = ids.get(account);
      if (id === undefined) {
        const me = await api<{ id: number }>(0, "GET", "/auth/me", account);
        if (me.status !== 200) throw new Error(`/auth/me as ${account}: ${me.status}`);
        ids.set(account, (id = me.body.id));
      }
      return id;
    },
    cacher(node) {
      const c = coherentCacherOf(nodes[node].broker);
      if (!c) throw new Error("no cacher");
      return c;
    },
    stop,
  };
}

/** Entries expire by their TTL, epoch counters never: a test run removes what it left. */
async function dropRedisKeys(pattern: string): Promise<void> {
  const redis = new Redis(CACHE_TEST_REDIS_URL);
  try {
    const keys = await redis.keys(pattern);
    if (keys.length > 0) await redis.del(...keys);
  } finally {
    redis.disconnect();
  }
}

type QueryFn = (...args: unknown[]) => Promise<unknown>;
type QueryTarget = { query: QueryFn };

/** Where a node's SQL goes through: Sequelize itself (transactions, migrations) and the statement runner. */
function queryTargets(sequelize: Sequelize): QueryTarget[] {
  return [sequelize as QueryTarget, statementRunnerOf(sequelize) as QueryTarget];
}

/** Counts the SQL statements `sequelize` runs until `stop()`; `sql` lists them (for a failing assertion). */
export function countQueries(sequelize: Sequelize): { readonly count: number; readonly sql: string[]; stop(): void } {
  const sql: string[] = [];
  const restores = queryTargets(sequelize).map((target) => {
    const original = target.query;
    target.query = function (this: unknown, ...args: unknown[]) {
      sql.push(String(args[0]).replace(/\s+/g, " ").slice(0, 160));
      return original.apply(this, args);
    };
    return () => (target.query = original);
  });
  return {
    get count() {
      return sql.length;
    },
    sql,
    stop() {
      for (const restore of restores) restore();
    },
  };
}

/**
 * Holds back the answer of the first query matching `match` (it has run: its data is pre-write) until
 * `release()`; `reached` resolves when it is held. Stages a reader that computed its answer before a write
 * and stores it after the write's invalidation.
 */
export function holdQuery(
  sequelize: Sequelize,
  match: RegExp,
): { reached: Promise<void>; release(): void; restore(): void } {
  let onReached!: () => void;
  let release!: () => void;
  const reached = new Promise<void>((r) => (onReached = r));
  const released = new Promise<void>((r) => (release = r));
  let armed = true;
  const restores = queryTargets(sequelize).map((target) => {
    const original = target.query;
    target.query = async function (this: unknown, ...args: unknown[]) {
      const result = await original.apply(this, args);
      if (armed && match.test(String(args[0]))) {
        armed = false;
        onReached();
        await released;
      }
      return result;
    };
    return () => (target.query = original);
  });
  return {
    reached,
    release,
    restore: () => {
      for (const restore of restores) restore();
    },
  };
}
