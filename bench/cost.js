/**
 * `npm run bench:cost`: CPU per request, the platform against the raw baseline, for the same fixed number of
 * requests. On a shared machine req/s moves with everybody else's load; the CPU time a server process spends
 * on N requests moves far less, so platform µs/request ÷ baseline µs/request is the cost ratio that the
 * throughput ratio approaches on a quiet machine where both are CPU-bound.
 *
 * Per scenario and round, each side: `BENCH_COST_WARMUP` unrecorded requests, then the CPU time (utime + stime
 * from /proc/<pid>/stat, summed over the platform's nodes) across `BENCH_COST_REQUESTS` requests from
 * `BENCH_CONNECTIONS` keep-alive connections. Rounds alternate the sides; min and median are printed.
 *
 * Env: BENCH_TOPOLOGY (one-node; embedded | one-node | cluster), BENCH_SCENARIOS (courses-cold,lab-instances,
 * courses-cached), BENCH_COST_REQUESTS (2000), BENCH_COST_WARMUP (500), BENCH_COST_ROUNDS (3),
 * BENCH_CONNECTIONS (10), BENCH_NODE_ARGS (node flags for the platform nodes, e.g. --cpu-prof, see lib.js),
 * BENCH_PLATFORM_ENV (JSON object of extra env for the platform nodes), BENCH_COST_BEFORE (a built checkout of
 * another commit, e.g. `git archive <commit> | tar -x -C dir`, node_modules linked, `npx tsc`: its platform runs
 * as a third side, "before", interleaved with the other two, so before/after compare under the same load).
 */
const { readFileSync } = require("node:fs");
const lib = require("./lib");

const list = (raw) =>
  raw
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
const TOPOLOGY = process.env.BENCH_TOPOLOGY ?? "one-node";
const SCENARIOS = list(process.env.BENCH_SCENARIOS ?? "courses-cold,lab-instances,courses-cached");
const REQUESTS = Number(process.env.BENCH_COST_REQUESTS ?? 2000);
const WARMUP = Number(process.env.BENCH_COST_WARMUP ?? 500);
const ROUNDS = Number(process.env.BENCH_COST_ROUNDS ?? 3);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 10);
const { fmt, cpuUs, median } = lib;

/**
 * The servers every side leans on, found by process name: a request's cost includes the work it makes them do
 * (the platform's cache round trips in Redis, the cluster's hops through RabbitMQ, the statements in PostgreSQL).
 * Sides run one at a time, so each side's phase is charged only with its own work.
 */
const SERVERS = { postgres: /^postgres$/, redis: /^redis-server$/, rabbitmq: /^beam\.smp$/ };

/** CPU µs of each server process now, by pid (name: which server). */
function serverSnapshot() {
  const { readdirSync } = require("node:fs");
  const snap = new Map();
  for (const pid of readdirSync("/proc").filter((d) => /^\d+$/.test(d))) {
    try {
      const comm = readFileSync(`/proc/${pid}/comm`, "utf8").trim();
      const name = Object.keys(SERVERS).find((k) => SERVERS[k].test(comm));
      if (name) snap.set(pid, { name, us: cpuUs(pid) });
    } catch {
      // exited meanwhile
    }
  }
  return snap;
}

/**
 * CPU each server spent between two snapshots: per process that is there at the end (a connection's backend
 * started meanwhile counts from 0). A process that exited in between takes its CPU with it (PostgreSQL backends
 * of connections the pool closed): an undercount, never a negative figure.
 */
function serverCpuSince(start) {
  const spent = { postgres: 0, redis: 0, rabbitmq: 0 };
  for (const [pid, { name, us }] of serverSnapshot()) spent[name] += us - (start.get(pid)?.us ?? 0);
  return spent;
}

lib.runMain(async () => {
  const idp = await lib.startBenchIdp();
  const subs = Array.from({ length: lib.SEED.students }, (_, i) => `bench-student-${i}`);
  const tokens = await lib.studentTokens(idp, subs);
  const before = process.env.BENCH_COST_BEFORE;
  const [platformDb, baselineDb, beforeDb] = await Promise.all([
    lib.seededDatabase(),
    lib.seededDatabase(),
    before ? lib.seededDatabase() : undefined,
  ]);
  const platformEnv = {
    MAX_ACTIVE_INSTANCES_PER_STUDENT: "100",
    RATE_LIMIT_RPS: "0",
    RATE_LIMIT_LAB_STARTS_PER_MIN: "0",
    ...JSON.parse(process.env.BENCH_PLATFORM_ENV ?? "{}"),
  };
  const platform = await lib.startTopology(TOPOLOGY, { dbUrl: platformDb.url, issuer: idp.issuer, env: platformEnv });
  const previous = before
    ? await lib.startTopology(TOPOLOGY, { dbUrl: beforeDb.url, issuer: idp.issuer, env: platformEnv, root: before })
    : undefined;
  const baseline = await lib.startBaseline({ dbUrl: baselineDb.url, issuer: idp.issuer, maxActive: 100 });
  await lib.waitRouted(platform.gateways, ["/courses", "/labs", "/lab-instances", "/auth/me"], tokens[0]);
  await lib.waitRouted([baseline.url], ["/courses"], tokens[0]);
  if (previous) await lib.waitRouted(previous.gateways, ["/courses", "/labs", "/lab-instances"], tokens[0]);
  const sides = {
    platform: {
      targets: platform.gateways,
      pids: platform.nodes.map((n) => n.pid),
      courseId: platformDb.courseId,
      labIds: platformDb.labIds,
    },
    baseline: {
      targets: [baseline.url],
      pids: [baseline.pid],
      courseId: baselineDb.courseId,
      labIds: baselineDb.labIds,
    },
  };
  if (previous) {
    sides.before = {
      targets: previous.gateways,
      pids: previous.nodes.map((n) => n.pid),
      courseId: beforeDb.courseId,
      labIds: beforeDb.labIds,
    };
  }
  // Cache-cold keys must never repeat across rounds: each side's sequence continues where its last run ended.
  const offsets = { platform: 0, baseline: 0, before: 0 };
  const out = [
    lib.machineLine(),
    `${TOPOLOGY}: CPU µs per request over ${REQUESTS} requests (after ${WARMUP} unrecorded), ` +
      `${CONNECTIONS} connections, ${ROUNDS} rounds; platform CPU summed over ${platform.nodes.length} node(s)`,
    "",
    "| scenario | platform µs/req min · median | baseline µs/req min · median | cost ratio (median) | " +
      `throughput-equivalent (baseline ÷ platform, median) |${previous ? " before µs/req min · median |" : ""}`,
    `|---|---|---|---|---|${previous ? "---|" : ""}`,
  ];
  const serverRows = [];
  for (const scenario of SCENARIOS) {
    const per = { platform: [], baseline: [], before: [] };
    const noServers = () => ({ postgres: [], redis: [], rabbitmq: [] });
    const servers = { platform: noServers(), baseline: noServers(), before: noServers() };
    for (let round = 0; round < ROUNDS; round++) {
      // The order of the sides rotates per round, so no side always runs right after the same other one.
      const names = Object.keys(sides);
      for (const name of names.slice(round % names.length).concat(names.slice(0, round % names.length))) {
        const side = sides[name];
        let before = 0;
        let spent = 0;
        let serversBefore = serverSnapshot();
        let serversSpent = { postgres: 0, redis: 0, rabbitmq: 0 };
        const total = () => side.pids.reduce((s, pid) => s + cpuUs(pid), 0);
        const r = await lib.runLoad(
          {
            targets: side.targets,
            scenario,
            connections: CONNECTIONS,
            durationS: 0,
            requests: REQUESTS,
            warmupRequests: WARMUP,
            tokens,
            courseId: side.courseId,
            labIds: side.labIds,
            startOffset: offsets[name],
          },
          async (phase) => {
            if (phase === "warm") {
              before = total();
              serversBefore = serverSnapshot();
            } else {
              spent = total() - before;
              serversSpent = serverCpuSince(serversBefore);
            }
          },
        );
        offsets[name] += REQUESTS + WARMUP + CONNECTIONS;
        if (r.errors) throw new Error(`${name} ${scenario}: unexpected answers ${JSON.stringify(r.statuses)}`);
        per[name].push(spent / r.requests);
        for (const k of Object.keys(SERVERS)) servers[name][k].push(serversSpent[k] / r.requests);
        console.error(`${scenario} round ${round + 1} ${name}: ${fmt(spent / r.requests)} µs/req, ${fmt(r.rps)} req/s`);
      }
    }
    const [p, b] = [median(per.platform), median(per.baseline)];
    out.push(
      `| ${scenario} | ${fmt(Math.min(...per.platform))} · ${fmt(p)} | ${fmt(Math.min(...per.baseline))} · ${fmt(b)} | ` +
        `${fmt(p / b, 2)} | **${fmt(b / p, 2)}** |` +
        (previous ? ` ${fmt(Math.min(...per.before))} · ${fmt(median(per.before))} |` : ""),
    );
    const serverCells = (side) => Object.keys(SERVERS).map((k) => fmt(median(servers[side][k])));
    const withServers = (side) =>
      median(per[side]) + Object.keys(SERVERS).reduce((sum, k) => sum + median(servers[side][k]), 0);
    serverRows.push(
      `| ${scenario} | ${serverCells("platform").join(" · ")} | ${serverCells("baseline").join(" · ")} | ` +
        `**${fmt(withServers("baseline") / withServers("platform"), 2)}** |`,
    );
  }
  await Promise.all([platform.stop(), baseline.stop(), previous?.stop()]);
  out.push(
    "",
    "CPU the servers spent per request (median µs, PostgreSQL · Redis · RabbitMQ, every process of that name on the " +
      "machine) and the ratio counting them too:",
    "",
    "| scenario | platform's servers | baseline's servers | baseline ÷ platform, servers included (median) |",
    "|---|---|---|---|",
    ...serverRows,
  );
  console.log(out.join("\n"));
});
