import { buildOpenApi, ruleToSchema } from "../../services/api-gateway/openapi";

describe("ruleToSchema", () => {
  it.each([
    [{ type: "number", integer: true, positive: true }, { type: "integer", minimum: 1 }, false],
    [{ type: "string", min: 1, max: 200, optional: true }, { type: "string", minLength: 1, maxLength: 200 }, true],
    [
      { type: "array", items: { type: "number", integer: true }, min: 1 },
      { type: "array", items: { type: "integer" }, minItems: 1 },
      false,
    ],
    [{ type: "enum", values: ["a", "b"] }, { enum: ["a", "b"] }, false],
    [
      { type: "number", integer: true, nullable: true, optional: true },
      { anyOf: [{ type: "integer" }, { type: "null" }] },
      true,
    ],
    [{ type: "any", optional: true }, {}, true],
    ["boolean|optional", { type: "boolean" }, true],
  ])("%j → %j", (rule, schema, optional) => {
    expect(ruleToSchema(rule)).toEqual({ schema, optional });
  });
});

describe("buildOpenApi", () => {
  const spec = buildOpenApi(
    [
      {
        method: "GET",
        path: "/api/v1/courses/:id",
        action: "courses.get",
        params: { id: { type: "number", integer: true } },
        access: { roles: ["admin"] },
      },
      {
        method: "POST",
        path: "/api/v1/courses",
        action: "courses.create",
        params: { name: { type: "string" }, description: { type: "string", optional: true } },
        access: { roles: ["teacher"] },
      },
      { method: "GET", path: "/api/v1/health", action: "api-gateway.health", access: { public: true, roles: [] } },
      { method: "GET", path: "/metrics", action: "x" },
    ],
    { prefix: "/api/v1", version: "1.2.3", sessionCookie: "autolabs_session" },
  ) as { paths: Record<string, Record<string, Record<string, unknown>>>; servers: { url: string }[] };

  it("describes each route under the prefix with path, query and body parameters", () => {
    expect(Object.keys(spec.paths).sort()).toEqual(["/courses", "/courses/{id}", "/health"]);
    expect(spec.paths["/courses/{id}"].get.parameters).toEqual([
      { name: "id", in: "path", required: true, schema: { type: "integer" } },
    ]);
    expect(spec.paths["/courses"].post.requestBody).toMatchObject({
      required: true,
      content: {
        "application/json": {
          schema: { required: ["name"], properties: { name: { type: "string" }, description: { type: "string" } } },
        },
      },
    });
    expect(spec.servers[0].url).toBe("/api/v1");
  });

  it("marks public routes as needing no credentials and the others as secured", () => {
    expect(spec.paths["/health"].get.security).toEqual([]);
    expect(spec.paths["/courses"].post.security).toBeUndefined(); // the document's default: Bearer or cookie
    expect(spec.paths["/courses"].post.description).toMatch(/Roles: teacher/);
  });
});
