/**
 * The pure parts of the hostile-input defences (issue 8): the shared param rules as Moleculer compiles them,
 * the JSON shape bounds, body-parser error mapping, Allow computation and log redaction.
 */
import Validator from "fastest-validator";
import { bodyParserError, jsonShapeProblem, JSON_MAX_DEPTH, JSON_MAX_KEYS } from "../../services/api-gateway/body";
import { allowedMethods, routedPath, type RoutedAlias } from "../../services/api-gateway/http-methods";
import { redactUrl } from "../../services/api-gateway/log-redaction";
import {
  BODY_ID_PARAM,
  controlCharProblem,
  ID_PARAM,
  multilineTextParam,
  nameParam,
  optionalNotNull,
} from "../../lib/params";

// As moleculer's FastestValidator builds it (which also compiles a copy: the validator edits its schema).
const v = new Validator({ useNewCustomCheckerFunction: true });
type Result = true | { type: string; field: string; message: string }[];
const check = (schema: Record<string, unknown>, params: Record<string, unknown>): Result =>
  v.compile(Object.fromEntries(Object.entries(schema).map(([k, r]) => [k, { ...(r as object) }])))(params) as Result;
const types = (r: Result) => (r === true ? [] : r.map((e) => `${e.field}:${e.type}`));

describe("ID_PARAM (path ids)", () => {
  it("accepts decimal digits and JSON integers, converting strings to numbers", () => {
    for (const [raw, n] of [
      ["1", 1],
      ["42", 42],
      ["2147483647", 2147483647],
      [7, 7],
    ] as const) {
      const params: Record<string, unknown> = { id: raw };
      expect(check({ id: ID_PARAM }, params)).toBe(true);
      expect(params.id).toBe(n);
    }
  });

  it("refuses every other spelling and out-of-range value", () => {
    const spellings = ["0x10", "1e3", " 1", "1 ", "+1", "01", "-1", "0", "1.0", "", "abc", "2147483648", "99999999999"];
    for (const raw of [...spellings, true, [1], 1.5, 0, -3, null]) {
      expect([raw, check({ id: ID_PARAM }, { id: raw })]).not.toEqual([raw, true]);
    }
  });
});

describe("BODY_ID_PARAM (JSON ids)", () => {
  it("accepts JSON integers only", () => {
    expect(check({ lab_id: BODY_ID_PARAM }, { lab_id: 3 })).toBe(true);
    for (const raw of ["3", true, [3], 3.5, 0, 2147483648, null, {}]) {
      expect(check({ lab_id: BODY_ID_PARAM }, { lab_id: raw })).not.toBe(true);
    }
  });
});

describe("null in optional fields", () => {
  it("optionalNotNull: absent is fine, null is a problem naming the field", () => {
    const schema = { flag: optionalNotNull({ type: "boolean" }), name: optionalNotNull(nameParam(10)) };
    expect(check(schema, {})).toBe(true);
    const problems = types(check(schema, { flag: null, name: null }));
    expect(problems).toEqual(["flag:null_not_allowed", "name:null_not_allowed"]);
  });

  it("nullable: true lets null through (the column may be cleared)", () => {
    expect(check({ d: { ...multilineTextParam(10), optional: true, nullable: true } }, { d: null })).toBe(true);
  });

  it("a required field's null is one 'required' problem, not two", () => {
    expect(types(check({ name: nameParam(10) }, { name: null }))).toEqual(["name:required"]);
  });
});

describe("control characters", () => {
  it("names refuse all of them; multi-line texts keep \\n \\r \\t only", () => {
    for (const c of ["\u0000", "\u0007", "\t", "\n", "\r", "\u001b", "\u007f", "\u0085", "\u009f"]) {
      expect(controlCharProblem(`a${c}b`, false)).not.toBeNull();
    }
    for (const c of ["\t", "\n", "\r"]) expect(controlCharProblem(`a${c}b`, true)).toBeNull();
    for (const c of ["\u0000", "\u0008", "\u000b", "\u000c", "\u001b", "\u007f", "\u0085"]) {
      expect(controlCharProblem(`a${c}b`, true)).not.toBeNull();
    }
    expect(controlCharProblem("Grüße – 日本語 🙂", false)).toBeNull();
  });

  it("the name rule reports them at the field", () => {
    expect(types(check({ name: nameParam(50) }, { name: "a\u0000b" }))).toEqual(["name:string_pattern_mismatch"]);
  });
});

describe("jsonShapeProblem", () => {
  const bytes = (s: string) => Buffer.from(s);
  it("counts nesting and keys outside strings only", () => {
    expect(jsonShapeProblem(bytes("[".repeat(JSON_MAX_DEPTH) + "]".repeat(JSON_MAX_DEPTH)))).toBeNull();
    expect(jsonShapeProblem(bytes("[".repeat(JSON_MAX_DEPTH + 1)))).toMatch(/nested deeper/);
    expect(jsonShapeProblem(bytes(`{"a":"${"[{:".repeat(5000)}"}`))).toBeNull();
    expect(jsonShapeProblem(bytes(`{"a":"\\"${"[".repeat(100)}"}`))).toBeNull();
    const keys = (n: number) => bytes("{" + Array.from({ length: n }, (_, i) => `"k${i}":1`).join(",") + "}");
    expect(jsonShapeProblem(keys(JSON_MAX_KEYS))).toBeNull();
    expect(jsonShapeProblem(keys(JSON_MAX_KEYS + 1))).toMatch(/more than/);
  });

  it("siblings do not add up to depth", () => {
    expect(jsonShapeProblem(bytes("[" + "[[]],".repeat(10000) + "[]]"))).toBeNull();
  });
});

describe("bodyParserError", () => {
  it("maps every client-side body failure to a 4xx client error", () => {
    const cases: [Record<string, unknown>, number][] = [
      [{ type: "json.too.complex", status: 403, message: "deep" }, 400],
      [{ type: "entity.parse.failed", status: 400 }, 400],
      [{ type: "entity.too.large", status: 413 }, 413],
      [{ type: "encoding.unsupported", status: 415 }, 415],
      [{ type: "charset.unsupported", status: 415 }, 415],
      [{ code: "Z_DATA_ERROR", status: 400, message: "incorrect header check" }, 400],
      [{ code: "ERR__ERROR_FORMAT_PADDING_1", status: 400 }, 400],
      [{ type: "request.aborted", status: 400 }, 400],
    ];
    for (const [err, status] of cases) {
      expect([err, (bodyParserError(err) as { code?: unknown }).code]).toEqual([err, status]);
    }
  });

  it("leaves server faults as they are", () => {
    const err = { status: 500, message: "boom" };
    expect(bodyParserError(err)).toBe(err);
  });
});

describe("allowedMethods", () => {
  const alias = (method: string, re: RegExp, handler?: unknown): RoutedAlias => ({
    method,
    handler,
    match: (u: string) => re.test(u),
  });
  const stream = () => undefined;
  const aliases = [
    alias("GET", /^\/c$/),
    alias("POST", /^\/c$/),
    alias("GET", /^\/c\/\d+$/),
    alias("PUT", /^\/c\/\d+$/),
    alias("DELETE", /^\/c\/\d+$/),
    alias("GET", /^\/c\/\d+\/events$/, stream),
  ];
  const noHead = (a: RoutedAlias) => a.handler === stream;
  it("lists the routes' methods in a fixed order, HEAD with GET, OPTIONS always", () => {
    expect(allowedMethods(aliases, "/c", noHead)).toBe("GET, HEAD, POST, OPTIONS");
    expect(allowedMethods(aliases, "/c/1", noHead)).toBe("GET, HEAD, PUT, DELETE, OPTIONS");
    expect(allowedMethods(aliases, "/c/1/events", noHead)).toBe("GET, OPTIONS");
    expect(allowedMethods(aliases, "/nowhere", noHead)).toBeNull();
  });
  it("matches the path as routed", () => {
    expect(routedPath("/c/?limit=1")).toBe("/c");
    expect(routedPath("/")).toBe("/");
  });
});

describe("redactUrl", () => {
  it("redacts every value of an auth route's query and secret-named parameters elsewhere", () => {
    const callback = redactUrl("/api/v1/auth/callback?code=abc&state=def");
    expect(callback).toBe("/api/v1/auth/callback?code=[redacted]&state=[redacted]");
    expect(redactUrl("/api/v1/auth/login?redirect_to=%2Fhome")).toBe("/api/v1/auth/login?redirect_to=[redacted]");
    const list = redactUrl("/api/v1/courses?limit=5&access_token=x&q=y");
    expect(list).toBe("/api/v1/courses?limit=5&access_token=[redacted]&q=y");
    const spelled = redactUrl("/api/v1/x?ID_TOKEN=1&Session=2&%63ode=3");
    expect(spelled).toBe("/api/v1/x?ID_TOKEN=[redacted]&Session=[redacted]&%63ode=[redacted]");
    expect(redactUrl("/api/v1/courses")).toBe("/api/v1/courses");
  });
});
