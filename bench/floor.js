/**
 * `npm run bench:floor`: the framework's fixed floor per request. CPU µs per request of servers that all answer
 * `GET /api/v1/floor` with the same fixed JSON page (one page of GET /lab-instances: 50 rows, Dates serialised per
 * request), no database, each its own process (bench/floor-server.js):
 * - raw: node:http + JSON.stringify;
 * - moleculer-web: a default ServiceBroker + moleculer-web, one action call per request;
 * - moleculer-web+2calls: + route authentication calling an action (as our gateway calls auth.authenticate):
 *   two action calls per request, as a real read;
 * - platform-broker: the same two calls on the broker the platform builds (createPlatformBroker: brokerOptions
 *   and its middlewares, the platform attached), the page action behind AccessGate's role check.
 * What a side costs over raw is what it adds on every request whatever our code does; bench:cost's platform
 * µs/request minus this floor is ours.
 *
 * Per round, each side: `BENCH_COST_WARMUP` unrecorded requests, then the CPU time (utime + stime from
 * /proc/<pid>/stat) of the server across `BENCH_COST_REQUESTS` requests from `BENCH_CONNECTIONS` keep-alive
 * connections. Rounds rotate the order of the sides; min and median are printed.
 *
 * Env: BENCH_COST_REQUESTS (5000), BENCH_COST_WARMUP (1000), BENCH_COST_ROUNDS (3), BENCH_CONNECTIONS (10),
 * BENCH_FLOOR_ROWS (50: a full page; bench:cost's seeded students each list 5 instances, so 5 is its answer),
 * BENCH_FLOOR_SIDES (raw,moleculer-web,moleculer-web+2calls,platform-broker), BENCH_NODE_ARGS (node flags for
 * the servers, e.g. --cpu-prof --cpu-prof-dir=/tmp/prof).
 */
const path = require("node:path");
const lib = require("./lib");

const list = (raw, sep = ",") =>
  raw
    .split(sep)
    .map((s) => s.trim())
    .filter(Boolean);
const SIDES = list(process.env.BENCH_FLOOR_SIDES ?? "raw,moleculer-web,moleculer-web+2calls,platform-broker");
const REQUESTS = Number(process.env.BENCH_COST_REQUESTS ?? 5000);
const WARMUP = Number(process.env.BENCH_COST_WARMUP ?? 1000);
const ROUNDS = Number(process.env.BENCH_COST_ROUNDS ?? 3);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 10);
const ROWS = Number(process.env.BENCH_FLOOR_ROWS ?? 50);
const TOKENS = ["floor-token-a", "floor-token-b", "floor-token-c", "floor-token-d"];
const { fmt, cpuUs, median } = lib;

async function startSide(side) {
  const server = await lib.startServerProcess({
    name: `floor server ${side}`,
    nodeArgs: list(process.env.BENCH_NODE_ARGS ?? "", " "),
    script: path.join(__dirname, "floor-server.js"),
    env: {
      NODE_ENV: "production",
      FLOOR_SIDE: side,
      FLOOR_ROWS: String(ROWS),
      PORT: "0",
      METRICS_PORT: String(await lib.freePort()),
    },
    ready: /floor listening on (http:\/\/\S+)/,
  });
  return { name: side, pid: server.pid, url: server.readyValue, stop: server.stop };
}

lib.runMain(async () => {
  const sides = [];
  for (const name of SIDES) sides.push(await startSide(name));
  // Every side must give the same answer, or the comparison means nothing.
  let expected;
  for (const side of sides) {
    const res = await fetch(`${side.url}/api/v1/floor`, { headers: { authorization: `Bearer ${TOKENS[0]}` } });
    const body = await res.text();
    if (res.status !== 200) throw new Error(`${side.name}: ${res.status} ${body}`);
    if (expected === undefined) expected = body;
    else if (JSON.stringify(JSON.parse(body)) !== JSON.stringify(JSON.parse(expected))) {
      throw new Error(`${side.name} answers a different body than ${sides[0].name}`);
    }
  }
  const out = [
    lib.machineLine(),
    `GET /api/v1/floor (${ROWS} rows, ${Buffer.byteLength(expected)} B JSON, no database): ` +
      `CPU µs per request over ${REQUESTS} requests (after ${WARMUP} unrecorded), ` +
      `${CONNECTIONS} connections, ${ROUNDS} rounds`,
    "",
    "| side | µs/req min · median | req/s median | overhead over raw (µs, median) | raw ÷ side |",
    "|---|---|---|---|---|",
  ];
  const per = Object.fromEntries(sides.map((s) => [s.name, { us: [], rps: [] }]));
  for (let round = 0; round < ROUNDS; round++) {
    // The order of the sides rotates per round, so no side always runs right after the same other one.
    const k = round % sides.length;
    for (const side of sides.slice(k).concat(sides.slice(0, k))) {
      let before = 0;
      let spent = 0;
      const r = await lib.runLoad(
        {
          targets: [side.url],
          scenario: "floor",
          connections: CONNECTIONS,
          durationS: 0,
          requests: REQUESTS,
          warmupRequests: WARMUP,
          tokens: TOKENS,
          labIds: [],
        },
        async (phase) => {
          if (phase === "warm") before = cpuUs(side.pid);
          else spent = cpuUs(side.pid) - before;
        },
      );
      if (r.errors) throw new Error(`${side.name}: unexpected answers ${JSON.stringify(r.statuses)}`);
      per[side.name].us.push(spent / r.requests);
      per[side.name].rps.push(r.rps);
      console.error(`round ${round + 1} ${side.name}: ${fmt(spent / r.requests)} µs/req, ${fmt(r.rps)} req/s`);
    }
  }
  const raw = per.raw ? median(per.raw.us) : NaN;
  for (const side of sides) {
    const { us, rps } = per[side.name];
    const m = median(us);
    out.push(
      `| ${side.name} | ${fmt(Math.min(...us))} · ${fmt(m)} | ${fmt(median(rps))} | ` +
        `${side.name === "raw" ? "—" : fmt(m - raw)} | ${fmt(raw / m, 2)} |`,
    );
  }
  await Promise.all(sides.map((s) => s.stop()));
  console.log(out.join("\n"));
});
