/**
 * Class-start rush: N students of one course start the same lab at the same moment.
 * One node with every service against the real PostgreSQL, the embedded IdP, and the simulated lab runner
 * (it consumes the same Celery messages the relay publishes; 1.5 s per start, like a fast cluster).
 * Measures the time until every start is accepted (202), the start latency, and the time until every
 * instance is running. Usage: npm run bench:rush  (BENCH_STUDENTS, default 200)
 */
const { startTestPlatform } = require("../dist/test/support/platform.js");
const { tokenFor } = require("../dist/test/support/http-api.js");

const N = Number(process.env.BENCH_STUDENTS ?? 200);
const pct = (xs, p) => xs[Math.min(xs.length - 1, Math.floor((p / 100) * xs.length))];

(async () => {
  const p = await startTestPlatform({ MAX_ACTIVE_INSTANCES_PER_STUDENT: "3" });
  try {
    const must = async (what, res, status) => {
      if (res.status !== status) throw new Error(`${what}: ${res.status} ${JSON.stringify(res.body)}`);
      return res.body;
    };
    const course = await must("course", await p.api("POST", "/courses", { as: "teacher", body: { name: "Rush" } }), 201);
    const lab = await must("lab", await p.api("POST", "/labs", {
      as: "teacher",
      body: { name: "Rush lab", docker_image: "python:3.12-slim", resources: { cpu: "500m", memory: "512Mi", storage: "1Gi" } },
    }), 201);
    await must("submit", await p.api("POST", `/labs/${lab.id}/submit`, { as: "teacher" }), 200);
    await must("approve", await p.api("POST", `/labs/${lab.id}/approve`, { as: "admin" }), 200);
    await must("attach", await p.api("POST", `/courses/${course.id}/labs`, { as: "teacher", body: { lab_id: lab.id } }), 201);

    const students = [];
    for (let i = 0; i < N; i++) {
      const token = await tokenFor(p, { sub: `9${String(i).padStart(17, "0")}`, email: `rush${i}@autolabs.local`, name: `Rush ${i}`, roles: ["student"] });
      const me = await fetch(`${p.url}/api/v1/auth/me`, { headers: { authorization: `Bearer ${token}` } }).then((r) => r.json());
      students.push({ token, id: me.id });
    }
    await must("assign", await p.api("POST", `/courses/${course.id}/students`, { as: "teacher", body: { student_ids: students.map((s) => s.id) } }), 200);

    const t0 = performance.now();
    const latencies = [];
    const statuses = await Promise.all(
      students.map(async (s) => {
        const t = performance.now();
        const res = await fetch(`${p.url}/api/v1/lab-instances`, {
          method: "POST",
          headers: { authorization: `Bearer ${s.token}`, "content-type": "application/json" },
          body: JSON.stringify({ lab_id: lab.id, course_id: course.id }),
        });
        latencies.push(performance.now() - t);
        return res.status;
      }),
    );
    const accepted = performance.now() - t0;
    const bad = statuses.filter((s) => s !== 202);
    if (bad.length) throw new Error(`${bad.length} starts not accepted: ${[...new Set(bad)]}`);
    for (;;) {
      const [rows] = await p.sequelize.query("SELECT count(*) FILTER (WHERE status = 'running')::int AS running FROM lab_instances");
      if (rows[0].running === N) break;
      if (performance.now() - t0 > 120_000) throw new Error(`only ${rows[0].running}/${N} running after 120 s`);
      await new Promise((r) => setTimeout(r, 100));
    }
    const running = performance.now() - t0;
    latencies.sort((a, b) => a - b);
    console.log(`node ${process.version}, ${N} students starting one lab at once (simulated runner, 1.5 s per start)\n`);
    console.log("| students | all accepted (202) | start p50 | start p99 | all running |");
    console.log("|---|---|---|---|---|");
    console.log(`| ${N} | ${(accepted / 1000).toFixed(2)} s | ${pct(latencies, 50).toFixed(0)} ms | ${pct(latencies, 99).toFixed(0)} ms | ${(running / 1000).toFixed(2)} s |`);
  } finally {
    await p.stop();
  }
})().catch((err) => {
  console.error(err);
  process.exit(1);
});
