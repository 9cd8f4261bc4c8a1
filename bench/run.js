/**
 * HTTP benchmark of one platform node (all services) against the real PostgreSQL, with autocannon.
 * Usage: npm run bench   (compiles first; needs the same PostgreSQL as the tests, TEST_PG_ADMIN_URL)
 * Prints requests/s, latency percentiles and the node's memory for each scenario; see bench/README.md.
 */
const autocannon = require("autocannon");
const { createTestDatabase, startNode } = require("../dist/test/support/platform.js");
const { startIdp } = require("../dist/test/support/idp.js");

const DURATION_S = Number(process.env.BENCH_DURATION_S ?? 10);
const CONNECTIONS = Number(process.env.BENCH_CONNECTIONS ?? 20);

function run(opts) {
  return new Promise((resolve, reject) => {
    autocannon({ duration: DURATION_S, connections: CONNECTIONS, ...opts }, (err, result) => (err ? reject(err) : resolve(result)));
  });
}

function row(name, r) {
  const mb = (process.memoryUsage().rss / 1048576).toFixed(0);
  const bad = r.non2xx + r.errors + r.timeouts;
  return `| ${name} | ${r.requests.average.toFixed(0)} | ${r.latency.p50} | ${r.latency.p99} | ${bad} | ${mb} |`;
}

(async () => {
  const [db, idp] = await Promise.all([createTestDatabase(), startIdp()]);
  // One teacher's token drives every scenario at full speed: the per-user rate limit (a real user's budget) is off,
  // or this would measure 429s.
  const node = await startNode(db.url, { OIDC_ISSUER: idp.issuer, LOGLEVEL: "error", RATE_LIMIT_RPS: "0" });
  try {
    const teacher = (await idp.getToken("teacher")).accessToken;
    const auth = { authorization: `Bearer ${teacher}`, "content-type": "application/json" };
    for (let i = 0; i < 200; i++) {
      await fetch(`${node.url}/api/v1/courses`, { method: "POST", headers: auth, body: JSON.stringify({ name: `Course ${i}` }) });
    }
    const lines = ["| scenario | req/s | p50 ms | p99 ms | non-2xx+errors | RSS MiB |", "|---|---|---|---|---|---|"];
    lines.push(row("GET /health (SELECT 1)", await run({ url: `${node.url}/api/v1/health` })));
    lines.push(row("GET /courses?limit=50 (cached per user)", await run({ url: `${node.url}/api/v1/courses?limit=50`, headers: auth })));
    lines.push(row("GET /labs?limit=50 (not cached)", await run({ url: `${node.url}/api/v1/labs?limit=50`, headers: auth })));
    lines.push(
      row(
        "POST /courses (insert + cache clean)",
        await run({ url: `${node.url}/api/v1/courses`, method: "POST", headers: auth, body: JSON.stringify({ name: "Bench course" }) }),
      ),
    );
    console.log(`node ${process.version}, ${CONNECTIONS} connections, ${DURATION_S} s each\n`);
    console.log(lines.join("\n"));
  } finally {
    await node.stop();
    await Promise.allSettled([db.drop(), idp.stop()]);
  }
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
