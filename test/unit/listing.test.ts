import {
  containsPattern,
  DEFAULT_LIMIT,
  MAX_LIMIT,
  MAX_OFFSET,
  MAX_STRING_FILTER_LENGTH,
  parseListQuery,
  type ListSpec,
} from "../../lib/listing";
import type { ValidationProblem } from "../../lib/validation-problem";

const SPEC = {
  sortable: ["created_at", "name", "id"],
  defaultSort: "-created_at",
  filters: { status: "enum:draft|approved|rejected", course_id: "int", q: "string" },
} as const;

function ok(query: Record<string, unknown>) {
  const r = parseListQuery(query, SPEC);
  if (!r.ok) throw new Error(`expected ok, got ${JSON.stringify(r.problems)}`);
  return r.value;
}

function problems(query: Record<string, unknown>): ValidationProblem[] {
  const r = parseListQuery(query, SPEC);
  if (r.ok) throw new Error(`expected problems, got ${JSON.stringify(r.value)}`);
  return r.problems;
}

describe("parseListQuery: defaults", () => {
  it("gives offset 0, limit 50, the default sort and no filters for an empty query", () => {
    expect(ok({})).toEqual({
      offset: 0,
      limit: DEFAULT_LIMIT,
      sort: { field: "created_at", direction: "DESC" },
      filters: {},
    });
  });

  it("accepts null / undefined as an empty query", () => {
    expect(parseListQuery(null, SPEC)).toEqual(parseListQuery({}, SPEC));
    expect(parseListQuery(undefined, SPEC)).toEqual(parseListQuery({}, SPEC));
  });

  it("accepts a typed params object without an index signature", () => {
    interface Params {
      id: number;
      limit?: string;
    }
    const p: Params = { id: 3, limit: "5" };
    const r = parseListQuery(p, SPEC);
    expect(r.ok && r.value.limit).toBe(5);
  });

  it("uses an ascending default sort when the spec says so", () => {
    const r = parseListQuery({}, { sortable: ["name"], defaultSort: "name", filters: {} });
    expect(r.ok && r.value.sort).toEqual({ field: "name", direction: "ASC" });
  });

  it("treats empty strings as absent (lenient about ?status=)", () => {
    expect(ok({ offset: "", limit: "", sort: "", status: "", course_id: "", q: "" })).toEqual(ok({}));
    expect(ok({ limit: "   " }).limit).toBe(DEFAULT_LIMIT);
  });

  it("treats null as absent", () => {
    expect(ok({ offset: null, status: null })).toEqual(ok({}));
  });

  it("ignores unknown query parameters", () => {
    expect(ok({ foo: "bar", owner_id: "1", status_x: "x" })).toEqual(ok({}));
    expect(ok(JSON.parse('{"__proto__": {"limit": "7"}, "constructor": "x"}') as Record<string, unknown>)).toEqual(
      ok({}),
    );
  });
});

describe("parseListQuery: offset", () => {
  it.each([
    ["0", 0],
    ["7", 7],
    ["007", 7],
    ["+3", 3],
    ["-0", 0],
    [" 12 ", 12],
    [String(MAX_OFFSET), MAX_OFFSET],
  ])("accepts %j → %d", (raw, expected) => {
    const v = ok({ offset: raw }).offset;
    expect(v).toBe(expected);
    expect(Object.is(v, -0)).toBe(false);
  });

  it("accepts integer numbers from internal callers", () => {
    expect(ok({ offset: 20 }).offset).toBe(20);
  });

  it.each([
    ["-1", "greater_than_equal", "Input should be greater than or equal to 0"],
    ["abc", "int_parsing", "Input should be a valid integer, unable to parse string as an integer"],
    ["1.5", "int_parsing", expect.any(String)],
    ["1e3", "int_parsing", expect.any(String)],
    ["0x10", "int_parsing", expect.any(String)],
    ["1 0", "int_parsing", expect.any(String)],
    [String(MAX_OFFSET + 1), "less_than_equal", `Input should be less than or equal to ${MAX_OFFSET}`],
    ["99999999999999999999999", "less_than_equal", expect.any(String)],
  ])("rejects %j (%s)", (raw, type, msg) => {
    expect(problems({ offset: raw })).toEqual([{ loc: ["query", "offset"], msg, type }]);
  });

  it.each([
    [1.5, "int_from_float"],
    [Number.NaN, "finite_number"],
    [Number.POSITIVE_INFINITY, "finite_number"],
    [true, "int_type"],
    [{ a: "1" }, "int_type"],
  ])("rejects non-string %p (%s)", (raw, type) => {
    expect(problems({ offset: raw })).toEqual([{ loc: ["query", "offset"], msg: expect.any(String), type }]);
  });

  it("takes the last value of a repeated parameter (as FastAPI does)", () => {
    expect(ok({ offset: ["5", "10"] }).offset).toBe(10);
    expect(problems({ offset: ["5", "x"] })[0]?.type).toBe("int_parsing");
  });
});

describe("parseListQuery: limit", () => {
  it.each([
    ["1", 1],
    ["50", 50],
    ["100", 100],
  ])("accepts %j", (raw, expected) => {
    expect(ok({ limit: raw }).limit).toBe(expected);
  });

  it("rejects a limit above 100 with 422 instead of clamping", () => {
    expect(problems({ limit: "101" })).toEqual([
      { loc: ["query", "limit"], msg: `Input should be less than or equal to ${MAX_LIMIT}`, type: "less_than_equal" },
    ]);
    expect(problems({ limit: 1000 })[0]?.type).toBe("less_than_equal");
  });

  it.each(["0", "-1", "-100"])("rejects %j below 1", (raw) => {
    expect(problems({ limit: raw })).toEqual([
      { loc: ["query", "limit"], msg: "Input should be greater than or equal to 1", type: "greater_than_equal" },
    ]);
  });

  it("rejects a non-integer limit", () => {
    expect(problems({ limit: "ten" })[0]).toMatchObject({ loc: ["query", "limit"], type: "int_parsing" });
    expect(problems({ limit: 2.5 })[0]).toMatchObject({ loc: ["query", "limit"], type: "int_from_float" });
  });
});

describe("parseListQuery: sort", () => {
  it.each([
    ["name", { field: "name", direction: "ASC" }],
    ["+name", { field: "name", direction: "ASC" }],
    ["-name", { field: "name", direction: "DESC" }],
    ["created_at", { field: "created_at", direction: "ASC" }],
    ["-id", { field: "id", direction: "DESC" }],
    [" -id ", { field: "id", direction: "DESC" }],
  ])("parses %j", (raw, expected) => {
    expect(ok({ sort: raw }).sort).toEqual(expected);
  });

  it.each([
    "email",
    "-email",
    "--name",
    "-",
    "+",
    "name,-id",
    "Name",
    "- name",
    "name;drop table labs",
    "created_at DESC",
    "constructor",
  ])("rejects %j naming the allowed fields", (raw) => {
    const [p] = problems({ sort: raw });
    expect(p).toMatchObject({ loc: ["query", "sort"], type: "value_error" });
    expect(p.msg).toContain("created_at, name, id");
  });

  it("rejects a non-string sort", () => {
    expect(problems({ sort: { field: "name" } })).toEqual([
      { loc: ["query", "sort"], msg: "Input should be a valid string", type: "string_type" },
    ]);
  });

  it("does not echo an endless sort value back", () => {
    const [p] = problems({ sort: "x".repeat(10_000) });
    expect(p.msg.length).toBeLessThan(400);
  });

  it("takes the last of repeated sorts", () => {
    expect(ok({ sort: ["name", "-id"] }).sort).toEqual({ field: "id", direction: "DESC" });
  });
});

describe("parseListQuery: filters", () => {
  it("parses int, enum and string filters", () => {
    expect(ok({ course_id: "12", status: "approved", q: "python" }).filters).toEqual({
      course_id: 12,
      status: "approved",
      q: "python",
    });
  });

  it("leaves absent filters out entirely", () => {
    const f = ok({ status: "draft" }).filters;
    expect(f).toEqual({ status: "draft" });
    expect("course_id" in f).toBe(false);
  });

  it("types filters by kind", () => {
    const f = ok({ course_id: "1", status: "draft" }).filters;
    // Compile-time checks: number for int, the literal union for enum.
    const id: number | undefined = f.course_id;
    const status: "draft" | "approved" | "rejected" | undefined = f.status;
    expect([id, status]).toEqual([1, "draft"]);
  });

  it.each([
    ["abc", "int_parsing"],
    ["1.0", "int_parsing"],
    ["2147483648", "less_than_equal"],
    ["-2147483649", "greater_than_equal"],
  ])("rejects int filter %j (%s)", (raw, type) => {
    expect(problems({ course_id: raw })).toEqual([{ loc: ["query", "course_id"], msg: expect.any(String), type }]);
  });

  it("accepts the int32 bounds and negatives in an int filter", () => {
    expect(ok({ course_id: "2147483647" }).filters.course_id).toBe(2147483647);
    expect(ok({ course_id: "-5" }).filters.course_id).toBe(-5);
    expect(ok({ course_id: 9 }).filters.course_id).toBe(9);
  });

  it("rejects an enum value outside the list with pydantic's wording", () => {
    expect(problems({ status: "running" })).toEqual([
      { loc: ["query", "status"], msg: "Input should be 'draft', 'approved' or 'rejected'", type: "enum" },
    ]);
  });

  it("is case-sensitive for enums", () => {
    expect(problems({ status: "APPROVED" })[0]?.type).toBe("enum");
  });

  it("words single and two-choice enums naturally", () => {
    const one = parseListQuery({ s: "x" }, { sortable: ["id"], defaultSort: "id", filters: { s: "enum:a" } });
    expect(!one.ok && one.problems[0]?.msg).toBe("Input should be 'a'");
    const two = parseListQuery({ s: "x" }, { sortable: ["id"], defaultSort: "id", filters: { s: "enum:a|b" } });
    expect(!two.ok && two.problems[0]?.msg).toBe("Input should be 'a' or 'b'");
  });

  it("caps string filters", () => {
    expect(ok({ q: "x".repeat(MAX_STRING_FILTER_LENGTH) }).filters.q).toHaveLength(MAX_STRING_FILTER_LENGTH);
    expect(problems({ q: "x".repeat(MAX_STRING_FILTER_LENGTH + 1) })).toEqual([
      {
        loc: ["query", "q"],
        msg: `String should have at most ${MAX_STRING_FILTER_LENGTH} characters`,
        type: "string_too_long",
      },
    ]);
  });

  it("trims string filters and stringifies numbers", () => {
    expect(ok({ q: "  py  " }).filters.q).toBe("py");
    expect(ok({ q: 42 }).filters.q).toBe("42");
  });

  it("rejects object values for string and enum filters", () => {
    expect(problems({ q: { $ne: "" } })).toEqual([
      { loc: ["query", "q"], msg: "Input should be a valid string", type: "string_type" },
    ]);
    expect(problems({ status: { a: 1 } })[0]?.type).toBe("string_type");
    expect(problems({ status: true })[0]?.type).toBe("string_type");
  });

  it("takes the last of repeated filter values", () => {
    expect(ok({ status: ["draft", "approved"] }).filters.status).toBe("approved");
  });
});

describe("parseListQuery: several problems", () => {
  it("reports every problem at once, in parameter order", () => {
    const ps = problems({ offset: "-1", limit: "500", sort: "nope", course_id: "x", status: "bad" });
    expect(ps.map((p) => p.loc)).toEqual([
      ["query", "offset"],
      ["query", "limit"],
      ["query", "sort"],
      ["query", "status"],
      ["query", "course_id"],
    ]);
  });
});

describe("parseListQuery: spec errors are programmer errors", () => {
  it("throws when the default sort is not sortable", () => {
    expect(() => parseListQuery({}, { sortable: ["name"], defaultSort: "-created_at", filters: {} })).toThrow(
      /defaultSort/,
    );
  });

  it("throws when a filter shadows a paging parameter", () => {
    const spec: ListSpec = { sortable: ["id"], defaultSort: "id", filters: { limit: "int" } };
    expect(() => parseListQuery({}, spec)).toThrow(/clashes/);
  });

  it("throws on an empty enum choice", () => {
    expect(() => parseListQuery({}, { sortable: ["id"], defaultSort: "id", filters: { s: "enum:a||b" } })).toThrow(
      /empty enum/,
    );
  });
});

describe("containsPattern", () => {
  it("wraps in % and escapes LIKE's wildcards and the escape character", () => {
    expect(containsPattern("net")).toBe("%net%");
    expect(containsPattern("100%_a\\b")).toBe("%100\\%\\_a\\\\b%");
  });
});
