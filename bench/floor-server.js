/**
 * One side of `npm run bench:floor` (bench/floor.js), as its own process: answers `GET /api/v1/floor` with the same
 * fixed JSON page (shaped like one page of GET /lab-instances), no database. FLOOR_SIDE picks how:
 * - raw: node:http, JSON.stringify per request;
 * - moleculer-web: a default ServiceBroker + the moleculer-web gateway, alias GET /floor → floor.page;
 * - moleculer-web+2calls: the same, with route authentication calling floor.who per request (as our gateway calls
 *   auth.authenticate), then floor.page: two action calls per HTTP request;
 * - platform-broker: the same two calls, the broker built by the platform's createPlatformBroker (dist/main/
 *   broker.js: brokerOptions(config) with its middlewares — AccessGate, RequestContext, OpsServer, Metrics,
 *   DatabaseOutage — and the platform attached), embedded config, no transporter, no services of ours, no
 *   database (nothing here queries it); platform-broker-no:<part>+… leaves parts of it out (see WITHOUT below).
 * Prints "floor listening on http://127.0.0.1:<port>" once it serves.
 */
const http = require("node:http");

const SIDE = process.env.FLOOR_SIDE ?? "raw";
const PORT = Number(process.env.PORT ?? 0);
const PATH = "/api/v1/floor";
/** Rows on the page (bench/floor.js BENCH_FLOOR_ROWS): 50 fills a page; bench:cost's seeded students list 5. */
const ROWS = Number(process.env.FLOOR_ROWS ?? 50);

/** One page of GET /lab-instances?limit=50: ROWS views (row + lab and course names: 17 fields), Dates as pg gives them. */
function buildPage() {
  const t0 = Date.parse("2026-11-30T08:00:00.000Z");
  const items = Array.from({ length: ROWS }, (_, i) => {
    const created = new Date(t0 + i * 61_000);
    return {
      id: 1000 + i,
      lab_id: 1 + (i % 5),
      course_id: 7,
      student_id: 42,
      status: "stopped",
      celery_task_id: `3f2b6c1e-8a4d-4e0b-9c7a-${String(100000000000 + i)}`,
      k8s_pod_name: `lab-${1000 + i}-student-42`,
      connection_url: null,
      error: null,
      created_at: created,
      started_at: new Date(created.getTime() + 4_000),
      stopped_at: new Date(created.getTime() + 3_600_000),
      expires_at: new Date(created.getTime() + 7_200_000),
      updated_at: new Date(created.getTime() + 3_600_000),
      lab_name: `Lab ${1 + (i % 5)}`,
      course_name: "Course 7",
    };
  });
  return { items, total: ROWS, offset: 0, limit: 50 };
}
const PAGE = buildPage();

function listen(server) {
  server.keepAliveTimeout = 65_000;
  server.listen(PORT, "127.0.0.1", () => {
    console.log(`floor listening on http://127.0.0.1:${server.address().port}`);
  });
}

function raw() {
  const server = http.createServer((req, res) => {
    if (req.method !== "GET" || req.url !== PATH) {
      res.writeHead(404).end();
      return;
    }
    const body = JSON.stringify(PAGE);
    res.writeHead(200, {
      "content-type": "application/json; charset=utf-8",
      "content-length": Buffer.byteLength(body),
    });
    res.end(body);
  });
  listen(server);
}

const PRINCIPAL = { kind: "user", id: 1, role: "student" };
const BEARER = /^Bearer (.+)$/;

/** The gateway service: route /api/v1, alias GET /floor → floor.page; with `auth`, authenticate calls floor.who. */
function gatewaySchema(ApiGateway, { auth, actions = {} }) {
  return {
    name: "api-gateway",
    mixins: [ApiGateway],
    settings: {
      port: PORT,
      ip: "127.0.0.1",
      routes: [
        {
          path: "/api/v1",
          mappingPolicy: "restrict",
          authentication: auth,
          // As every route of our gateway: JSON bodies (a GET has none, the parser only looks).
          bodyParsers: { json: true, urlencoded: false },
          aliases: { "GET /floor": "floor.page" },
        },
      ],
    },
    actions,
    methods: auth
      ? {
          authenticate(ctx, _route, req) {
            const m = BEARER.exec(req.headers.authorization ?? "");
            return m ? ctx.call("floor.who", { token: m[1] }) : null;
          },
        }
      : {},
    started() {
      console.log(`floor listening on http://127.0.0.1:${this.server.address().port}`);
    },
  };
}

async function moleculer(auth) {
  const { ServiceBroker } = require("moleculer");
  const ApiGateway = require("moleculer-web");
  const broker = new ServiceBroker({
    nodeID: `floor-${SIDE}`,
    logger: { type: "Console", options: { level: "warn" } },
    logLevel: "warn",
    metrics: { enabled: false },
    tracing: { enabled: false },
  });
  broker.createService({
    name: "floor",
    actions: {
      page: { handler: () => PAGE },
      who: { handler: () => PRINCIPAL },
    },
  });
  broker.createService(gatewaySchema(ApiGateway, { auth }));
  await broker.start();
}

/**
 * platform-broker-no:<part>[+<part>…]: the platform's broker without some of its parts, to see what each costs.
 * Parts: its middlewares (AccessGate, RequestContext, OpsServer, Metrics, DatabaseOutage) and broker options
 * (requestTimeout: 0, tracking: off, validator: off).
 */
const WITHOUT = new Set(
  SIDE.startsWith("platform-broker-no:") ? SIDE.slice("platform-broker-no:".length).split("+") : [],
);

function platformOverrides(options) {
  const dist = (m) => require(`../dist/platform/${m}.js`);
  const middlewares = {
    AccessGate: dist("access-gate").AccessGate,
    RequestContext: dist("request-context").RequestContextMiddleware,
    OpsServer: dist("ops-server").OpsServerMiddleware,
    Metrics: dist("metrics").MetricsMiddleware,
    DatabaseOutage: dist("database-outage").DatabaseOutageMiddleware,
  };
  const settings = {
    requestTimeout: { requestTimeout: 0 },
    tracking: { tracking: { enabled: false } },
    validator: { validator: false },
  };
  const overrides = {};
  for (const part of WITHOUT) {
    if (!middlewares[part] && !settings[part]) {
      throw new Error(
        `FLOOR_SIDE: unknown part "${part}" (${[...Object.keys(middlewares), ...Object.keys(settings)].join(", ")})`,
      );
    }
    Object.assign(overrides, settings[part]);
  }
  const omitted = Object.entries(middlewares)
    .filter(([name]) => WITHOUT.has(name))
    .map(([, mw]) => mw);
  // As createPlatformBroker builds the list: brokerOptions' middlewares, then DatabaseOutage.
  if (omitted.length) {
    overrides.middlewares = [...options.middlewares, middlewares.DatabaseOutage].filter((mw) => !omitted.includes(mw));
  }
  return overrides;
}

async function platformBroker() {
  const ApiGateway = require("moleculer-web");
  const { loadConfig } = require("../dist/platform/config.js");
  const { brokerOptions } = require("../dist/platform/moleculer.config.js");
  const { createPlatformBroker } = require("../dist/main/broker.js");
  const { PUBLIC } = require("../dist/platform/access-gate.js");
  // Embedded mode (no DATABASE_URL, no TRANSPORTER): Memory cacher, no transporter; METRICS_PORT on, as in
  // production (the ops server and the metrics middleware run). No service of ours: only the floor ones below.
  // PORT is our gateway's (not started here); set only so METRICS_PORT can never equal it (loadConfig refuses).
  const config = {
    ...loadConfig({ LOGLEVEL: "warn", METRICS_PORT: process.env.METRICS_PORT, NAMESPACE: "floor", PORT: "1" }),
    services: [],
  };
  // Nothing here touches the database (only /readyz would, and nothing asks it).
  const broker = createPlatformBroker(config, /** @type {any} */ ({}), platformOverrides(brokerOptions(config)));
  broker.createService({
    name: "floor",
    actions: {
      // AccessGate checks the principal authenticate put in ctx.meta.user against this role list.
      page: { access: { roles: ["student"] }, handler: () => PAGE },
      who: { access: PUBLIC, handler: () => PRINCIPAL },
    },
  });
  broker.createService(
    gatewaySchema(ApiGateway, {
      auth: true,
      // As our gateway declares moleculer-web's own actions (AccessGate refuses a service without declarations).
      actions: {
        rest: { access: PUBLIC },
        listAliases: { rest: null, access: { roles: [] } },
        addRoute: false,
        removeRoute: false,
      },
    }),
  );
  await broker.start();
}

const sides = {
  raw,
  "moleculer-web": () => moleculer(false),
  "moleculer-web+2calls": () => moleculer(true),
  "platform-broker": platformBroker,
};
if (WITHOUT.size) sides[SIDE] = platformBroker;
if (!sides[SIDE]) throw new Error(`FLOOR_SIDE: unknown side "${SIDE}" (${Object.keys(sides).join(", ")})`);
Promise.resolve(sides[SIDE]()).catch((err) => {
  console.error(err);
  process.exit(1);
});
