/**
 * OpenAPI 3.1 description of /api/v1, built from what the gateway actually routes: each alias, its
 * action's params schema (fastest-validator, translated to JSON Schema) and its access declaration.
 * Pure: the gateway hands in plain route descriptions.
 */

export interface RouteDescription {
  method: string;
  /** Full path with moleculer-web parameters, e.g. /api/v1/courses/:id */
  path: string;
  action?: string;
  params?: Record<string, unknown>;
  access?: { public?: boolean; roles?: readonly string[] };
}

type JsonSchema = Record<string, unknown>;

interface ParameterObject {
  name: string;
  in: "path" | "query";
  required: boolean;
  schema: JsonSchema;
}

const ERROR_SCHEMA: JsonSchema = {
  type: "object",
  properties: {
    detail: {
      oneOf: [{ type: "string" }, { type: "array", items: { $ref: "#/components/schemas/ValidationProblem" } }],
    },
  },
  required: ["detail"],
};

/** fastest-validator rule → JSON Schema (the subset this API uses); unknown rules document as "any". */
export function ruleToSchema(rule: unknown): { schema: JsonSchema; optional: boolean } {
  if (typeof rule === "string") {
    const [type, ...flags] = rule.split("|");
    return { schema: ruleToSchema({ type }).schema, optional: flags.includes("optional") };
  }
  if (!rule || typeof rule !== "object") return { schema: {}, optional: true };
  const r = rule as Record<string, unknown>;
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
  if (r.nullable) schema = { anyOf: [schema, { type: "null" }] };
  return { schema, optional: Boolean(r.optional) || r.default !== undefined };
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

export function buildOpenApi(
  routes: readonly RouteDescription[],
  opts: { prefix: string; version: string; serverUrl: string },
): JsonSchema {
  const paths: Record<string, Record<string, JsonSchema>> = {};
  const sorted = [...routes].sort((a, b) => a.path.localeCompare(b.path) || a.method.localeCompare(b.method));
  for (const route of sorted) {
    if (!route.path.startsWith(opts.prefix)) continue;
    const method = route.method.toLowerCase();
    if (method === "*" || method === "all") continue;
    const path = openApiPath(route.path, opts.prefix);
    const pathParams = [...route.path.matchAll(/:([A-Za-z_]+)/g)].map((m) => m[1]);
    const parameters: ParameterObject[] = pathParams.map((name) => ({
      name,
      in: "path",
      required: true,
      schema: ruleToSchema(route.params?.[name]).schema,
    }));
    const bodyProps: Record<string, JsonSchema> = {};
    const bodyRequired: string[] = [];
    for (const [name, rule] of Object.entries(route.params ?? {})) {
      if (pathParams.includes(name) || name.startsWith("$$")) continue;
      const { schema, optional } = ruleToSchema(rule);
      if (method === "get" || method === "delete") parameters.push({ name, in: "query", required: !optional, schema });
      else {
        bodyProps[name] = schema;
        if (!optional) bodyRequired.push(name);
      }
    }
    const operation: JsonSchema = {
      operationId: route.action ?? `${method} ${path}`,
      tags: [path.split("/")[1] || "root"],
      description: describeAccess(route.access),
      parameters,
      responses: {
        "2XX": { description: "Success", content: { "application/json": { schema: {} } } },
        default: {
          description: "Error",
          content: { "application/json": { schema: { $ref: "#/components/schemas/Error" } } },
        },
      },
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
    if (!route.access?.public) operation.security = [{ bearer: [] }, { session: [] }];
    (paths[path] ??= {})[method] = operation;
  }
  return {
    openapi: "3.1.0",
    info: { title: "AutoLabs backend", version: opts.version },
    servers: [{ url: `${opts.serverUrl}${opts.prefix}` }],
    paths,
    components: {
      securitySchemes: {
        bearer: { type: "http", scheme: "bearer", bearerFormat: "JWT" },
        session: { type: "apiKey", in: "cookie", name: "session" },
      },
      schemas: {
        Error: ERROR_SCHEMA,
        ValidationProblem: {
          type: "object",
          properties: {
            loc: { type: "array", items: { type: ["string", "integer"] } },
            msg: { type: "string" },
            type: { type: "string" },
          },
          required: ["loc", "msg", "type"],
        },
      },
    },
  };
}

/** A small self-contained docs page (no CDN: works offline) that renders the spec as a table. */
export function docsPage(specUrl: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>AutoLabs API</title>
<style>body{font:14px system-ui,sans-serif;margin:2rem;max-width:70rem}code{background:#f3f3f3;padding:0 .2rem}
table{border-collapse:collapse;width:100%}td,th{border-bottom:1px solid #ddd;padding:.4rem;text-align:left;vertical-align:top}
.m{font-weight:bold;text-transform:uppercase}</style></head>
<body><h1>AutoLabs API</h1><p>OpenAPI document: <a href="${specUrl}">${specUrl}</a></p>
<table><thead><tr><th>Method</th><th>Path</th><th>Parameters</th><th>Access</th></tr></thead><tbody id="ops"></tbody></table>
<script>
fetch(${JSON.stringify(specUrl)}).then(r => r.json()).then(spec => {
  const rows = [];
  for (const [path, ops] of Object.entries(spec.paths)) for (const [m, op] of Object.entries(ops)) {
    const params = (op.parameters || []).map(p => p.name + " (" + p.in + ")");
    const body = op.requestBody ? Object.keys(op.requestBody.content["application/json"].schema.properties || {}) : [];
    const tr = document.createElement("tr");
    for (const [cls, text] of [["m", m], ["", path], ["", params.concat(body.map(b => b + " (body)")).join(", ")], ["", op.description]]) {
      const td = document.createElement("td"); td.className = cls; td.textContent = text; tr.appendChild(td);
    }
    rows.push(tr);
  }
  document.getElementById("ops").append(...rows);
});
</script></body></html>`;
}
