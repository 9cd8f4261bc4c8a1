/**
 * OpenAPI 3.1 description of /api/v1, built from what the gateway actually routes: each alias, its action's
 * params (fastest-validator rules, translated to JSON Schema; list parameters from their ListSpec), its
 * `access` and its declared answers (`openapi`, lib/api-docs.ts). Schemas with a `title` (the rows declared in
 * each service's *.rows.ts) become components that every operation answering them refers to.
 *
 * What any operation may answer is added here from the route's shape, once: 401/403 when it needs
 * credentials, 404 for an object named in the path, 422 when it takes parameters, 400/413/415 for bodies,
 * 429 and 503 everywhere.
 * Pure: the gateway hands in plain route descriptions.
 */
import type { ActionDocs, AnswerDoc } from "../../lib/api-docs";
import type { JsonSchema } from "../../lib/schema";

export interface RouteDescription {
  method: string;
  /** Full path with moleculer-web parameters, e.g. /api/v1/courses/:id */
  path: string;
  action?: string;
  params?: Record<string, unknown>;
  access?: { public?: boolean; roles?: readonly string[]; entity?: string };
  docs?: ActionDocs;
}

export interface OpenApiOptions {
  prefix: string;
  version: string;
  /** The session cookie's name (autolabs_session, or __Host-autolabs_session on https). */
  sessionCookie: string;
}

const BODY_METHODS = new Set(["post", "put", "patch", "delete"]);
const SECURITY = [{ bearerAuth: [] }, { sessionCookie: [] }];

/** fastest-validator rule → JSON Schema (the subset this API uses); unknown rules document as "any". */
export function ruleToSchema(rule: unknown): { schema: JsonSchema; optional: boolean } {
  if (typeof rule === "string") {
    const [type, ...flags] = rule.split("|");
    return { schema: ruleToSchema({ type }).schema, optional: flags.includes("optional") };
  }
  if (!rule || typeof rule !== "object") return { schema: {}, optional: true };
  const r = rule as Record<string, unknown>;
  const optional = Boolean(r.optional) || r.default !== undefined;
  // A rule checked by hand in the handler (type "any") says what it accepts with `openapi`.
  if (r.openapi && typeof r.openapi === "object") return { schema: { ...(r.openapi as JsonSchema) }, optional };
  let schema: JsonSchema;
  switch (r.type) {
    case "custom": // lib/params.ts ID_PARAM: a checker function documented by its integer bounds
    case "number":
      schema = { type: r.integer ? "integer" : "number" };
      if (r.positive) schema.minimum = 1;
      if (typeof r.min === "number") schema.minimum = r.min;
      if (typeof r.max === "number") schema.maximum = r.max;
      break;
    case "string":
      schema = { type: "string" };
      if (typeof r.min === "number") schema.minLength = r.min;
      if (typeof r.max === "number") schema.maxLength = r.max;
      break;
    case "boolean":
      schema = { type: "boolean" };
      break;
    case "uuid":
      schema = { type: "string", format: "uuid" };
      break;
    case "email":
      schema = { type: "string", format: "email" };
      break;
    case "enum":
      schema = { enum: Array.isArray(r.values) ? r.values : [] };
      break;
    case "array":
      schema = { type: "array", items: ruleToSchema(r.items).schema };
      if (typeof r.min === "number") schema.minItems = r.min;
      if (typeof r.max === "number") schema.maxItems = r.max;
      if (r.unique === true) schema.uniqueItems = true;
      break;
    case "object": {
      const props = (r.props ?? r.properties ?? {}) as Record<string, unknown>;
      const properties: Record<string, JsonSchema> = {};
      const required: string[] = [];
      for (const [k, v] of Object.entries(props)) {
        const sub = ruleToSchema(v);
        properties[k] = sub.schema;
        if (!sub.optional) required.push(k);
      }
      schema = { type: "object", properties, ...(required.length ? { required } : {}) };
      break;
    }
    default:
      schema = {};
  }
  if (r.default !== undefined && typeof r.default !== "function") schema.default = r.default;
  if (r.nullable) schema = { anyOf: [schema, { type: "null" }] };
  return { schema, optional };
}

function openApiPath(path: string, prefix: string): string {
  return path.slice(prefix.length).replace(/:([A-Za-z_]+)/g, "{$1}") || "/";
}

function describeAccess(access: RouteDescription["access"]): string {
  if (!access) return "Internal.";
  if (access.public) return "Public: no credentials needed.";
  const roles = access.roles?.length ? access.roles.join(", ") : "system only";
  return `Roles: ${roles}. Objects the caller may not see answer 404; seen but not theirs to change, 403.`;
}

/** "lab-instances.create" → "labInstancesCreate" (URL-safe, unique per action). */
function camelId(name: string): string {
  const parts = name.split(/[^A-Za-z0-9]+/).filter(Boolean);
  return parts.map((p, i) => (i === 0 ? p : p[0].toUpperCase() + p.slice(1))).join("");
}

/** Named schemas (a `title`) move to components.schemas; the operation refers to them. */
class Components {
  readonly schemas: Record<string, JsonSchema> = {};

  hoist(schema: unknown): unknown {
    if (Array.isArray(schema)) return schema.map((x) => this.hoist(x));
    if (!schema || typeof schema !== "object") return schema;
    const walked: JsonSchema = {};
    for (const [k, v] of Object.entries(schema as JsonSchema)) {
      // Inside `properties` the keys are field names, not keywords: walk each field's schema.
      walked[k] =
        k === "properties" && v && typeof v === "object"
          ? Object.fromEntries(Object.entries(v as JsonSchema).map(([f, sub]) => [f, this.hoist(sub)]))
          : k === "examples" || k === "enum" || k === "default"
            ? v
            : this.hoist(v);
    }
    const name = walked.title;
    if (typeof name !== "string" || walked.type !== "object") return walked;
    const known = name in this.schemas ? this.schemas[name] : undefined;
    if (known !== undefined && JSON.stringify(known) !== JSON.stringify(walked)) {
      throw new Error(`openapi: two different schemas are named ${name}`);
    }
    this.schemas[name] = walked;
    return { $ref: `#/components/schemas/${name}` };
  }
}

const errorRef = (name: string) => ({ $ref: `#/components/responses/${name}` });

function errorAnswer(description: string): JsonSchema {
  return {
    description,
    content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } },
  };
}

function answerOf(doc: AnswerDoc, components: Components): JsonSchema {
  const out: JsonSchema = { description: doc.description };
  if (doc.headers) {
    out.headers = Object.fromEntries(
      Object.entries(doc.headers).map(([name, description]) => [name, { description, schema: { type: "string" } }]),
    );
  }
  if (doc.eventStream !== undefined) {
    out.description = `${doc.description}\n\n${doc.eventStream}`;
    out.content = { "text/event-stream": { schema: { type: "string", description: doc.eventStream } } };
  } else if (doc.body) {
    out.content = { "application/json": { schema: components.hoist(doc.body) } };
  }
  return out;
}

/** The error answers any operation of this shape may give, by status (declared ones win). */
function commonErrors(route: RouteDescription, method: string, hasParams: boolean, hasPathParams: boolean) {
  const errors: Record<string, unknown> = {};
  if (BODY_METHODS.has(method)) errors["400"] = errorRef("BadRequest");
  else if (hasPathParams) errors["400"] = errorAnswer("The path is not valid percent-encoded UTF-8");
  errors["401"] = route.access?.public
    ? errorAnswer("A credential was sent and is not valid (no credential at all is fine here)")
    : errorRef("Unauthorized");
  if (!route.access?.public) errors["403"] = errorRef("Forbidden");
  if (hasPathParams) {
    errors["404"] = errorAnswer(`${route.access?.entity ?? "The object"} does not exist, or the caller may not see it`);
  }
  if (BODY_METHODS.has(method)) {
    errors["413"] = errorRef("PayloadTooLarge");
    errors["415"] = errorRef("UnsupportedMediaType");
  }
  if (hasParams) errors["422"] = errorRef("ValidationFailed");
  errors["429"] = errorRef("TooManyRequests");
  errors["503"] = errorRef("ServiceUnavailable");
  return errors;
}

const TAG_DESCRIPTIONS: Record<string, string> = {
  "access-requests": "Students asking to join a course, and the owner's decision",
  auth: "Browser login (OIDC code flow into a session cookie) and the caller's own account",
  courses: "Courses, their students and attached labs",
  health: "Liveness of the platform's parts",
  "lab-instances": "A student's running copy of a lab: start, stop, status, connection",
  labs: "Lab definitions and their approval",
  "openapi.json": "This document",
  users: "Accounts (mirrored from the identity provider)",
};

export function buildOpenApi(routes: readonly RouteDescription[], opts: OpenApiOptions): JsonSchema {
  const components = new Components();
  const paths: Record<string, Record<string, JsonSchema>> = {};
  const tags = new Set<string>();
  const sorted = [...routes].sort((a, b) => a.path.localeCompare(b.path) || a.method.localeCompare(b.method));
  const routesPerAction = new Map<string, number>();
  for (const r of sorted) if (r.action) routesPerAction.set(r.action, (routesPerAction.get(r.action) ?? 0) + 1);
  for (const route of sorted) {
    if (!route.path.startsWith(opts.prefix)) continue;
    const method = route.method.toLowerCase();
    if (method === "*" || method === "all") continue;
    const path = openApiPath(route.path, opts.prefix);
    const pathParams = [...route.path.matchAll(/:([A-Za-z_]+)/g)].map((m) => m[1]);
    const parameters: JsonSchema[] = pathParams.map((name) => ({
      name,
      in: "path",
      required: true,
      schema: ruleToSchema(route.params?.[name]).schema,
    }));
    const bodyProps: Record<string, unknown> = {};
    const bodyRequired: string[] = [];
    for (const [name, rule] of Object.entries(route.params ?? {})) {
      if (pathParams.includes(name) || name.startsWith("$$")) continue;
      const { schema, optional } = ruleToSchema(rule);
      if (!BODY_METHODS.has(method) || method === "delete") {
        const { description, ...rest } = schema;
        parameters.push({
          name,
          in: "query",
          required: !optional,
          ...(typeof description === "string" ? { description } : {}),
          schema: components.hoist(rest),
        });
      } else {
        bodyProps[name] = components.hoist(schema);
        if (!optional) bodyRequired.push(name);
      }
    }
    const docs = route.docs;
    const tag = path.split("/")[1] || "root";
    tags.add(tag);
    const baseId = docs?.operationId ?? camelId(route.action ?? `${method} ${path}`);
    const operationId =
      route.action && (routesPerAction.get(route.action) ?? 0) > 1
        ? `${baseId}${method[0].toUpperCase()}${method.slice(1)}`
        : baseId;
    const hasParams = parameters.length > 0 || Object.keys(bodyProps).length > 0;
    const responses: Record<string, unknown> = commonErrors(route, method, hasParams, pathParams.length > 0);
    for (const [status, why] of Object.entries(docs?.errors ?? {})) responses[status] = errorAnswer(why);
    for (const [status, answer] of Object.entries(docs?.responses ?? {})) {
      responses[status] = answerOf(answer, components);
    }
    const operation: JsonSchema = {
      operationId,
      summary: docs?.summary ?? route.action ?? `${method.toUpperCase()} ${path}`,
      description: [docs?.description, describeAccess(route.access)].filter(Boolean).join("\n\n"),
      tags: [tag],
      ...(parameters.length ? { parameters } : {}),
      responses: Object.fromEntries(Object.entries(responses).sort(([a], [b]) => a.localeCompare(b))),
    };
    if (Object.keys(bodyProps).length > 0) {
      operation.requestBody = {
        required: bodyRequired.length > 0,
        content: {
          "application/json": {
            schema: {
              type: "object",
              properties: bodyProps,
              ...(bodyRequired.length ? { required: bodyRequired } : {}),
            },
          },
        },
      };
    }
    // Public operations need nothing (the document's default is a Bearer token or the session cookie).
    if (route.access?.public) operation.security = [];
    (paths[path] ??= {})[method] = operation;
  }
  return {
    openapi: "3.1.0",
    info: {
      title: "AutoLabs backend",
      version: opts.version,
      description:
        "Courses, lab definitions with an approval workflow, and students' lab instances. Errors answer " +
        '`{"detail": "..."}`; validation errors answer 422 with FastAPI\'s shape, `{"detail": [{"loc", "msg", "type"}]}`. ' +
        "Lists take `offset`, `limit` (at most 100), `sort` (a field, `-field` for descending) and filters, and " +
        'answer `{"items", "total", "offset", "limit"}`.',
      license: { name: "Proprietary", identifier: "LicenseRef-Proprietary" },
    },
    // Relative: the API is where this document was fetched from, whatever host or proxy served it.
    servers: [{ url: opts.prefix, description: "This server" }],
    security: SECURITY,
    tags: [...tags]
      .sort()
      .map((name) => ({ name, description: TAG_DESCRIPTIONS[name] ?? `Operations under /${name}` })),
    paths,
    components: {
      securitySchemes: {
        bearerAuth: {
          type: "http",
          scheme: "bearer",
          bearerFormat: "JWT",
          description: "An access token of the identity provider (Zitadel), with the AutoLabs roles claim",
        },
        sessionCookie: {
          type: "apiKey",
          in: "cookie",
          name: opts.sessionCookie,
          description:
            "The browser session set by GET /auth/login → /auth/callback. Changes (POST/PUT/DELETE) with it must " +
            "send Content-Type: application/json from a trusted Origin (CSRF check)",
        },
      },
      schemas: {
        ...components.schemas,
        Error: {
          type: "object",
          properties: { detail: { type: "string", description: "What went wrong, for a person" } },
          required: ["detail"],
          additionalProperties: false,
        },
        ValidationError: {
          type: "object",
          description: "FastAPI's validation answer: every problem at once",
          properties: {
            detail: { type: "array", minItems: 1, items: { $ref: "#/components/schemas/ValidationProblem" } },
          },
          required: ["detail"],
          additionalProperties: false,
        },
        ValidationProblem: {
          type: "object",
          properties: {
            loc: {
              type: "array",
              description: 'Where: ["body"|"query"|"path", field, ...]',
              items: { type: ["string", "integer"] },
            },
            msg: { type: "string" },
            type: { type: "string", description: "pydantic's error type, e.g. missing, int_parsing" },
          },
          required: ["loc", "msg", "type"],
          additionalProperties: false,
        },
      },
      responses: {
        BadRequest: errorAnswer(
          "The body is not JSON, not an object, too deeply nested or has too many keys (or the path is not valid percent-encoded UTF-8)",
        ),
        Unauthorized: {
          ...errorAnswer("No valid credential (Bearer token or session cookie)"),
          headers: { "WWW-Authenticate": { description: "Bearer challenge (RFC 6750)", schema: { type: "string" } } },
        },
        Forbidden: errorAnswer(
          "The caller's role may not do this, the object is theirs to see but not to change, or a cookie-authenticated change failed the CSRF check",
        ),
        PayloadTooLarge: errorAnswer("The body (inflated) is larger than BODY_LIMIT_BYTES"),
        UnsupportedMediaType: errorAnswer("A body that is not application/json"),
        ValidationFailed: {
          description: "Parameters or body are not valid",
          content: { "application/json": { schema: { $ref: "#/components/schemas/ValidationError" } } },
        },
        TooManyRequests: {
          ...errorAnswer("Over the per-user rate limit (or, for the login, the per-address one)"),
          headers: { "Retry-After": { description: "Seconds to wait", schema: { type: "integer" } } },
        },
        ServiceUnavailable: {
          ...errorAnswer("A part the request needs is away for a moment (a node, the database, the broker)"),
          headers: { "Retry-After": { description: "Seconds to wait", schema: { type: "integer" } } },
        },
      },
    },
  };
}
