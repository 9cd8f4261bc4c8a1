const { ServiceBroker } = require("moleculer");
const { brokerOptions } = require("./dist/platform/moleculer.config");
const { loadConfig } = require("./dist/platform/config");
const { attachPlatform } = require("./dist/platform/platform");
const { MetricsMiddleware } = require("./dist/platform/metrics");
const { answerObserver } = require("./dist/services/api-gateway/answer-log");
const err = (...a) => process.stderr.write(a.join(" ") + "\n");
const cpu = () => { const u = process.cpuUsage(); return (u.user + u.system); };

async function actionCalls(mode, n) {
  const moleculer = mode === "moleculer";
  const b = new ServiceBroker({ logger: false, metrics: { enabled: moleculer, collectProcessMetrics: false }, middlewares: mode === "ours" ? [MetricsMiddleware] : [] });
  attachPlatform(b, { config: loadConfig({ METRICS_PORT: mode === "ours" ? "3030" : "0" }), sequelize: null });
  b.createService({ name: "x", actions: { a: { handler: () => 1 } } });
  await b.start();
  for (let i = 0; i < 20000; i++) await b.call("x.a", {});
  const c0 = cpu();
  for (let i = 0; i < n; i++) await b.call("x.a", {});
  const us = (cpu() - c0) / n;
  await b.stop();
  return us;
}

async function answers(metricsPort, level, n) {
  const config = loadConfig({ DATABASE_URL: "postgres://x@127.0.0.1/x", METRICS_PORT: metricsPort, LOGLEVEL: level });
  const opts = brokerOptions(config);
  const b = new ServiceBroker({ ...opts, middlewares: [], transporter: null, cacher: null });
  attachPlatform(b, { config, sequelize: null });
  const observe = answerObserver(b, b.getLogger("api-gateway"));
  const headers = { "content-type": "application/json; charset=utf-8", "x-request-id": "0af7651916cd43dd8448eb211c80319c" };
  const res = { writableFinished: true, statusCode: 200, getHeader: (h) => headers[h] };
  const req = { method: "GET", url: "/api/v1/courses?limit=5", originalUrl: "/api/v1/courses?limit=5",
    $alias: { fullPath: "/api/v1/courses", action: "courses.list" }, $ctx: { requestID: "r", meta: { user: { kind: "user", id: 7, role: "teacher" } } } };
  for (let i = 0; i < 20000; i++) observe(req, res, performance.now());
  const c0 = cpu();
  for (let i = 0; i < n; i++) observe(req, res, performance.now());
  return (cpu() - c0) / n;
}

(async () => { try {
  for (let r = 0; r < 3; r++) {
    err(`round ${r}: per action call: Moleculer metrics ${(await actionCalls("moleculer", 200000)).toFixed(2)} us, ours ${(await actionCalls("ours", 200000)).toFixed(2)} us, none ${(await actionCalls("none", 200000)).toFixed(2)} us`);
    err(`round ${r}: per answer: metrics+info log ${(await answers("3030", "info", 100000)).toFixed(2)} us; no metrics+info log ${(await answers("0", "info", 100000)).toFixed(2)} us; metrics, log at warn ${(await answers("3030", "warn", 100000)).toFixed(2)} us; neither ${(await answers("0", "warn", 100000)).toFixed(2)} us`);
  }
} catch (e) { err("FAIL", e.stack); } })();
