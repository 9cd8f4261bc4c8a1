/**
 * `npm run repl`: the operator's console. It joins the running platform as a node with NO services
 * (moleculer-repl on a bare broker) and sees the live registry (`nodes`, `services`, `actions`):
 * - cluster (TRANSPORTER set): through the same transporter as every node;
 * - embedded: through the socket the embedded node (`npm start`) listens on, `<DATA_DIR>/node.sock`
 *   (platform/local-socket-transporter.ts). Nothing of the platform runs in this process, so `q` ends it alone.
 *
 * Every call acts as the system principal unless it brings its own `meta.user`, and carries the operator's
 * name (OPERATOR, else the OS user), which the serving node logs with the action (platform/access-gate.ts).
 * The operator commands below call services through their contracts (system-only actions), never SQL.
 */
import fs from "node:fs";
import { createRequire } from "node:module";
import os from "node:os";
import { ServiceBroker, type Middleware } from "moleculer";
import { ConfigError, loadConfig, type Config } from "../platform/config";
import { brokerOptions } from "../platform/moleculer.config";
import { LocalSocketTransporter, embeddedSocketPath } from "../platform/local-socket-transporter";
import type { RequestMeta, SystemPrincipal } from "../lib/principal";
import { AUTH_ACTIONS, type UserRow } from "../services/auth/auth.contract";
import { COURSES_ACTIONS, type UserCourse } from "../services/courses/courses.contract";
import {
  LAB_INSTANCES_ACTIONS,
  type InspectedInstance,
  type LabInstanceRow,
  type SweepReport,
} from "../services/lab-instances/lab-instances.contract";
import { TASKS_ACTIONS, type OutboxEntry, type TasksHealth } from "../services/tasks/tasks.contract";
import {
  briefError,
  formatCacheStats,
  formatInstances,
  formatOutbox,
  formatRelay,
  formatSweep,
  formatWhois,
  maskEnv,
  type MetricSnapshot,
} from "./repl-format";

function operatorName(config: Config): string {
  if (config.operator) return config.operator;
  try {
    return os.userInfo().username || "unknown";
  } catch {
    return "unknown"; // a container user without a passwd entry
  }
}

/**
 * Every call from this node: the system principal with the operator's name unless the call brings a user,
 * and a one-line error instead of moleculer-repl's printed stack (a 404 is an answer, not a crash).
 */
function operatorCalls(operator: string): Middleware {
  const principal: SystemPrincipal = { kind: "system", reason: `repl: ${operator}`, operator };
  const middleware = {
    name: "OperatorCalls",
    call(next: ServiceBroker["call"]): ServiceBroker["call"] {
      return async function (this: unknown, actionName: string, params?: unknown, opts?: { meta?: RequestMeta }) {
        const meta: RequestMeta = { ...(opts?.meta ?? {}) };
        meta.user ??= principal;
        try {
          return await next(actionName, params, { ...opts, meta });
        } catch (err) {
          if (err instanceof Error) err.stack = briefError(err);
          throw err;
        }
      };
    },
  };
  // Moleculer's typings give the `call` hook the wrong result (a Promise); it returns the wrapped call.
  return middleware as unknown as Middleware;
}

/** What moleculer-repl hands a custom command (its typings say string[]). */
interface CommandArgs {
  options: Record<string, string | boolean | undefined>;
  [operand: string]: unknown;
}

type Action = (broker: ServiceBroker, args: CommandArgs) => Promise<string>;

/** moleculer-repl's custom command (Moleculer's ReplCustomCommand, whose `args` type is wrong). */
interface OperatorCommand {
  command: string;
  description: string;
  options?: { option: string; description: string }[];
  action(broker: ServiceBroker, args: unknown): Promise<void>;
}

/** A command whose answer (or error, one line) is printed; it never throws into the REPL. */
function command(def: Omit<OperatorCommand, "action">, run: Action): OperatorCommand {
  return {
    ...def,
    async action(broker, args) {
      try {
        console.log(await run(broker, args as CommandArgs));
      } catch (err) {
        console.error(`>> ${briefError(err)}`);
      }
    },
  };
}

const operand = (args: CommandArgs, name: string): string | undefined =>
  typeof args[name] === "string" ? args[name] : undefined;

/** Live nodes (other than this one) that run `service`. */
function nodesRunning(broker: ServiceBroker, service: string): string[] {
  const ids = new Set<string>();
  for (const s of broker.registry.getServiceList({ onlyAvailable: true, skipInternal: true }) as {
    name: string;
    nodeID: string;
  }[]) {
    if (s.name === service && s.nodeID !== broker.nodeID) ids.add(s.nodeID);
  }
  return [...ids].sort();
}

async function findUser(broker: ServiceBroker, query: string): Promise<UserRow> {
  return broker.call<UserRow, { query: string }>(AUTH_ACTIONS.findUser, { query });
}

const CACHE_SCOPES_ACTION = "cacheInvalidate";

/** Services whose answers are cached (they answer `<name>.cacheInvalidate`). */
function cacheScopes(broker: ServiceBroker): string[] {
  const names = new Set<string>();
  for (const a of broker.registry.getActionList({ onlyAvailable: true, skipInternal: true }) as { name: string }[]) {
    if (a.name.endsWith(`.${CACHE_SCOPES_ACTION}`)) names.add(a.name.slice(0, -CACHE_SCOPES_ACTION.length - 1));
  }
  return [...names].sort();
}

const OPERATOR_COMMANDS: OperatorCommand[] = [
  command(
    { command: "whois <query>", description: "A user by e-mail or id: role, courses, active lab instances" },
    async (broker, args) => {
      const user = await findUser(broker, operand(args, "query") ?? "");
      const [courses, active] = await Promise.all([
        broker.call<UserCourse[], { user_id: number }>(COURSES_ACTIONS.ofUser, { user_id: user.id }),
        broker.call<InspectedInstance[], { student_id: number; active: boolean }>(LAB_INSTANCES_ACTIONS.inspect, {
          student_id: user.id,
          active: true,
        }),
      ]);
      return formatWhois(user, courses, active);
    },
  ),
  command(
    {
      command: "instances",
      description: "Lab instances, latest change last: --stuck (pending/stopping too long), --student <email|id>",
      options: [
        { option: "--stuck", description: "only pending or stopping for longer than --after seconds" },
        { option: "--after <seconds>", description: "what --stuck means (default 60)" },
        { option: "--student <student>", description: "a student's instances (e-mail or id)" },
      ],
    },
    async (broker, args) => {
      const o = args.options;
      const params: { stuck?: boolean; stuck_after_s?: number; student_id?: number; limit: number } = { limit: 100 };
      if (o.stuck === true) params.stuck = true;
      if (typeof o.after === "string") params.stuck_after_s = Number(o.after);
      if (typeof o.student === "string") params.student_id = (await findUser(broker, o.student)).id;
      const rows = await broker.call<InspectedInstance[], typeof params>(LAB_INSTANCES_ACTIONS.inspect, params);
      return formatInstances(rows);
    },
  ),
  command(
    { command: "stop <instance>", description: "Stop a lab instance (stop_lab goes to the workers)" },
    async (broker, args) => {
      const id = Number(operand(args, "instance"));
      const row = await broker.call<LabInstanceRow, { id: number }>(LAB_INSTANCES_ACTIONS.stop, { id });
      return `instance ${row.id}: ${row.status}`;
    },
  ),
  command(
    {
      command: "outbox [action] [id]",
      description: "Task outbox: newest rows, --unsent for the backlog (oldest first); `outbox retry <id>`",
      options: [{ option: "--unsent", description: "only rows not yet published" }],
    },
    async (broker, args) => {
      const action = operand(args, "action");
      if (action === "retry") {
        const id = operand(args, "id");
        if (!id) return "usage: outbox retry <id>";
        const r = await broker.call<{ id: string; retry: string }, { id: string }>(TASKS_ACTIONS.retry, { id });
        return `outbox row ${r.id}: ${r.retry}`;
      }
      if (action !== undefined) return `unknown: outbox ${action} (outbox [--unsent] | outbox retry <id>)`;
      const rows = await broker.call<OutboxEntry[], { unsent: boolean; limit: number }>(TASKS_ACTIONS.outbox, {
        unsent: args.options.unsent === true,
        limit: 50,
      });
      return formatOutbox(rows, new Date());
    },
  ),
  command({ command: "sweep", description: "Run the lab-instance expiry sweep now" }, async (broker) =>
    formatSweep(await broker.call<SweepReport>(LAB_INSTANCES_ACTIONS.sweep)),
  ),
  command(
    {
      command: "cache <action> [scope]",
      description: "`cache stats` (hits, misses per node and scope) | `cache clear <scope|all>`",
    },
    async (broker, args) => {
      const action = operand(args, "action");
      if (action === "stats") {
        const nodes = broker.registry.getNodeList({ onlyAvailable: true, withServices: false }) as {
          id: string;
          local: boolean;
        }[];
        const stats = await Promise.all(
          nodes
            .filter((n) => !n.local)
            .map(async (n) => ({
              node: n.id,
              metrics: await broker
                .call<MetricSnapshot[], { types: string; includes: string }>(
                  "$node.metrics",
                  { types: "counter", includes: "**cache**" },
                  { nodeID: n.id },
                )
                .catch(() => []),
            })),
        );
        return formatCacheStats(stats.sort((a, b) => a.node.localeCompare(b.node)));
      }
      if (action === "clear") {
        const scopes = cacheScopes(broker);
        const scope = operand(args, "scope");
        if (!scope || (scope !== "all" && !scopes.includes(scope))) {
          return `usage: cache clear <${[...scopes, "all"].join("|")}>`;
        }
        const cleared: string[] = [];
        for (const s of scope === "all" ? scopes : [scope]) {
          // Each node running the scope drops its copies (node-local caches); with Redis the first one suffices,
          // the rest are cheap.
          for (const nodeID of nodesRunning(broker, s)) {
            await broker.call(`${s}.${CACHE_SCOPES_ACTION}`, { patterns: [`${s}.**`] }, { nodeID });
            cleared.push(`${s}@${nodeID}`);
          }
        }
        return `cleared: ${cleared.join(", ") || "nothing (no node runs it)"}`;
      }
      return "usage: cache stats | cache clear <scope|all>";
    },
  ),
  command(
    { command: "relay", description: "The outbox relay of every tasks node: broker state, confirms, backlog" },
    async (broker) => {
      const nodes = nodesRunning(broker, "tasks");
      const answers = await Promise.all(
        nodes.map(async (node) => ({
          node,
          health: await broker
            .call<TasksHealth, object>(TASKS_ACTIONS.health, {}, { nodeID: node })
            .catch((err: unknown) => ({ error: briefError(err) })),
        })),
      );
      return formatRelay(answers);
    },
  ),
];

/**
 * moleculer-repl's own `cache keys|clear` and `clear` read this node's cacher, and a REPL node has none (an
 * empty table): `cache` here is the operator command over the platform's caches. moleculer-repl registers each
 * file of its commands/ folder by calling the file's `register` when the REPL starts; those become no-ops.
 */
function dropBuiltinCacheCommands(): void {
  const load = createRequire(require.resolve("moleculer-repl"));
  for (const file of ["./src/commands/cache.js", "./src/commands/clear.js"]) {
    (load(file) as { register: () => void }).register = () => undefined;
  }
}

/** Until the registry knows another node with services (the INFO exchange), at most `timeoutMs`. */
async function waitForPeers(broker: ServiceBroker, timeoutMs: number): Promise<boolean> {
  const until = Date.now() + timeoutMs;
  while (Date.now() < until) {
    if (broker.registry.getServiceList({ onlyAvailable: true, skipInternal: true }).length > 0) return true;
    await new Promise((r) => setTimeout(r, 100));
  }
  return false;
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
  const operator = operatorName(config);
  let transporter;
  if (config.transporter) {
    transporter = brokerOptions(config).transporter;
  } else if (config.mode === "embedded") {
    const socket = embeddedSocketPath(config.dataDir);
    if (!fs.existsSync(socket)) {
      console.error(`No embedded platform is running here (${socket} does not exist): start it with \`npm start\`.`);
      process.exit(1);
    }
    transporter = new LocalSocketTransporter({ path: socket, role: "client" });
  } else {
    console.error("This node runs without TRANSPORTER (one node, no cluster to join): set TRANSPORTER for the REPL.");
    process.exit(2);
  }

  const options = brokerOptions(config);
  const broker = new ServiceBroker({
    ...options,
    nodeID: `repl-${operator}-${os.hostname()}-${process.pid}`,
    transporter,
    // Readable warnings only: the console is for the operator's commands.
    logger: { type: "Console", options: { level: "warn", colors: true, moduleColors: false } },
    logLevel: "warn",
    cacher: null,
    metrics: { enabled: false },
    middlewares: [operatorCalls(operator)],
    replOptions: { customCommands: OPERATOR_COMMANDS, delimiter: "autolabs $" },
    // Moleculer's own SIGINT/SIGTERM handlers stop this broker (no children here to order).
    skipProcessEventRegistration: false,
  });
  try {
    await broker.start();
  } catch (err) {
    console.error(`cannot join the platform: ${briefError(err)}`);
    process.exit(1);
  }
  const found = await waitForPeers(broker, 10_000);
  const services = [
    ...new Set(
      (broker.registry.getServiceList({ onlyAvailable: true, skipInternal: true }) as { name: string }[]).map(
        (s) => s.name,
      ),
    ),
  ].sort();
  console.log(
    found
      ? `Joined ${config.namespace} as ${broker.nodeID}; services: ${services.join(", ")}.`
      : `Joined ${config.namespace} as ${broker.nodeID}; no other node has answered yet (see \`nodes\`).`,
  );
  console.log(
    `Calls act as the system principal, logged as operator "${operator}". Operator commands: ${OPERATOR_COMMANDS.map((c) => c.command.split(" ")[0]).join(", ")} (help).`,
  );
  dropBuiltinCacheCommands();
  // `env` prints process.env: from here on it holds masked values (the broker copied what it needs).
  const masked = maskEnv(process.env);
  for (const name of Object.keys(process.env)) process.env[name] = masked[name];
  broker.repl();
}

void main();
