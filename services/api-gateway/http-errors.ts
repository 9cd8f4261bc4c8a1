/**
 * Maps any error that reaches the gateway to the HTTP answer the API promises: `{"detail": ...}`, FastAPI's
 * 422 shape for validation, never a stack trace, never a 500 for a client's mistake.
 * Pure: errors arrive from other nodes as plain objects, so only `code`, `type`, `status` and `data` are read.
 */
import type { ValidationProblem } from "../../lib/validation-problem";

export interface ErrorLike {
  name?: string;
  message?: string;
  code?: unknown;
  type?: unknown;
  status?: unknown;
  data?: unknown;
}

export interface HttpAnswer {
  status: number;
  body: { detail: string | ValidationProblem[] };
  /** A server-side failure the operator must see in the log. */
  serverFault: boolean;
  /** Retry-After (s): set on 503s, the outages a client should wait out and retry. */
  retryAfterS?: number;
}

/** Our outages (a node restarting, a broker or database restart) last seconds: retry soon, not at once. */
export const OUTAGE_RETRY_AFTER_S = 5;

/** Where a field came from, so `loc` reads like FastAPI's ("path", "query" or "body"). */
export interface RequestShape {
  method: string;
  pathParams: readonly string[];
}

interface FastestValidatorProblem {
  type?: string;
  field?: string;
  message?: string;
}

const FV_TYPE_MAP: Partial<Record<string, string>> = {
  required: "missing",
  string: "string_type",
  stringEmpty: "string_too_short",
  stringMin: "string_too_short",
  stringMax: "string_too_long",
  number: "int_parsing",
  numberInteger: "int_type",
  numberPositive: "greater_than",
  numberMin: "greater_than_equal",
  numberMax: "less_than_equal",
  boolean: "bool_type",
  array: "list_type",
  arrayMin: "too_short",
  arrayMax: "too_long",
  arrayUnique: "value_error",
  object: "dict_type",
  objectStrict: "extra_forbidden",
  enumValue: "enum",
};

function locOf(field: string | undefined, req: RequestShape): (string | number)[] {
  // The capture group is undefined in the pieces where the dot matched.
  const pieces = (field ?? "").split(/\.|\[(\d+)\]/) as (string | undefined)[];
  const parts = pieces.filter((p): p is string => p !== undefined && p !== "");
  const path = parts.map((p) => (/^\d+$/.test(p) ? Number(p) : p));
  const first = String(path[0] ?? "");
  const where = req.pathParams.includes(first)
    ? "path"
    : req.method === "GET" || req.method === "DELETE"
      ? "query"
      : "body";
  return [where, ...path];
}

function fromFastestValidator(data: unknown, req: RequestShape): ValidationProblem[] {
  const list = Array.isArray(data) ? (data as FastestValidatorProblem[]) : [];
  return list.map((p) => ({
    loc: locOf(p.field, req),
    msg: (p.message ?? "Invalid value").replace(/^The '([^']+)' field/, "Field '$1'"),
    type: FV_TYPE_MAP[p.type ?? ""] ?? p.type ?? "value_error",
  }));
}

function isProblemList(data: unknown): data is ValidationProblem[] {
  return (
    Array.isArray(data) && data.every((d) => d && typeof d === "object" && Array.isArray((d as ValidationProblem).loc))
  );
}

const DETAIL_BY_STATUS: Record<number, string> = {
  400: "Bad request",
  401: "Not authenticated",
  403: "Not allowed",
  404: "Not Found",
  405: "Method not allowed",
  409: "Conflict",
  413: "Request body too large",
  415: "Request body must be application/json",
  429: "Too many requests",
  503: "Service unavailable",
};

const MOLECULER_OUTAGES = new Set([
  "SERVICE_NOT_FOUND",
  "SERVICE_NOT_AVAILABLE",
  "REQUEST_TIMEOUT",
  "REQUEST_REJECTED",
  "BAD_GATEWAY",
]);

export function toHttpAnswer(err: ErrorLike, req: RequestShape): HttpAnswer {
  const code = typeof err.code === "number" ? err.code : typeof err.status === "number" ? err.status : 500;
  const type = typeof err.type === "string" ? err.type : "";

  if (code === 422 || type === "VALIDATION_ERROR") {
    const detail = isProblemList(err.data) ? err.data : fromFastestValidator(err.data, req);
    return { status: 422, body: { detail }, serverFault: false };
  }
  // moleculer's own: a missing service or node, or this node's transporter away (BAD_GATEWAY: RabbitMQ is
  // restarting), is an outage, not a client error.
  if (MOLECULER_OUTAGES.has(type)) {
    const detail = "Service temporarily unavailable, try again";
    return { status: 503, body: { detail }, serverFault: true, retryAfterS: OUTAGE_RETRY_AFTER_S };
  }
  if (code >= 400 && code < 500) {
    const message = err.message && err.message.length <= 500 ? err.message : (DETAIL_BY_STATUS[code] ?? "Bad request");
    return { status: code, body: { detail: message }, serverFault: false };
  }
  if (code === 503 || type === "SERVICE_UNAVAILABLE") {
    const detail = err.message || DETAIL_BY_STATUS[503];
    return { status: 503, body: { detail }, serverFault: true, retryAfterS: OUTAGE_RETRY_AFTER_S };
  }
  return { status: 500, body: { detail: "Internal server error" }, serverFault: true };
}
