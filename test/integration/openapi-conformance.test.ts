/**
 * The OpenAPI document against reality. This file runs last in a jest run (test/support/jest-sequencer.js):
 * every answer of the API that any test file received (recorded by test/support/answer-recorder.ts) must have
 * a documented status for its operation, and its JSON body must match the documented schema (ajv, JSON Schema
 * 2020-12 as OpenAPI 3.1 uses it). Run alone, it checks the answers of the seed's main flow, which it runs
 * itself. Then the document passes redocly's recommended ruleset, and a typed client generated from it
 * (openapi-typescript) compiles a small frontend-style script of the main flow.
 */
import { execFile } from "node:child_process";
import { mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { promisify } from "node:util";
import Ajv2020, { type ValidateFunction } from "ajv/dist/2020";
import addFormats from "ajv-formats";
import { startTestPlatform, type TestPlatform } from "../support/platform";
import { answersOfThisFile, type RecordedAnswer } from "../support/answer-recorder";
import { ANSWERS_DIR_ENV } from "../support/answer-recorder-env";

jest.setTimeout(180_000);

const ROOT = resolve(__dirname, "../..");
const run = promisify(execFile);

type Json = Record<string, unknown>;
interface Operation {
  operationId: string;
  summary?: string;
  responses: Partial<Record<string, Json>>;
}
interface Document {
  paths: Record<string, Partial<Record<string, Operation>>>;
  components: { schemas: Record<string, Json>; responses: Record<string, Json> };
}

let p: TestPlatform;
let doc: Document;

beforeAll(async () => {
  p = await startTestPlatform();
  const res = await p.api("GET", "/openapi.json");
  expect(res.status).toBe(200);
  doc = res.body as Document;
  if (process.env.DUMP_OPENAPI) writeFileSync(process.env.DUMP_OPENAPI, JSON.stringify(doc, null, 2));
});

afterAll(async () => {
  await p.stop();
});

/** The seed's main flow and a few refusals, through plain fetch (recorded like every other test's answers). */
async function mainFlow(): Promise<void> {
  const must = async (method: string, path: string, as: string | undefined, status: number, body?: unknown) => {
    const res = await p.api(method, path, { as, body });
    if (res.status !== status) throw new Error(`${method} ${path}: ${res.status} ${JSON.stringify(res.body)}`);
    return res.body as Json;
  };
  const teacherId = await p.userId("teacher");
  await p.userId("student");
  const course = await must("POST", "/courses", "admin", 201, { name: "Networks", owner_id: teacherId });
  const lab = await must("POST", "/labs", "teacher", 201, {
    name: "Routing",
    docker_image: "registry.autolabs.local/labs/routing:1.0",
    resources: { cpu: "500m", memory: "512Mi", storage: "1Gi" },
  });
  await must("POST", `/labs/${String(lab.id)}/submit`, "teacher", 200);
  await must("POST", `/labs/${String(lab.id)}/approve`, "admin", 200);
  await must("POST", `/courses/${String(course.id)}/labs`, "teacher", 201, { lab_id: lab.id });
  const request = await must("POST", "/access-requests", "student", 201, { course_id: course.id, message: "Hi" });
  await must("POST", `/access-requests/${String(request.id)}/approve`, "teacher", 200);
  await must("GET", "/courses", "student", 200);
  await must("GET", `/courses/${String(course.id)}/labs`, "student", 200);
  const started = await must("POST", "/lab-instances", "student", 202, { lab_id: lab.id, course_id: course.id });
  const id = String(started.id);
  for (let i = 0; ; i++) {
    const now = await must("GET", `/lab-instances/${id}`, "student", 200);
    if (now.status === "running") break;
    if (i > 300) throw new Error(`instance never ran: ${JSON.stringify(now)}`);
    await new Promise((r) => setTimeout(r, 50));
  }
  await must("GET", `/lab-instances/${id}/connection`, "student", 200);
  const stream = await fetch(`${p.url}/api/v1/lab-instances/${id}/events`, {
    headers: { authorization: `Bearer ${await p.token("student")}` },
  });
  expect(stream.headers.get("content-type")).toMatch(/^text\/event-stream/);
  await stream.body?.cancel();
  await must("GET", "/lab-instances?status=running&sort=-created_at", "teacher", 200);
  await must("POST", `/lab-instances/${id}/stop`, "student", 202);
  await must("GET", "/users?role=student", "teacher", 200);
  await must("GET", "/auth/me", "student", 200);
  await must("GET", "/health", undefined, 200);
  // Refusals: each has its documented status and body.
  await must("GET", "/courses", undefined, 401);
  await must("GET", "/courses?limit=500", "teacher", 422);
  await must("GET", "/courses/999999", "teacher", 404);
  await must("POST", `/labs/${String(lab.id)}/approve`, "admin", 409);
  await must("POST", "/courses", "student", 403, { name: "Nope" });
}

/** Every recorded answer of the run: other files' (from the run's directory) and this file's own. */
async function allAnswers(): Promise<RecordedAnswer[]> {
  const dir = process.env[ANSWERS_DIR_ENV];
  const others = dir
    ? readdirSync(dir)
        .filter((f) => f.endsWith(".json"))
        .flatMap((f) => JSON.parse(readFileSync(join(dir, f), "utf8")) as RecordedAnswer[])
    : [];
  return [...others, ...(await answersOfThisFile())];
}

/** Path templates as regular expressions, literal segments first (/lab-instances/events before /{id}). */
function operationMatcher(d: Document): (method: string, path: string) => { template: string; op: Operation } | null {
  const templates = Object.keys(d.paths)
    .map((t) => ({
      t,
      re: new RegExp(`^${t.replace(/[.*+?^$()|[\]\\]/g, "\\$&").replace(/\{[^}]+\}/g, "[^/]+")}/?$`),
      params: (t.match(/\{/g) ?? []).length,
    }))
    .sort((a, b) => a.params - b.params);
  return (method, path) => {
    for (const { t, re } of templates) {
      if (!re.test(path)) continue;
      const op = d.paths[t][method.toLowerCase()];
      return op ? { template: t, op } : null;
    }
    return null;
  };
}

function allOperations(d: Document): { where: string; op: Operation }[] {
  return Object.entries(d.paths).flatMap(([path, ops]) =>
    Object.entries(ops).flatMap(([method, op]) => (op ? [{ where: `${method.toUpperCase()} ${path}`, op }] : [])),
  );
}

function resolveResponse(d: Document, r: Json): Json {
  const ref = r.$ref;
  return typeof ref === "string" ? d.components.responses[ref.slice("#/components/responses/".length)] : r;
}

/** ajv over the document's schemas: `#/components/schemas/X` becomes `#/$defs/X` of each compiled schema. */
function validatorFactory(d: Document): (schema: Json) => ValidateFunction {
  const ajv = new Ajv2020({ strict: false, allErrors: true });
  addFormats(ajv);
  const rewrite = (s: unknown): unknown =>
    JSON.parse(JSON.stringify(s).replace(/"#\/components\/schemas\//g, '"#/$defs/')) as unknown;
  const defs = rewrite(d.components.schemas) as Json;
  const cache = new Map<string, ValidateFunction>();
  return (schema) => {
    const key = JSON.stringify(schema);
    let v = cache.get(key);
    if (!v) {
      v = ajv.compile({ ...(rewrite(schema) as Json), $defs: defs });
      cache.set(key, v);
    }
    return v;
  };
}

it("runs the seed's main flow (admin course, lab create → submit → approve, access request, start → running)", async () => {
  await mainFlow();
});

it("documents every status and body the API answered to the tests of this run", async () => {
  const answers = await allAnswers();
  const match = operationMatcher(doc);
  const validator = validatorFactory(doc);
  const problems: string[] = [];
  const covered = new Set<string>();
  let validated = 0;
  let outside = 0;
  for (const a of answers) {
    // OPTIONS is answered for every path (CORS, Allow); HEAD is GET without a body where GET allows it, else 405.
    if (a.method === "OPTIONS" || (a.method === "HEAD" && a.status === 405)) {
      outside++;
      continue;
    }
    const hit = match(a.method === "HEAD" ? "GET" : a.method, a.path);
    const where = `${a.method} ${a.path} → ${a.status} (${a.file.replace(`${ROOT}/`, "")})`;
    if (!hit) {
      // An unknown path or method answers 404/405 and is no operation; a success there would be a route the
      // document lacks.
      if (a.status < 400) problems.push(`${where}: no such operation in the document`);
      else outside++;
      continue;
    }
    const documented = hit.op.responses[String(a.status)];
    if (!documented) {
      problems.push(`${where}: status not documented for ${hit.op.operationId}`);
      continue;
    }
    const response = resolveResponse(doc, documented);
    const content = (response.content ?? {}) as Partial<Record<string, { schema?: Json }>>;
    covered.add(`${hit.op.operationId} ${a.status}`);
    validated++;
    if (a.method === "HEAD") continue;
    if (a.contentType.startsWith("text/event-stream")) {
      if (!content["text/event-stream"]) problems.push(`${where}: an event stream, documented otherwise`);
      continue;
    }
    if (a.body === undefined) {
      if (content["application/json"] && a.status !== 204) problems.push(`${where}: no JSON body, one documented`);
      continue;
    }
    const schema = content["application/json"]?.schema;
    if (!schema) {
      problems.push(`${where}: a JSON body, none documented`);
      continue;
    }
    const validate = validator(schema);
    if (!validate(a.body)) {
      const errors = (validate.errors ?? []).slice(0, 3).map((e) => `${e.instancePath} ${e.message ?? ""}`);
      problems.push(`${where}: body does not match (${errors.join("; ")}): ${JSON.stringify(a.body).slice(0, 300)}`);
    }
  }
  const operations = allOperations(doc).map((o) => o.op);
  const statuses = operations.reduce((n, op) => n + Object.keys(op.responses).length, 0);
  const files = new Set(answers.map((a) => a.file)).size;
  console.log(
    `openapi conformance: ${validated} answers validated (from ${files} test files; ${outside} outside the document), ` +
      `${covered.size} of ${statuses} documented operation statuses seen, ${operations.length} operations`,
  );
  expect(problems).toEqual([]);
  expect(validated).toBeGreaterThan(20);
});

it("declares a summary and a success answer for every operation, and unique URL-safe operationIds", () => {
  const ids = new Set<string>();
  const missing: string[] = [];
  for (const { where, op } of allOperations(doc)) {
    if (!op.summary || op.summary === op.operationId) missing.push(`${where}: no summary`);
    if (!Object.keys(op.responses).some((s) => /^[23]\d\d$/.test(s))) missing.push(`${where}: no success answer`);
    if (!/^[A-Za-z0-9_-]+$/.test(op.operationId) || ids.has(op.operationId)) missing.push(`${where}: operationId`);
    ids.add(op.operationId);
  }
  expect(missing).toEqual([]);
});

it("passes redocly's recommended ruleset with no errors", async () => {
  const dir = mkdtempSync(join(tmpdir(), "autolabs-openapi-"));
  try {
    writeFileSync(join(dir, "openapi.json"), JSON.stringify(doc));
    const { stdout } = await run(
      process.execPath,
      [join(ROOT, "test/support/lint-openapi.mjs"), join(dir, "openapi.json")],
      {
        cwd: ROOT,
      },
    );
    const result = JSON.parse(stdout) as { errors: unknown[]; warnings: unknown[] };
    console.log(`redocly recommended: ${result.errors.length} errors, ${result.warnings.length} warnings`);
    expect(result.errors).toEqual([]);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

it("generates a typed client (openapi-typescript) that compiles a frontend-style script of the main flow", async () => {
  const dir = mkdtempSync(join(tmpdir(), "autolabs-client-"));
  try {
    writeFileSync(join(dir, "openapi.json"), JSON.stringify(doc));
    await run(process.execPath, [
      join(ROOT, "node_modules/openapi-typescript/bin/cli.js"),
      join(dir, "openapi.json"),
      "-o",
      join(dir, "api.d.ts"),
    ]);
    writeFileSync(join(dir, "main-flow.ts"), CLIENT_SCRIPT);
    writeFileSync(join(dir, "wrong.ts"), WRONG_SCRIPT);
    const tsc = join(ROOT, "node_modules/typescript/bin/tsc");
    const compile = (file: string) => {
      const options = { strict: true, noEmit: true, target: "ES2022", lib: ["ES2022", "DOM"], types: [] };
      const project = { compilerOptions: { ...options, module: "ESNext", moduleResolution: "bundler" }, files: [file] };
      writeFileSync(join(dir, "tsconfig.json"), JSON.stringify(project));
      return run(process.execPath, [tsc, "-p", dir]);
    };
    await compile("main-flow.ts").catch((err: unknown) => {
      throw new Error(`the typed client does not compile:\n${(err as { stdout?: string }).stdout ?? ""}`);
    });
    // The types are real: a script that misreads an answer does not compile.
    const wrong = await compile("wrong.ts").then(
      () => "compiled",
      (err: unknown) => (err as { stdout?: string }).stdout ?? "",
    );
    expect(wrong).toMatch(/wrong\.ts\(\d+,\d+\): error TS2339: Property 'title' does not exist/);
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
});

/** A frontend's view of the main flow, typed by the generated `paths` alone. */
const CLIENT_PRELUDE = `
import type { paths } from "./api";

type Method = "get" | "post" | "put" | "delete";
type Op<P extends keyof paths, M extends Method> = NonNullable<paths[P][M]>;
type Answer<P extends keyof paths, M extends Method, S extends number> = Op<P, M> extends {
  responses: { [K in S]: { content: { "application/json": infer B } } };
}
  ? B
  : never;
type Body<P extends keyof paths, M extends Method> = Op<P, M> extends {
  requestBody?: { content: { "application/json": infer B } };
}
  ? B
  : never;

async function call<P extends keyof paths, M extends Method, S extends number>(
  method: M, path: P, expected: S, init: { params?: Record<string, string | number>; body?: Body<P, M> } = {},
): Promise<Answer<P, M, S>> {
  const url = String(path).replace(/\\{(\\w+)\\}/g, (_, k: string) => String(init.params?.[k]));
  const res = await fetch("/api/v1" + url, {
    method: method.toUpperCase(),
    credentials: "include",
    headers: { "Content-Type": "application/json" },
    body: init.body === undefined ? undefined : JSON.stringify(init.body),
  });
  if (res.status !== expected) throw new Error(String(res.status));
  return (await res.json()) as Answer<P, M, S>;
}
`;

const CLIENT_SCRIPT = `${CLIENT_PRELUDE}
export async function mainFlow(teacherId: number): Promise<string> {
  const course = await call("post", "/courses", 201, { body: { name: "Networks", owner_id: teacherId } });
  const lab = await call("post", "/labs", 201, {
    body: { name: "Routing", docker_image: "python:3.12", resources: { cpu: "500m", memory: "512Mi", storage: "1Gi" } },
  });
  await call("post", "/labs/{id}/submit", 200, { params: { id: lab.id } });
  const approved = await call("post", "/labs/{id}/approve", 200, { params: { id: lab.id } });
  const status: "draft" | "pending_approval" | "approved" | "rejected" = approved.status;
  await call("post", "/courses/{id}/labs", 201, { params: { id: course.id }, body: { lab_id: lab.id } });
  const request = await call("post", "/access-requests", 201, { body: { course_id: course.id, message: null } });
  await call("post", "/access-requests/{id}/approve", 200, { params: { id: request.id } });
  const instance = await call("post", "/lab-instances", 202, { body: { lab_id: lab.id, course_id: course.id } });
  const page = await call("get", "/lab-instances", 200);
  const first: number | undefined = page.items[0]?.id;
  const connection = await call("get", "/lab-instances/{id}/connection", 200, { params: { id: instance.id } });
  const url: string | null = connection.connection_url;
  const created: string = instance.created_at;
  return [status, first, url, created, course.name].join(" ");
}
`;

const WRONG_SCRIPT = `${CLIENT_PRELUDE}
export async function wrong(): Promise<string> {
  const course = await call("get", "/courses/{id}", 200, { params: { id: 1 } });
  return course.title;
}
`;
