import { buildOpenApi, ruleToSchema } from "../../services/api-gateway/openapi";
import { pageOf, s } from "../../lib/schema";
import { listParams } from "../../platform/db.mixin";

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

describe("schemas in the document", () => {
  const Item = s.object({ id: s.integer(), at: s.nullable(s.dateTime()) }, { title: "Item" });
  const spec = buildOpenApi(
    [
      {
        method: "GET",
        path: "/api/v1/items",
        action: "items.list",
        params: listParams({ sortable: ["id", "at"], defaultSort: "-id", filters: { kind: "enum:a|b", n: "int" } }),
        access: { roles: ["admin"] },
        docs: { summary: "List items", responses: { 200: { description: "A page", body: pageOf(Item) } } },
      },
      {
        method: "POST",
        path: "/api/v1/items/:id/done",
        action: "items.done",
        params: { id: { type: "number", integer: true } },
        access: { roles: ["admin"], entity: "Item" },
        docs: {
          summary: "Finish an item",
          responses: { 200: { description: "The item", body: Item } },
          errors: { 409: "Already done" },
        },
      },
    ],
    { prefix: "/api/v1", version: "1", sessionCookie: "autolabs_session" },
  ) as {
    paths: Record<string, Record<string, { parameters: { name: string; schema: unknown }[]; responses: Json }>>;
    components: { schemas: Json };
  };
  type Json = Record<string, unknown>;

  it("lists a named row once, as a component every answer refers to", () => {
    expect(spec.components.schemas.Item).toMatchObject({ type: "object", required: ["id", "at"] });
    expect(spec.components.schemas.ItemPage).toMatchObject({
      properties: { items: { type: "array", items: { $ref: "#/components/schemas/Item" } } },
    });
    expect(spec.paths["/items/{id}/done"].post.responses["200"]).toMatchObject({
      content: { "application/json": { schema: { $ref: "#/components/schemas/Item" } } },
    });
  });

  it("types list parameters from the list spec (bounds, sort allow-list, filters)", () => {
    const params = Object.fromEntries(spec.paths["/items"].get.parameters.map((p) => [p.name, p.schema]));
    expect(params).toEqual({
      offset: { type: "integer", minimum: 0, maximum: 2147483647, default: 0 },
      limit: { type: "integer", minimum: 1, maximum: 100, default: 50 },
      sort: { type: "string", enum: ["id", "-id", "at", "-at"], default: "-id" },
      kind: { type: "string", enum: ["a", "b"] },
      n: { type: "integer", minimum: -2147483648, maximum: 2147483647 },
    });
  });

  it("adds the errors any operation of the shape may answer, and the declared ones", () => {
    expect(Object.keys(spec.paths["/items/{id}/done"].post.responses).sort()).toEqual(
      ["200", "400", "401", "403", "404", "409", "413", "415", "422", "429", "503"].sort(),
    );
    expect(Object.keys(spec.paths["/items"].get.responses).sort()).toEqual(
      ["200", "401", "403", "422", "429", "503"].sort(),
    );
  });

  it("refuses two different schemas of one name", () => {
    const Other = s.object({ name: s.string() }, { title: "Item" });
    const route = (action: string, body: unknown) => ({
      method: "GET",
      path: `/api/v1/${action}`,
      action,
      docs: { summary: action, responses: { 200: { description: "x", body: body as typeof Item } } },
    });
    expect(() =>
      buildOpenApi([route("a", Item), route("b", Other)], { prefix: "/api/v1", version: "1", sessionCookie: "c" }),
    ).toThrow(/two different schemas are named Item/);
  });
});
