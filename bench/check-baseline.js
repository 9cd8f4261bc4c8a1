/**
 * `node bench/check-baseline.js` (after `npm run build`): the baseline must answer what the platform answers.
 * One embedded platform node and the baseline on identically seeded databases; every benchmarked route as the
 * same student on both; the bodies must match apart from timestamps and task ids. Exit code 1 on a difference
 * (or a failure); the last line counts the routes compared (test/integration/bench-baseline.test.ts runs this).
 */
const lib = require("./lib");
lib.runMain(async () => {
  const idp = await lib.startBenchIdp();
  const [a, b] = await Promise.all([lib.seededDatabase(), lib.seededDatabase()]);
  const [token] = await lib.studentTokens(idp, ["bench-student-7"]);
  const env = { MAX_ACTIVE_INSTANCES_PER_STUDENT: "100" };
  const p = await lib.startTopology("embedded", { dbUrl: a.url, issuer: idp.issuer, env });
  const base = await lib.startBaseline({ dbUrl: b.url, issuer: idp.issuer, maxActive: 100 });
  const get = async (url, path, method = "GET", body) => {
    const headers = { authorization: `Bearer ${token}`, "content-type": "application/json" };
    const r = await fetch(url + "/api/v1" + path, { method, headers, body: body && JSON.stringify(body) });
    return { status: r.status, body: await r.json() };
  };
  const counted = { compared: 0, different: 0 };
  const strip = (x) => JSON.stringify(x, (k, v) => (/_at$|celery_task_id/.test(k) ? "<t>" : v));
  const compare = (what, x, y) => {
    const same = x.status === y.status && strip(x.body) === strip(y.body);
    counted.compared++;
    console.log(`${what}: platform ${x.status}, baseline ${y.status}: ${same ? "same" : "DIFFERENT"}`);
    if (!same) {
      console.log(`  platform: ${strip(x.body).slice(0, 500)}\n  baseline: ${strip(y.body).slice(0, 500)}`);
      counted.different++;
      process.exitCode = 1;
    }
  };
  const reads = ["/courses?offset=0&limit=50&sort=-created_at", "/courses?limit=37", "/labs?limit=50"];
  for (const path of [...reads, "/lab-instances?limit=50", "/auth/me"]) {
    compare(`GET ${path}`, await get(p.gateways[0], path), await get(base.url, path));
  }
  const s1 = await get(p.gateways[0], "/lab-instances", "POST", { lab_id: a.labIds[9], course_id: a.courseId });
  const s2 = await get(base.url, "/lab-instances", "POST", { lab_id: b.labIds[9], course_id: b.courseId });
  compare("POST /lab-instances", s1, s2);
  const t1 = await get(p.gateways[0], `/lab-instances/${s1.body.id}/stop`, "POST");
  const t2 = await get(base.url, `/lab-instances/${s2.body.id}/stop`, "POST");
  compare("POST /lab-instances/{id}/stop", t1, t2);
  console.log(`baseline check: ${counted.compared} routes compared, ${counted.different} different`);
});
