/**
 * `npm run bench:rush`: a class-start rush on the cluster topology. BENCH_STUDENTS (default 300) students, each
 * with their own token, start the same lab at once, spread over both gateways. Each start goes the real way:
 * the transaction with its outbox row → the relay publishes the Celery message to RabbitMQ → a real Celery worker
 * (test/celery_worker/labs_worker.py, Debian's python3-celery) answers at once → the result in Redis →
 * the instance is running. Reports the time until every start was accepted (202), the start latency, and the
 * time from the last accepted start until every instance is running (target ≤ 5 s).
 * Everything is started here and removed at the end, also on failure (see bench/lib.js).
 */
const { randomBytes } = require("node:crypto");
const { Client } = require("pg");
const lib = require("./lib");
const path = require("node:path");
const { startReadyChild } = require("../dist/platform/child-process.js");

const N = Number(process.env.BENCH_STUDENTS ?? 300);
const TARGET_S = 5;
/**
 * With the test worker's own prefetch multiplier (1), a backlog drained in bursts about every 10 s: messages sat
 * ready in the queue while the worker idled (rabbitmqctl list_queues), with the solo and the threads pool alike;
 * 300 starts took minutes. A prefetch window lets the worker take the backlog as fast as it answers.
 */
const POOL = process.env.BENCH_CELERY_POOL ?? "threads";
const CONCURRENCY = Number(process.env.BENCH_CELERY_CONCURRENCY ?? 4);
const PREFETCH = process.env.BENCH_CELERY_PREFETCH ?? "64";
/** Give up waiting for "all running" after this long. */
const TIMEOUT_S = Number(process.env.BENCH_RUSH_TIMEOUT_S ?? 60);
const { fmt } = lib;

/** test/celery_worker/labs_worker.py, run as test/support/celery-worker.ts does (its cwd is source-relative). */
async function startCeleryWorker({ queue, brokerUrl, resultBackend }) {
  const env = {
    ...process.env,
    CELERY_BROKER_URL: brokerUrl,
    CELERY_RESULT_BACKEND: resultBackend,
    CELERY_TASK_PREFIX: "celery_workers",
    AUTOLABS_PARENT_PID: String(process.pid),
    PYTHONUNBUFFERED: "1",
    PYTHONDONTWRITEBYTECODE: "1",
  };
  delete env.PYTHONHOME;
  return startReadyChild({
    name: "celery worker",
    command: "/usr/bin/python3",
    args: [
      "-m",
      "celery",
      "-A",
      "labs_worker",
      "worker",
      `--pool=${POOL}`,
      "-c",
      String(CONCURRENCY),
      "--prefetch-multiplier",
      PREFETCH,
      "-Q",
      queue,
      "--loglevel=INFO",
      "-n",
      `${queue}@%h`,
      "--without-mingle",
      "--without-gossip",
      "--without-heartbeat",
    ],
    cwd: path.resolve(__dirname, "../test/celery_worker"),
    env,
    ready: / ready\.\s*$/,
    timeoutMs: 60_000,
  });
}

/**
 * One student's start on a connection of its own (300 browsers, not one pooled client: no idle keep-alive socket
 * that the server may close just as it is reused). Resolves with the status, or a "connection error: …" string.
 */
function post(url, token, body) {
  const http = require("node:http");
  return new Promise((resolve) => {
    const req = http.request(
      url,
      {
        method: "POST",
        agent: false,
        headers: {
          authorization: `Bearer ${token}`,
          "content-type": "application/json",
          "content-length": Buffer.byteLength(body),
        },
      },
      (res) => {
        res.resume();
        res.on("end", () => resolve(res.statusCode));
      },
    );
    req.on("error", (err) => resolve(`connection error: ${err.code ?? err.message}`));
    req.end(body);
  });
}

async function deleteQueue(queue) {
  const amqp = require("amqplib");
  const conn = await amqp.connect(lib.AMQP_URL);
  try {
    const ch = await conn.createChannel();
    await ch.deleteQueue(queue);
    await ch.deleteExchange(queue);
  } finally {
    await conn.close();
  }
}

const pct = (xs, p) => xs[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];

lib.runMain(async () => {
  const os = require("node:os");
  const queue = `bench-rush-${randomBytes(4).toString("hex")}`;
  const brokerUrl = `${lib.AMQP_URL}/`;
  const resultBackend = process.env.BENCH_CELERY_RESULTS ?? "redis://127.0.0.1:6379/5";
  const [idp, db] = await Promise.all([lib.startBenchIdp(), lib.seededDatabase()]);
  if (N > lib.SEED.students) throw new Error(`BENCH_STUDENTS ${N} > seeded students ${lib.SEED.students}`);
  const tokens = await lib.studentTokens(idp, db.studentSubs.slice(0, N));
  // The worker declares the queue and its exchange (durable): removed at the end, after the worker stopped.
  lib.onCleanup(() => deleteQueue(queue));
  const worker = await startCeleryWorker({ queue, brokerUrl, resultBackend });
  const workerLog = path.join(os.tmpdir(), `${queue}-worker.log`);
  const saveWorkerLog = () => {
    require("node:fs").writeFileSync(workerLog, worker.output());
    return workerLog;
  };
  lib.onCleanup(() => worker.stop());
  const platform = await lib.startTopology("cluster", {
    dbUrl: db.url,
    issuer: idp.issuer,
    env: { CELERY_BROKER_URL: brokerUrl, CELERY_RESULT_BACKEND: resultBackend, CELERY_QUEUE: queue },
  });
  await lib.waitRouted(platform.gateways, ["/courses", "/lab-instances", "/auth/me"], tokens[0]);
  // Each student has been seen once (their users row upserted, as after a login): the rush measures starts.
  for (let i = 0; i < N; i += 25) {
    await Promise.all(
      tokens.slice(i, i + 25).map(async (token, j) => {
        const gateway = platform.gateways[(i + j) % platform.gateways.length];
        const res = await fetch(`${gateway}/api/v1/auth/me`, { headers: { authorization: `Bearer ${token}` } });
        await res.arrayBuffer();
        if (res.status !== 200) throw new Error(`GET /auth/me of student ${i + j}: ${res.status}`);
      }),
    );
  }

  const labId = db.labIds[db.labIds.length - 1]; // never used by the seeded past instances
  const latencies = [];
  const statuses = {};
  const rssBefore = platform.nodes.map((n) => `${n.name} ${fmt(lib.rssMiB(n.pid))}`).join(", ");
  const t0 = performance.now();
  let lastAccepted = 0;
  await Promise.all(
    tokens.map(async (token, i) => {
      const t = performance.now();
      const body = JSON.stringify({ lab_id: labId, course_id: db.courseId });
      const status = await post(`${platform.gateways[i % platform.gateways.length]}/api/v1/lab-instances`, token, body);
      const now = performance.now();
      latencies.push(now - t);
      statuses[status] = (statuses[status] ?? 0) + 1;
      if (status === 202) lastAccepted = Math.max(lastAccepted, now);
    }),
  );
  const allAccepted = performance.now() - t0;
  if (statuses[202] !== N) throw new Error(`not every start accepted: ${JSON.stringify(statuses)}`);

  const c = new Client({ connectionString: db.url });
  await c.connect();
  lib.onCleanup(() => c.end());
  let running = 0;
  for (;;) {
    const { rows } = await c.query(
      `SELECT count(*) FILTER (WHERE status = 'running')::int AS running,
              count(*) FILTER (WHERE status = 'failed')::int AS failed
         FROM lab_instances WHERE lab_id = $1`,
      [labId],
    );
    running = rows[0].running;
    if (rows[0].failed) throw new Error(`${rows[0].failed} starts failed`);
    if (running === N) break;
    if (performance.now() - lastAccepted > TIMEOUT_S * 1000) {
      const diag = await c.query(
        `SELECT (SELECT json_object_agg(status, n)
                   FROM (SELECT status, count(*) n FROM lab_instances WHERE lab_id = $1 GROUP BY status) s) AS statuses,
                (SELECT count(*) FILTER (WHERE published_at IS NULL) FROM task_outbox) AS unpublished`,
        [labId],
      );
      throw new Error(
        `only ${running}/${N} running ${TIMEOUT_S} s after the last start: ${JSON.stringify(diag.rows[0])}\n` +
          `worker output: ${saveWorkerLog()}`,
      );
    }
    await new Promise((r) => setTimeout(r, 25));
  }
  const allRunning = performance.now() - lastAccepted;
  const outbox = (
    await c.query(
      `SELECT count(*)::int AS n, count(*) FILTER (WHERE published_at IS NULL)::int AS unpublished,
              extract(epoch FROM max(published_at)) * 1000 AS last_published_ms
         FROM task_outbox WHERE task_name = 'start_lab'`,
    )
  ).rows[0];
  // Where the time after the last start went: until the relay had published everything, then the worker and results.
  const publishedAfterS = (Number(outbox.last_published_ms) - (performance.timeOrigin + lastAccepted)) / 1000;

  latencies.sort((a, b) => a - b);
  const rssAfter = platform.nodes.map((n) => `${n.name} ${fmt(lib.rssMiB(n.pid))}`).join(", ");
  console.log(
    [
      `${new Date().toISOString()} — node ${process.version}, ${os.cpus().length} cores, ` +
        `load average ${os
          .loadavg()
          .map((l) => l.toFixed(2))
          .join(" ")}`,
      "cluster: 2 gateway nodes + 2 domain nodes over RabbitMQ, Redis cacher, PostgreSQL; " +
        `a real Celery worker (--pool=${POOL} -c ${CONCURRENCY}) answering at once`,
      "",
      "| students | all accepted (202) | start p50 | start p99 | all running after the last start | target " +
        "| start_lab published |",
      "|---|---|---|---|---|---|---|",
      `| ${N} | ${fmt(allAccepted / 1000, 2)} s | ${fmt(pct(latencies, 50))} ms | ${fmt(pct(latencies, 99))} ms | ` +
        `${fmt(allRunning / 1000, 2)} s | ${allRunning / 1000 <= TARGET_S ? "met" : "MISSED"} (≤ ${TARGET_S} s) | ` +
        `${outbox.n - outbox.unpublished}/${outbox.n} |`,
      "",
      `Last start_lab published ${fmt(publishedAfterS, 2)} s after the last start was accepted ` +
        "(the rest: worker and results).",
      `RSS MiB before: ${rssBefore}; after: ${rssAfter}. Worker log: ${saveWorkerLog()}`,
    ].join("\n"),
  );
});
