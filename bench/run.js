/**
 * `npm run bench`: the platform side by side with the raw baseline (bench/baseline-server.js), per topology and
 * scenario, in one run. Everything it needs is started here and removed at the end, also on failure or Ctrl-C:
 * a seeded database per side on the real PostgreSQL, the embedded IdP, the platform nodes and the baseline as
 * separate processes, the load generator (bench/load.js) as a separate process. See bench/README.md.
 *
 * Env: BENCH_TOPOLOGY (embedded | one-node | cluster; default: all three), BENCH_SCENARIOS (comma list),
 * BENCH_DURATION_S (10), BENCH_WARMUP_S (2), BENCH_CONNECTIONS (50), BENCH_SOAK_S (0: no soak),
 * BENCH_SOAK_TOPOLOGY (cluster), BENCH_SOAK_SAMPLE_S (10), BENCH_STUDENTS (300).
 */
const lib = require("./lib");

const list = (raw) =>
  raw
    .split(",")
    .map((s) => s.trim())
    .filter(Boolean);
const TOPOLOGIES = list(process.env.BENCH_TOPOLOGY ?? "embedded,one-node,cluster");
const ALL_SCENARIOS = {
  "courses-cached": "GET /courses?limit=50 (cached)",
  "courses-cold": "GET /courses (cache cold: new caller×limit key)",
  labs: "GET /labs?limit=50",
  "lab-instances": "GET /lab-instances?limit=50 (never cached)",
  me: "GET /auth/me",
  "start-stop": "POST start + POST stop of a lab instance",
};
const SCENARIOS = list(process.env.BENCH_SCENARIOS ?? Object.keys(ALL_SCENARIOS).join(","));
for (const s of SCENARIOS) if (!ALL_SCENARIOS[s]) throw new Error(`BENCH_SCENARIOS: unknown scenario "${s}"`);
const DURATION_S = Number(process.env.BENCH_DURATION_S ?? 10);
const WARMUP_S = Number(process.env.BENCH_WARMUP_S ?? 2);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 50);
const SOAK_S = Number(process.env.BENCH_SOAK_S ?? 0);
const SOAK_TOPOLOGY = process.env.BENCH_SOAK_TOPOLOGY ?? "cluster";
const SOAK_SAMPLE_S = Number(process.env.BENCH_SOAK_SAMPLE_S ?? 10);
/** Both sides allow many active instances: start+stop never reuses a (student, lab) pair, see load.js. */
const MAX_ACTIVE = 100;
const { fmt } = lib;

const rssOf = (procs) => procs.map((p) => `${p.name} ${fmt(lib.rssMiB(p.pid))}`).join(", ");

/** Least-squares slope of (t min, rss MiB) samples. */
function slope(samples) {
  const n = samples.length;
  const mt = samples.reduce((s, [t]) => s + t, 0) / n;
  const mr = samples.reduce((s, [, r]) => s + r, 0) / n;
  let num = 0;
  let den = 0;
  for (const [t, r] of samples) {
    num += (t - mt) * (r - mr);
    den += (t - mt) ** 2;
  }
  return den === 0 ? NaN : num / den;
}

async function soak(platform, ctx) {
  console.error(`soak: ${SOAK_S} s of mixed traffic on ${platform.topology}, RSS sampled every ${SOAK_SAMPLE_S} s`);
  const samples = new Map(platform.nodes.map((n) => [n.name, []]));
  const t0 = Date.now();
  const sample = () => {
    const tMin = (Date.now() - t0) / 60_000;
    for (const n of platform.nodes) samples.get(n.name).push([tMin, lib.rssMiB(n.pid)]);
  };
  sample();
  const timer = setInterval(sample, SOAK_SAMPLE_S * 1000);
  let result;
  try {
    const load = { targets: platform.gateways, scenario: "mixed", durationS: SOAK_S, warmupS: 0 };
    result = await lib.runLoad({ ...ctx, ...load });
  } finally {
    clearInterval(timer);
  }
  sample();
  const lines = [
    `Soak: ${platform.topology}, ${SOAK_S} s mixed traffic (reads of every scenario, 1 in 20 a start+stop), ` +
      `${CONNECTIONS} connections: ${fmt(result.rps)} req/s, p50 ${fmt(result.p50, 1)} ms, ` +
      `p99 ${fmt(result.p99, 1)} ms, ${result.errors} unexpected answers (answers by status: ` +
      `${JSON.stringify(result.statuses)})`,
    "",
    "| node | RSS start MiB | RSS end MiB | max MiB | slope MiB/min (all samples) | slope MiB/min (second half) |",
    "|---|---|---|---|---|---|",
  ];
  for (const [name, s] of samples) {
    const rss = s.map(([, r]) => r);
    const half = s.slice(Math.floor(s.length / 2));
    const [first, last, max] = [rss[0], rss[rss.length - 1], Math.max(...rss)].map((x) => fmt(x));
    const cells = [name, first, last, max, fmt(slope(s), 2), fmt(slope(half), 2)];
    lines.push(`| ${cells.join(" | ")} |`);
  }
  return lines.join("\n");
}

async function benchTopology(topology, idp, tokens) {
  const [platformDb, baselineDb] = await Promise.all([lib.seededDatabase(), lib.seededDatabase()]);
  const platform = await lib.startTopology(topology, {
    dbUrl: platformDb.url,
    issuer: idp.issuer,
    // A few tokens at full speed: the per-user budgets (a real user's) would turn the load into 429s.
    env: {
      MAX_ACTIVE_INSTANCES_PER_STUDENT: String(MAX_ACTIVE),
      RATE_LIMIT_RPS: "0",
      RATE_LIMIT_LAB_STARTS_PER_MIN: "0",
    },
  });
  const baseline = await lib.startBaseline({ dbUrl: baselineDb.url, issuer: idp.issuer, maxActive: MAX_ACTIVE });
  await lib.waitRouted(platform.gateways, ["/courses", "/labs", "/lab-instances", "/auth/me"], tokens[0]);
  await lib.waitRouted([baseline.url], ["/courses"], tokens[0]);
  const ctx = { tokens, courseId: platformDb.courseId, labIds: platformDb.labIds, connections: CONNECTIONS };
  const ctxBaseline = { ...ctx, courseId: baselineDb.courseId, labIds: baselineDb.labIds };
  const rows = [];
  for (const scenario of SCENARIOS) {
    console.error(`${topology}: ${scenario} …`);
    const common = { scenario, durationS: DURATION_S, warmupS: WARMUP_S };
    const p = await lib.runLoad({ ...ctx, ...common, targets: platform.gateways });
    const pRss = rssOf(platform.nodes);
    const b = await lib.runLoad({ ...ctxBaseline, ...common, targets: [baseline.url] });
    const bRss = rssOf([baseline]);
    rows.push(
      `| ${ALL_SCENARIOS[scenario]} | ${fmt(p.rps)} | ${fmt(p.p50, 1)} | ${fmt(p.p99, 1)} | ${p.errors} | ` +
        `${fmt(b.rps)} | ${fmt(b.p50, 1)} | ${fmt(b.p99, 1)} | ${b.errors} | ` +
        `**${fmt(p.rps / b.rps, 2)}** | ${pRss} | ${bRss} |`,
    );
    if (p.errors || b.errors) {
      const answers = (r) => JSON.stringify(r.statuses);
      console.error(`  unexpected answers: platform ${answers(p)}, baseline ${answers(b)}`);
    }
  }
  const soakReport = SOAK_S > 0 && topology === SOAK_TOPOLOGY ? await soak(platform, ctx) : undefined;
  await Promise.all([platform.stop(), baseline.stop()]);
  await Promise.all([platformDb.drop(), baselineDb.drop()]);
  return { rows, soakReport, nodes: platform.nodes.length };
}

lib.runMain(async () => {
  const idp = await lib.startBenchIdp();
  const subs = Array.from({ length: lib.SEED.students }, (_, i) => `bench-student-${i}`);
  const tokens = await lib.studentTokens(idp, subs);
  const out = [
    lib.machineLine(),
    `${CONNECTIONS} connections, ${WARMUP_S} s warm-up + ${DURATION_S} s per scenario and side, ` +
      `${lib.SEED.students} students (own tokens)`,
  ];
  for (const topology of TOPOLOGIES) {
    const r = await benchTopology(topology, idp, tokens);
    const from = out.length;
    if (r.rows.length) {
      out.push(
        "",
        `### ${topology} (${r.nodes} platform process${r.nodes > 1 ? "es" : ""}) vs baseline (1 process)`,
        "",
        "| scenario | platform req/s | p50 ms | p99 ms | errors | baseline req/s | p50 ms | p99 ms | errors | ratio " +
          "| platform RSS MiB | baseline RSS MiB |",
        "|---|---|---|---|---|---|---|---|---|---|---|---|",
        ...r.rows,
      );
    }
    if (r.soakReport) out.push("", r.soakReport);
    console.error(out.slice(from).join("\n"));
  }
  console.log(out.join("\n"));
});
