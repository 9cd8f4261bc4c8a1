/**
 * The HTTP edge (DESIGN "HTTP API", api-gateway row): /api/v1 aliases only, health, JSON-only bodies,
 * body limit, `{"detail"}` errors and FastAPI-shaped 422, X-Request-Id on every answer, CORS.
 * Real node, real PostgreSQL, real IdP tokens, over HTTP.
 */
import { request as httpRequest } from "node:http";
import {
  createTestDatabase,
  REDIS_URL,
  startNode,
  startTestPlatform,
  type ApiResponse,
  type TestPlatform,
} from "../support/platform";
import { checkedApi, expectNoLeak, expectWellFormed, locs, UUID_RE, type Api } from "../support/http-api";
import { ifAssigned } from "../support/cleanup";

const FRONTEND = "http://frontend.autolabs.test:5173";
const BODY_LIMIT = 4096;
const VERSION = "9.8.7-gwtest";

let p: TestPlatform;
let api: Api;

beforeAll(async () => {
  p = await startTestPlatform({
    SERVICES: "api-gateway,auth,courses,labs",
    FRONTEND_URL: FRONTEND,
    BODY_LIMIT_BYTES: String(BODY_LIMIT),
    APP_VERSION: VERSION,
  });
  api = checkedApi(p);
});
afterAll(async () => {
  await ifAssigned(p)?.stop();
});

async function courseCount(): Promise<number> {
  const [rows] = await p.sequelize.query("SELECT count(*)::int AS n FROM courses");
  return (rows as { n: number }[])[0].n;
}

/** A raw fetch against the node (outside /api/v1 or with exact headers), checked like api(). */
async function raw(path: string, init: RequestInit = {}): Promise<ApiResponse> {
  const res = await fetch(`${p.url}${path}`, init);
  const text = await res.text();
  let body: unknown = text;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    /* keep text */
  }
  return { status: res.status, headers: res.headers, body, json: <T>() => body as T };
}

describe("health", () => {
  it("answers 200 with the documented shape, unauthenticated", async () => {
    const res = await api("GET", "/health");
    expect(res.status).toBe(200);
    expect(res.headers.get("content-type")).toMatch(/^application\/json/);
    expect(res.body).toEqual({
      status: "healthy",
      // No REDIS_URL / TRANSPORTER in this node: those parts are embedded.
      checks: { database: "ok", redis: "embedded", rabbitmq: "embedded" },
      version: VERSION,
    });
  });

  it("reports redis ok when configured and reachable, and 503 naming redis when it is not", async () => {
    const db = await createTestDatabase();
    const good = await startNode(db.url, { SERVICES: "api-gateway", REDIS_URL });
    const bad = await startNode(db.url, { SERVICES: "api-gateway", REDIS_URL: "redis://127.0.0.1:1/0" });
    try {
      const ok = await fetch(`${good.url}/api/v1/health`);
      expect(ok.status).toBe(200);
      expect(await ok.json()).toMatchObject({
        status: "healthy",
        checks: { database: "ok", redis: "ok", rabbitmq: "embedded" },
      });

      const down = await fetch(`${bad.url}/api/v1/health`);
      expect(down.status).toBe(503);
      expect(down.headers.get("x-request-id")).toBeTruthy();
      const body = (await down.json()) as { status: string; checks: Record<string, string>; version: string };
      expect(body.status).toBe("unhealthy");
      expect(body.checks.database).toBe("ok");
      expect(body.checks.redis).toMatch(/^failed/);
      expect(body.checks.rabbitmq).toBe("embedded");
      expect(JSON.stringify(body)).not.toMatch(/\n\s+at /);
    } finally {
      await Promise.all([good.stop(), bad.stop()]);
      await db.drop();
    }
  });

  it("answers 503 naming the database when the database goes away", async () => {
    const db = await createTestDatabase();
    const node = await startNode(db.url, { SERVICES: "api-gateway" });
    try {
      const before = await fetch(`${node.url}/api/v1/health`);
      expect(before.status).toBe(200);
      // Terminates the node's connections and removes the database under it.
      await db.drop();
      const res = await fetch(`${node.url}/api/v1/health`);
      expect(res.status).toBe(503);
      const body = (await res.json()) as { status: string; checks: Record<string, string> };
      expect(body.status).toBe("unhealthy");
      expect(body.checks.database).toMatch(/^failed/);
      expect(body.checks.redis).toBe("embedded");
      expect(JSON.stringify(body)).not.toMatch(/\n\s+at |node_modules/);
      expect(res.headers.get("x-request-id")).toBeTruthy();
    } finally {
      await node.stop();
      await db.drop();
    }
  });
});

describe("routing: only /api/v1 aliases are reachable", () => {
  it("an unknown path answers 404 {detail}", async () => {
    for (const path of ["/nope", "/courses/1/nope", "/v2/courses", ""]) {
      const res = await api("GET", path, { as: "admin" });
      expect(res.status).toBe(404);
      expect(typeof (res.body as { detail: string }).detail).toBe("string");
    }
    for (const path of ["/", "/api", "/api/v2/courses", "/favicon.ico"]) {
      const res = await raw(path);
      expectWellFormed(res);
      expect(res.status).toBe(404);
    }
  });

  it("an unknown method on a known path is refused with {detail}", async () => {
    const res = await api("PATCH", "/courses", { as: "admin", body: { name: "x" } });
    expect([404, 405]).toContain(res.status);
  });

  it.each([
    ["GET", "/$node/list"],
    ["GET", "/$node/services"],
    ["GET", "/$node/actions"],
    ["GET", "/$node/health"],
    ["GET", "/$node.list"],
    ["GET", "/~node/list"],
    ["GET", "/~node/services"],
    ["GET", "/~node/options"],
    ["GET", "/api-gateway/listAliases"],
    ["GET", "/api-gateway.listAliases"],
    ["GET", "/api-gateway/health"],
    ["POST", "/api-gateway/addRoute"],
    ["POST", "/auth/authenticate"],
    ["GET", "/auth/authenticate"],
    ["GET", "/courses.list"],
    ["GET", "/courses/list/all"],
    ["GET", "/labs.find"],
    ["POST", "/courses/insert"],
    ["POST", "/courses.create"],
    ["PUT", "/courses"],
    ["DELETE", "/courses"],
  ])("%s /api/v1%s is not reachable (404), even for an admin", async (method, path) => {
    const res = await api(method, path, { as: "admin", ...(method === "GET" ? {} : { body: { name: "x" } }) });
    expect(res.status).toBe(404);
    expect(JSON.stringify(res.body)).not.toMatch(/nodeID|"services"|"actions"|hostname|"ipList"/);
  });

  it.each(["/$node/services", "/~node/services", "/$node/list", "/api/$node/list", "/courses", "/health"])(
    "GET %s outside /api/v1 is 404",
    async (path) => {
      const res = await raw(path, { headers: { authorization: `Bearer ${await p.token("admin")}` } });
      expectWellFormed(res);
      expect(res.status).toBe(404);
      expect(JSON.stringify(res.body)).not.toMatch(/nodeID|hostname/);
    },
  );

  it("moleculer-db's generic actions (find, count, get by query) are not exposed", async () => {
    const created = await api("POST", "/courses", { as: "teacher", body: { name: "Routing probe" } });
    expect(created.status).toBe(201);
    for (const path of ["/courses/find", "/courses/count", "/labs/find", "/labs/count"]) {
      const res = await api("GET", path, { as: "admin" });
      // Taken as `GET /courses/:id` with a non-numeric id: a 422 on the path, never a moleculer-db answer.
      expect(res.status).toBe(422);
      expect(locs(res)).toEqual(["path.id"]);
    }
    for (const [method, path] of [
      ["POST", "/courses/find"],
      ["POST", "/courses/insert"],
      ["POST", "/labs/insert"],
      ["POST", "/courses/update"],
      ["POST", "/courses/remove"],
    ]) {
      const res = await api(method, path, { as: "admin", body: { name: "x", entity: { name: "y" } } });
      expect(res.status).toBe(404);
    }
  });
});

describe("request bodies", () => {
  it("a POST whose body is not JSON answers 415 and creates nothing", async () => {
    const before = await courseCount();
    for (const [type, body] of [
      ["application/x-www-form-urlencoded", "name=Forms"],
      ["text/plain", '{"name":"Text"}'],
      [
        "multipart/form-data; boundary=x",
        '--x\r\nContent-Disposition: form-data; name="name"\r\n\r\nMulti\r\n--x--\r\n',
      ],
      ["application/xml", "<course><name>X</name></course>"],
      ["application/json-patch+json", '{"name":"Patch"}'],
    ]) {
      const res = await api("POST", "/courses", { as: "teacher", body, headers: { "content-type": type } });
      expect(res.status).toBe(415);
      expect(res.body).toEqual({ detail: expect.any(String) });
    }
    // No Content-Type at all, but a body.
    const token = await p.token("teacher");
    const none = await raw("/api/v1/courses", {
      method: "POST",
      headers: { authorization: `Bearer ${token}` },
      body: new Blob(['{"name":"No type"}']),
    });
    expectWellFormed(none);
    expect(none.status).toBe(415);
    // PUT is held to the same rule.
    const put = await api("PUT", "/courses/1", {
      as: "teacher",
      body: "name=x",
      headers: { "content-type": "text/plain" },
    });
    expect(put.status).toBe(415);
    expect(await courseCount()).toBe(before);
  });

  it("application/json with a charset parameter is accepted", async () => {
    const res = await api("POST", "/courses", {
      as: "teacher",
      body: { name: "Charset" },
      headers: { "content-type": "application/json; charset=utf-8" },
    });
    expect(res.status).toBe(201);
  });

  it("a body over BODY_LIMIT_BYTES answers 413 and creates nothing; one just under passes", async () => {
    const before = await courseCount();
    const big = await api("POST", "/courses", {
      as: "teacher",
      body: { name: "Big", description: "x".repeat(BODY_LIMIT + 10) },
    });
    expect(big.status).toBe(413);
    expect(typeof (big.body as { detail: string }).detail).toBe("string");
    expect(await courseCount()).toBe(before);

    const fits = await api("POST", "/courses", {
      as: "teacher",
      body: { name: "Fits", description: "x".repeat(BODY_LIMIT - 100) },
    });
    expect(fits.status).toBe(201);
    expect(await courseCount()).toBe(before + 1);
  });

  it("malformed JSON answers 400 {detail}", async () => {
    const before = await courseCount();
    for (const body of ["{bad", '{"name": "x",}', '{"name": "unterminated', "{'name': 'single'}"]) {
      const res = await api("POST", "/courses", { as: "teacher", body });
      expect(res.status).toBe(400);
      expect(res.body).toEqual({ detail: expect.any(String) });
    }
    expect(await courseCount()).toBe(before);
  });

  it("a JSON body that is not an object (array, string, number, null, boolean) is a 400/422, never a 500", async () => {
    const before = await courseCount();
    for (const body of ["[1,2]", '[{"name":"in array"}]', '"abc"', "42", "null", "true"]) {
      const res = await api("POST", "/courses", { as: "teacher", body });
      expect([400, 422]).toContain(res.status);
    }
    expect(await courseCount()).toBe(before);
  });

  it("deeply nested or odd JSON values in fields are validation errors, not 500s", async () => {
    const before = await courseCount();
    for (const body of [
      { name: { $gt: "" } },
      { name: ["a"] },
      { name: null },
      { name: 12 },
      { name: "ok", description: { nested: [1, 2, { deep: true }] } },
      { name: "x".repeat(201) },
      { name: "   " },
    ]) {
      const res = await api("POST", "/courses", { as: "teacher", body });
      expect(res.status).toBe(422);
      expect(locs(res)[0]).toMatch(/^body\.(name|description)$/);
    }
    expect(await courseCount()).toBe(before);
  });
});

describe("validation errors are FastAPI-shaped 422", () => {
  it("a missing body field → loc [body, name], type missing", async () => {
    const res = await api("POST", "/courses", { as: "teacher", body: {} });
    expect(res.status).toBe(422);
    expect(res.body).toEqual({ detail: [{ loc: ["body", "name"], msg: expect.any(String), type: "missing" }] });
  });

  it("a wrong path parameter → loc [path, id]", async () => {
    for (const [method, path] of [
      ["GET", "/courses/abc"],
      ["GET", "/courses/1.5"],
      ["GET", "/courses/0"],
      ["GET", "/courses/-3"],
      ["DELETE", "/courses/abc"],
      ["GET", "/labs/abc"],
      ["POST", "/labs/abc/submit"],
    ]) {
      const res = await api(method, path, { as: "admin" });
      expect(res.status).toBe(422);
      expect((res.body as { detail: unknown[] }).detail).toEqual([
        { loc: ["path", "id"], msg: expect.any(String), type: expect.any(String) },
      ]);
    }
    const put = await api("PUT", "/courses/abc", { as: "admin", body: { name: "x" } });
    expect(put.status).toBe(422);
    expect(locs(put)).toEqual(["path.id"]);
    const nested = await api("DELETE", "/courses/1/students/xyz", { as: "admin" });
    expect(nested.status).toBe(422);
    expect(locs(nested)).toEqual(["path.student_id"]);
  });

  it("a path id beyond the integer range is a 404 or 422, never a 500", async () => {
    for (const path of [
      "/courses/99999999999",
      "/courses/2147483648",
      "/labs/99999999999",
      "/courses/99999999999/students",
      "/users/99999999999",
    ]) {
      const res = await api("GET", path, { as: "admin" });
      expect([404, 422]).toContain(res.status);
    }
  });

  it("query parameters → loc [query, name]: limit not a number, limit > 100, limit 0, offset < 0", async () => {
    const cases: [string, string, string][] = [
      ["/courses?limit=abc", "query.limit", "int_parsing"],
      ["/courses?limit=101", "query.limit", "less_than_equal"],
      ["/courses?limit=1000", "query.limit", "less_than_equal"],
      ["/courses?limit=0", "query.limit", "greater_than_equal"],
      ["/courses?offset=-1", "query.offset", "greater_than_equal"],
      ["/courses?owner_id=x", "query.owner_id", "int_parsing"],
      ["/labs?status=live", "query.status", "enum"],
      ["/labs?course_id=1.5", "query.course_id", "int_parsing"],
    ];
    for (const [path, loc, type] of cases) {
      const res = await api("GET", path, { as: "admin" });
      expect(res.status).toBe(422);
      expect(locs(res)).toEqual([loc]);
      expect((res.body as { detail: { type: string }[] }).detail[0].type).toBe(type);
    }
    const ok = await api("GET", "/courses?limit=100", { as: "admin" });
    expect(ok.status).toBe(200);
    expect(ok.body).toMatchObject({ limit: 100, offset: 0 });
  });

  it("sort by a field that is not allowed → 422 at [query, sort]; allowed fields sort", async () => {
    for (const sort of ["owner_id", "-description", "password", "name;DROP TABLE courses", "created_at,id", "--name"]) {
      const res = await api("GET", `/courses?sort=${encodeURIComponent(sort)}`, { as: "admin" });
      expect(res.status).toBe(422);
      expect(locs(res)).toEqual(["query.sort"]);
    }
    for (const sort of ["name", "-name", "id", "-created_at", "updated_at"]) {
      expect((await api("GET", `/courses?sort=${sort}`, { as: "admin" })).status).toBe(200);
    }
    expect((await api("GET", "/labs?sort=approved_by", { as: "admin" })).status).toBe(422);
  });

  it("every problem of a request is reported at once", async () => {
    const res = await api("GET", "/courses?limit=500&offset=x&sort=nope", { as: "admin" });
    expect(res.status).toBe(422);
    expect(locs(res).sort()).toEqual(["query.limit", "query.offset", "query.sort"]);
  });

  it("an item of a body array is located by index", async () => {
    const course = await api("POST", "/courses", { as: "teacher", body: { name: "Index probe" } });
    const id = (course.body as { id: number }).id;
    const res = await api("POST", `/courses/${id}/students`, { as: "teacher", body: { student_ids: [1, "x"] } });
    expect(res.status).toBe(422);
    expect((res.body as { detail: { loc: unknown[] }[] }).detail.map((d) => d.loc)).toContainEqual([
      "body",
      "student_ids",
      1,
    ]);
  });
});

describe("X-Request-Id", () => {
  it("is present on successes and on every kind of error", async () => {
    const answers = [
      await api("GET", "/health"),
      await api("GET", "/courses", { as: "teacher" }),
      await api("GET", "/courses"), // 401
      await api("POST", "/courses", { as: "student", body: { name: "x" } }), // 403
      await api("GET", "/courses/424242", { as: "admin" }), // 404
      await api("GET", "/nope"), // 404 unrouted
      await api("POST", "/courses", { as: "teacher", body: "{bad" }), // 400
      await api("POST", "/courses", { as: "teacher", body: "x", headers: { "content-type": "text/plain" } }), // 415
      await api("POST", "/courses", { as: "teacher", body: { name: "x".repeat(BODY_LIMIT * 2) } }), // 413
      await api("GET", "/courses?limit=101", { as: "teacher" }), // 422
    ];
    expect(answers.map((a) => a.status)).toEqual([200, 200, 401, 403, 404, 404, 400, 415, 413, 422]);
    const ids = answers.map((a) => a.headers.get("x-request-id"));
    for (const id of ids) expect(id).toMatch(UUID_RE);
    expect(new Set(ids).size).toBe(ids.length);
  });

  it("a safe client-supplied id is echoed, on success and on errors", async () => {
    const cases: [string, string, { as?: string; body?: unknown; headers?: Record<string, string> }, number][] = [
      ["GET", "/health", {}, 200],
      ["GET", "/courses", { as: "teacher" }, 200],
      ["GET", "/courses", {}, 401],
      ["GET", "/nope", {}, 404],
      ["POST", "/courses", { as: "teacher", body: "{bad" }, 400],
      ["POST", "/courses", { as: "teacher", body: "x", headers: { "content-type": "text/plain" } }, 415],
      ["POST", "/courses", { as: "teacher", body: { name: "x".repeat(BODY_LIMIT * 2) } }, 413],
      ["GET", "/courses?limit=0", { as: "teacher" }, 422],
    ];
    let n = 0;
    for (const [method, path, opts, status] of cases) {
      const rid = `client-req_${++n}.abc:DEF`;
      const res = await api(method, path, { ...opts, headers: { ...opts.headers, "x-request-id": rid } });
      expect(res.status).toBe(status);
      expect(res.headers.get("x-request-id")).toBe(rid);
    }
  });

  it("an unsafe client-supplied id is replaced by a fresh one", async () => {
    for (const rid of [
      "has space",
      "tab\there",
      "x".repeat(500),
      "y".repeat(101),
      "<script>alert(1)</script>",
      "a/b",
      'quote"d',
      "caf\u00e9",
      "%0d%0aSet-Cookie:x",
    ]) {
      for (const [path, status] of [
        ["/health", 200],
        ["/nope", 404],
      ] as const) {
        const res = await api("GET", path, { headers: { "x-request-id": rid } });
        expect(res.status).toBe(status);
        const answered = res.headers.get("x-request-id");
        expect(answered).not.toBe(rid);
        expect(answered).toMatch(UUID_RE);
      }
    }
    // 100 characters is still fine.
    const max = "z".repeat(100);
    expect((await api("GET", "/health", { headers: { "x-request-id": max } })).headers.get("x-request-id")).toBe(max);
  });

  it("a plain raw request keeps its id; CR/LF cannot even be sent in a header value", async () => {
    const answer = await new Promise<{ status: number; headers: Record<string, string | string[] | undefined> }>(
      (resolve, reject) => {
        const url = new URL(`${p.url}/api/v1/health`);
        const req = httpRequest({
          host: url.hostname,
          port: url.port,
          path: url.pathname,
          method: "GET",
          headers: { "x-request-id": "ok-part" },
        });
        req.on("response", (res) => {
          res.resume();
          resolve({ status: res.statusCode ?? 0, headers: res.headers });
        });
        req.on("error", reject);
        req.end();
      },
    );
    expect(answer.status).toBe(200);
    expect(String(answer.headers["x-request-id"])).toBe("ok-part");
    expect(answer.headers["set-cookie"]).toBeUndefined();
    // Node's HTTP client refuses to send a header value with CR/LF at all: nothing to inject.
    expect(() =>
      httpRequest({ host: "127.0.0.1", port: 1, headers: { "x-request-id": "a\r\nSet-Cookie: x=1" } }),
    ).toThrow();
  });
});

describe("CORS", () => {
  const preflight = (origin: string, method = "POST", headers = "content-type,authorization,x-request-id") =>
    raw("/api/v1/courses", {
      method: "OPTIONS",
      headers: { origin, "access-control-request-method": method, "access-control-request-headers": headers },
    });

  it("a preflight from FRONTEND_URL is allowed, with credentials and the request id exposed", async () => {
    const res = await preflight(FRONTEND);
    expect([200, 204]).toContain(res.status);
    expect(res.headers.get("access-control-allow-origin")).toBe(FRONTEND);
    expect(res.headers.get("access-control-allow-credentials")).toBe("true");
    expect(res.headers.get("access-control-allow-methods")).toMatch(/POST/);
    expect(res.headers.get("access-control-allow-methods")).toMatch(/DELETE/);
    expect((res.headers.get("access-control-allow-headers") ?? "").toLowerCase()).toEqual(
      expect.stringContaining("authorization"),
    );
    expect((res.headers.get("access-control-allow-headers") ?? "").toLowerCase()).toEqual(
      expect.stringContaining("content-type"),
    );
    expect(res.headers.get("vary") ?? "").toMatch(/Origin/i);
    expect(res.headers.get("x-request-id")).toBeTruthy();
  });

  it("an actual request from FRONTEND_URL gets the allow-origin and exposes X-Request-Id", async () => {
    const res = await raw("/api/v1/courses", {
      headers: { origin: FRONTEND, authorization: `Bearer ${await p.token("teacher")}` },
    });
    expect(res.status).toBe(200);
    expect(res.headers.get("access-control-allow-origin")).toBe(FRONTEND);
    expect((res.headers.get("access-control-expose-headers") ?? "").toLowerCase()).toContain("x-request-id");
  });

  it.each([
    "http://evil.example",
    "http://frontend.autolabs.test:5174",
    "https://frontend.autolabs.test:5173",
    "http://frontend.autolabs.test:5173.evil.example",
    "http://evil.frontend.autolabs.test:5173",
    "null",
  ])("another origin (%s) is not granted", async (origin) => {
    const pre = await preflight(origin);
    expectWellFormed(pre);
    expect(pre.headers.get("access-control-allow-origin")).toBeNull();
    expect(pre.headers.get("access-control-allow-credentials")).toBeNull();
    expect(pre.status).not.toBe(204);

    const before = await courseCount();
    const actual = await raw("/api/v1/courses", {
      method: "POST",
      headers: { origin, "content-type": "application/json", authorization: `Bearer ${await p.token("teacher")}` },
      body: JSON.stringify({ name: "Cross-site" }),
    });
    expectWellFormed(actual);
    expect(actual.headers.get("access-control-allow-origin")).toBeNull();
    // A simple cross-site request must not have its side effect either.
    expect(await courseCount()).toBe(before);
  });
});

describe("no stack traces", () => {
  it("none of a battery of hostile requests yields a 500 or leaks internals", async () => {
    const token = await p.token("admin");
    await p.userId("teacher");
    const course = await api("POST", "/courses", { as: "teacher", body: { name: "Hostile target" } });
    const c = (course.body as { id: number }).id;
    const hostile: [string, string, string | undefined, Record<string, string>][] = [
      ["GET", "/api/v1/courses/%00", undefined, {}],
      ["GET", "/api/v1/courses/%E0%A4%A", undefined, {}],
      ["GET", "/api/v1/courses?sort[$ne]=1", undefined, {}],
      ["GET", "/api/v1/courses?limit[]=1&limit[]=2&offset[a]=1", undefined, {}],
      ["GET", "/api/v1/labs?status[]=draft&status[]=approved", undefined, {}],
      ["GET", "/api/v1/courses?q=" + "%".repeat(50), undefined, {}],
      ["GET", "/api/v1/courses?q=" + "a".repeat(5000), undefined, {}],
      ["POST", "/api/v1/courses", '{"name":"\\ud800"}', { "content-type": "application/json" }],
      [
        "POST",
        "/api/v1/courses",
        '{"__proto__":{"admin":true},"name":"proto"}',
        { "content-type": "application/json" },
      ],
      [
        "POST",
        "/api/v1/courses",
        '{"constructor":{"prototype":{"x":1}},"name":"ctor"}',
        { "content-type": "application/json" },
      ],
      [
        "POST",
        "/api/v1/labs",
        '{"name":"l","docker_image":{"$ne":1},"resources":[1]}',
        { "content-type": "application/json" },
      ],
      ["POST", "/api/v1/labs/1/reject", '{"reason":{"a":1}}', { "content-type": "application/json" }],
      [
        "POST",
        `/api/v1/courses/${c}/students`,
        '{"student_ids":[99999999999]}',
        { "content-type": "application/json" },
      ],
      ["POST", `/api/v1/courses/${c}/students`, '{"student_ids":"1"}', { "content-type": "application/json" }],
      ["POST", `/api/v1/courses/${c}/labs`, '{"lab_id":99999999999}', { "content-type": "application/json" }],
      ["PUT", `/api/v1/courses/${c}`, '{"owner_id":99999999999}', { "content-type": "application/json" }],
      ["GET", "/api/v1/courses?owner_id=99999999999", undefined, {}],
      ["GET", "/api/v1/courses?offset=99999999999999", undefined, {}],
    ];
    for (const [method, path, body, headers] of hostile) {
      const res = await raw(path, { method, body, headers: { ...headers, authorization: `Bearer ${token}` } });
      try {
        expectWellFormed(res);
      } catch (err) {
        throw new Error(`${method} ${path} ${body ?? ""}: ${(err as Error).message}`, { cause: err });
      }
      expectNoLeak(res);
      expect(res.status).toBeLessThan(500);
    }
  });
});
