/**
 * Moleculer param rules shared by every service (fastest-validator schemas; no framework import).
 * Problems are reported in pydantic's words and types, which the gateway passes through as FastAPI's 422.
 */
import { MAX_INT32 } from "./listing";

/** A problem as fastest-validator's custom checkers report it (`field` is filled in by the validator). */
interface CheckerProblem {
  type: string;
  message: string;
  actual?: unknown;
}
type Checker = (value: unknown, errors: CheckerProblem[], schema: Record<string, unknown>, path: string) => unknown;

const DECIMAL_ID = /^[1-9][0-9]{0,9}$/;

/**
 * A path id: decimal digits only, no sign, no blank, no leading zero, no `0x10`/`1e3` (Number() would accept
 * them all, so one row would have many URLs and `" 1"` would be an id). Internal callers pass numbers: a
 * JSON integer is accepted as is. Ids are PostgreSQL integers, so a larger number names no row and is refused
 * before SQL (where it would be an out-of-range error, a 500).
 */
const checkPathId: Checker = (value, errors) => {
  const problem = (type: string, message: string) => errors.push({ type, message, actual: value });
  let n: number;
  if (typeof value === "number") n = value;
  else if (typeof value === "string" && DECIMAL_ID.test(value)) n = Number(value);
  else {
    problem("int_parsing", "Input should be a valid integer (decimal digits, no sign or leading zero)");
    return value;
  }
  if (!Number.isInteger(n)) problem("int_type", "Input should be a valid integer");
  else if (n < 1) problem("greater_than_equal", "Input should be greater than or equal to 1");
  else if (n > MAX_INT32) problem("less_than_equal", `Input should be less than or equal to ${MAX_INT32}`);
  return n;
};

/** A row id from the path (or from an internal caller): see checkPathId. `integer`/`min`/`max` document it. */
export const ID_PARAM = { type: "custom", check: checkPathId, integer: true, min: 1, max: MAX_INT32 } as const;

/** A row id in a JSON body: a JSON integer; `true`, `[7]`, `"7"` or `7.5` are not converted into ids. */
export const BODY_ID_PARAM = { type: "number", integer: true, positive: true, max: MAX_INT32 } as const;

/* ───────────────────────────── null in optional fields ───────────────────────────── */

/**
 * fastest-validator lets `null` through every optional rule. A field whose column is NOT NULL must refuse it
 * (422 naming the field) instead of failing in the database; a field whose column may be NULL says so with
 * `nullable: true` and then null clears it.
 */
const refuseNull: Checker = (value, errors, schema) => {
  if (value === null && schema.optional === true && schema.nullable !== true) {
    const message = "Input should not be null: the field cannot be cleared";
    errors.push({ type: "null_not_allowed", message, actual: null });
  }
  return value;
};

/** An optional field that may be absent but never null. */
export function optionalNotNull<R extends Record<string, unknown>>(rule: R) {
  // A rule with its own checker (nameParam, multilineTextParam) refuses null there already.
  return { custom: refuseNull, ...rule, optional: true } as const;
}

/* ───────────────────────────── text ───────────────────────────── */

/* eslint-disable no-control-regex */
/** C0 controls, DEL and C1 controls: never part of a name. */
const CONTROL_CHARS = /[\u0000-\u001f\u007f-\u009f]/;
/** The same, minus the line breaks and tabs a multi-line text legitimately holds. */
const CONTROL_CHARS_BUT_LINES = /[\u0000-\u0008\u000b\u000c\u000e-\u001f\u007f-\u009f]/;
/* eslint-enable no-control-regex */

/**
 * Why `text` cannot be stored as given, or null. Names are one line: no control character at all. Multi-line
 * texts (descriptions, messages, reasons) keep \n, \r and \t and refuse every other control character (a NUL
 * cannot be stored faithfully in PostgreSQL text, and the rest only hides content from a reviewer).
 */
export function controlCharProblem(text: string, multiline: boolean): string | null {
  const re = multiline ? CONTROL_CHARS_BUT_LINES : CONTROL_CHARS;
  if (!re.test(text)) return null;
  return multiline
    ? "String should not contain control characters other than line breaks and tabs"
    : "String should not contain control characters";
}

const checkText =
  (multiline: boolean): Checker =>
  (value, errors, schema, path) => {
    refuseNull(value, errors, schema, path);
    if (typeof value === "string") {
      const problem = controlCharProblem(value, multiline);
      if (problem) errors.push({ type: "string_pattern_mismatch", message: problem, actual: value });
    }
    return value;
  };

/** A one-line name: trimmed, 1..max characters, no control character. */
export function nameParam(max: number) {
  return { type: "string", trim: true, min: 1, max, custom: checkText(false) } as const;
}

/** A multi-line text: trimmed, at most `max` characters, line breaks and tabs allowed, other controls refused. */
export function multilineTextParam(max: number) {
  return { type: "string", trim: true, max, custom: checkText(true) } as const;
}

/** Params of an action about one object (`GET /things/{id}`): ID_PARAM checked it. */
export interface IdParams {
  id: number;
}
