/**
 * List-query parsing shared by every list endpoint (`?offset=0&limit=50&sort=-created_at` plus filters)
 * and the list response envelope `{items, total, offset, limit}`.
 *
 * Pure: no moleculer, no sequelize. Problems come back FastAPI-shaped (`loc: ["query", name]`) so the
 * service layer can hand them straight to `validationError()` from errors.ts (422).
 *
 * Input values are what moleculer-web's query parser gives (strings; an array when a parameter is
 * repeated; an object for `a[b]=1`) or what an internal caller passes (numbers).
 */

import type { ValidationProblem } from "./validation-problem";

/** `"int"`: a 32-bit integer; `"string"`: up to MAX_STRING_FILTER_LENGTH chars; `"enum:a|b|c"`: one of a, b, c. */
export type FilterKind = "int" | "string" | `enum:${string}`;

export interface ListSpec<
  S extends string = string,
  F extends Record<string, FilterKind> = Record<string, FilterKind>,
> {
  /** Fields a client may sort by (allow-list: they reach ORDER BY). */
  sortable: readonly S[];
  /** Same syntax as the query parameter, e.g. "-created_at". Must name a sortable field. */
  defaultSort: string;
  filters: F;
}

export type SortDirection = "ASC" | "DESC";
export interface Sort<S extends string = string> {
  field: S;
  direction: SortDirection;
}

type SplitBar<T extends string> = T extends `${infer H}|${infer R}` ? H | SplitBar<R> : T;
/** The parsed value type of one filter kind: number for "int", the literal union for "enum:a|b". */
export type FilterValue<K extends FilterKind> = K extends "int"
  ? number
  : K extends `enum:${infer V}`
    ? SplitBar<V>
    : string;
/** Only the filters present in the query appear (absent ones are undefined: "no filter"). */
export type FilterValues<F extends Record<string, FilterKind>> = { [K in keyof F]?: FilterValue<F[K]> };

export interface ListQuery<
  S extends string = string,
  F extends Record<string, FilterKind> = Record<string, FilterKind>,
> {
  offset: number;
  limit: number;
  sort: Sort<S>;
  filters: FilterValues<F>;
}

export type ListQueryResult<
  S extends string = string,
  F extends Record<string, FilterKind> = Record<string, FilterKind>,
> = { ok: true; value: ListQuery<S, F> } | { ok: false; problems: ValidationProblem[] };

export const DEFAULT_LIMIT = 50;
export const MAX_LIMIT = 100;
/** Postgres int4 max: keeps OFFSET and int filters inside every driver's integer type (no 500 on overflow). */
export const MAX_INT32 = 2_147_483_647;
const MIN_INT32 = -2_147_483_648;
export const MAX_OFFSET = MAX_INT32;
/** Caps a free-text filter so a query string cannot push megabytes into a WHERE clause. */
export const MAX_STRING_FILTER_LENGTH = 200;

const INT_RE = /^[+-]?\d+$/;

/**
 * One raw value. A repeated parameter (`?limit=1&limit=2`) takes the last one, as FastAPI does for a
 * scalar parameter. An empty string counts as absent: frontends often serialise an empty form field
 * as `?status=`, and "no filter" is what they mean (FastAPI would 422 here; we are deliberately lenient).
 */
function pick(raw: unknown): unknown {
  const v: unknown = Array.isArray(raw) ? raw[raw.length - 1] : raw;
  if (v === undefined || v === null) return undefined;
  if (typeof v === "string") {
    const t = v.trim();
    return t === "" ? undefined : t;
  }
  return v;
}

type Parsed<T> = { ok: true; value: T } | { ok: false; problem: ValidationProblem };

function parseInt32(name: string, v: unknown, min: number, max: number): Parsed<number> {
  const loc = ["query", name];
  let n: number;
  if (typeof v === "number") {
    if (!Number.isFinite(v))
      return { ok: false, problem: { loc, msg: "Input should be a finite number", type: "finite_number" } };
    if (!Number.isInteger(v))
      return {
        ok: false,
        problem: {
          loc,
          msg: "Input should be a valid integer, got a number with a fractional part",
          type: "int_from_float",
        },
      };
    n = v;
  } else if (typeof v === "string") {
    if (!INT_RE.test(v))
      return {
        ok: false,
        problem: {
          loc,
          msg: "Input should be a valid integer, unable to parse string as an integer",
          type: "int_parsing",
        },
      };
    // Huge digit strings become huge (imprecise) numbers: fine, they only need to fail the range check.
    n = Number(v);
  } else {
    return { ok: false, problem: { loc, msg: "Input should be a valid integer", type: "int_type" } };
  }
  if (n < min)
    return {
      ok: false,
      problem: { loc, msg: `Input should be greater than or equal to ${min}`, type: "greater_than_equal" },
    };
  if (n > max)
    return {
      ok: false,
      problem: { loc, msg: `Input should be less than or equal to ${max}`, type: "less_than_equal" },
    };
  return { ok: true, value: n === 0 ? 0 : n }; // normalise "-0"
}

function enumChoices(kind: string): string[] {
  return kind.slice("enum:".length).split("|");
}

/** "'a', 'b' or 'c'": the wording pydantic uses for enum errors. */
function quoteChoices(choices: readonly string[]): string {
  const q = choices.map((c) => `'${c}'`);
  return q.length <= 1 ? q.join("") : `${q.slice(0, -1).join(", ")} or ${q[q.length - 1]}`;
}

function parseFilter(name: string, kind: FilterKind, v: unknown): Parsed<number | string> {
  const loc = ["query", name];
  if (kind === "int") return parseInt32(name, v, MIN_INT32, MAX_INT32);
  // Internal callers may pass a number where a string is expected (e.g. a numeric search term).
  const s = typeof v === "number" && Number.isFinite(v) ? String(v) : v;
  if (typeof s !== "string")
    return { ok: false, problem: { loc, msg: "Input should be a valid string", type: "string_type" } };
  if (kind === "string") {
    if (s.length > MAX_STRING_FILTER_LENGTH)
      return {
        ok: false,
        problem: {
          loc,
          msg: `String should have at most ${MAX_STRING_FILTER_LENGTH} characters`,
          type: "string_too_long",
        },
      };
    return { ok: true, value: s };
  }
  const choices = enumChoices(kind);
  if (!choices.includes(s))
    return { ok: false, problem: { loc, msg: `Input should be ${quoteChoices(choices)}`, type: "enum" } };
  return { ok: true, value: s };
}

/** Parses "name" / "-name" / "+name". Returns undefined when the syntax or the field is not allowed. */
function parseSortToken<S extends string>(token: string, sortable: readonly S[]): Sort<S> | undefined {
  let direction: SortDirection = "ASC";
  let field = token;
  if (field.startsWith("-")) {
    direction = "DESC";
    field = field.slice(1);
  } else if (field.startsWith("+")) {
    field = field.slice(1);
  }
  const hit = sortable.find((f) => f === field);
  return hit === undefined ? undefined : { field: hit, direction };
}

/** Throws on a programmer error in the spec (not client input): a unit test of the caller catches it. */
function checkSpec(spec: ListSpec): void {
  if (parseSortToken(spec.defaultSort, spec.sortable) === undefined)
    throw new Error(`listing spec: defaultSort "${spec.defaultSort}" is not one of the sortable fields`);
  for (const [name, kind] of Object.entries(spec.filters)) {
    if (["offset", "limit", "sort"].includes(name))
      throw new Error(`listing spec: filter "${name}" clashes with a paging parameter`);
    if (kind.startsWith("enum:") && enumChoices(kind).some((c) => c === ""))
      throw new Error(`listing spec: filter "${name}" has an empty enum choice`);
  }
}

/**
 * Parses paging, sort and filters. All problems are reported at once (like FastAPI), each at
 * `["query", <param>]`. Unknown query parameters are ignored.
 *
 * limit: 1..100, default 50. A limit above 100 is a 422, not silently clamped: a client that asked for
 * 500 and got 100 could believe it has everything (FastAPI's `le=100` behaves the same way).
 */
export function parseListQuery<const S extends string, const F extends Record<string, FilterKind>>(
  // `object`, not Record<string, unknown>: callers may pass a typed params interface (no index signature).
  query: object | null | undefined,
  spec: ListSpec<S, F>,
): ListQueryResult<S, F> {
  checkSpec(spec);
  const q: Record<string, unknown> = { ...(query ?? {}) };
  const problems: ValidationProblem[] = [];

  let offset = 0;
  const rawOffset = pick(q.offset);
  if (rawOffset !== undefined) {
    const r = parseInt32("offset", rawOffset, 0, MAX_OFFSET);
    if (r.ok) offset = r.value;
    else problems.push(r.problem);
  }

  let limit = DEFAULT_LIMIT;
  const rawLimit = pick(q.limit);
  if (rawLimit !== undefined) {
    const r = parseInt32("limit", rawLimit, 1, MAX_LIMIT);
    if (r.ok) limit = r.value;
    else problems.push(r.problem);
  }

  // checkSpec guarantees the default parses.
  let sort = parseSortToken(spec.defaultSort, spec.sortable) as Sort<S>;
  const rawSort = pick(q.sort);
  if (rawSort !== undefined) {
    const parsed = typeof rawSort === "string" ? parseSortToken(rawSort, spec.sortable) : undefined;
    if (parsed) sort = parsed;
    else
      problems.push({
        loc: ["query", "sort"],
        msg:
          typeof rawSort === "string"
            ? `Cannot sort by '${rawSort.slice(0, 100)}'; sort by one of: ${spec.sortable.join(", ")} (prefix with - for descending)`
            : "Input should be a valid string",
        type: typeof rawSort === "string" ? "value_error" : "string_type",
      });
  }

  const filters: Record<string, number | string> = {};
  for (const [name, kind] of Object.entries<FilterKind>(spec.filters)) {
    const raw = pick(q[name]);
    if (raw === undefined) continue;
    const r = parseFilter(name, kind, raw);
    if (r.ok) filters[name] = r.value;
    else problems.push(r.problem);
  }

  if (problems.length > 0) return { ok: false, problems };
  return { ok: true, value: { offset, limit, sort, filters: filters as FilterValues<F> } };
}

/** An ILIKE pattern matching `text` anywhere, with LIKE's own wildcards in it taken literally. */
export function containsPattern(text: string): string {
  return `%${text.replace(/[\\%_]/g, "\\$&")}%`;
}
