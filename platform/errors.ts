/**
 * Error factories over Moleculer's errors: `code` is the HTTP status (number) and `type` the string error
 * code (ErrorCode below). Callers branch on `type`/`code`, never on `instanceof`: errors cross nodes as
 * plain objects.
 */
import { Errors } from "moleculer";
import type { ValidationProblem } from "../lib/validation-problem";

export type ErrorCode =
  | "UNAUTHORIZED"
  | "FORBIDDEN"
  | "NOT_FOUND"
  | "CONFLICT"
  | "BAD_REQUEST"
  | "VALIDATION_ERROR"
  | "UNSUPPORTED_MEDIA_TYPE"
  | "PAYLOAD_TOO_LARGE"
  | "TOO_MANY_REQUESTS"
  | "SERVICE_UNAVAILABLE";

const clientError = (status: number, code: ErrorCode, detail: string, data?: unknown) =>
  new Errors.MoleculerClientError(detail, status, code, data);

export const unauthorized = (detail = "Not authenticated") => clientError(401, "UNAUTHORIZED", detail);
export const forbidden = (detail = "Not allowed") => clientError(403, "FORBIDDEN", detail);
export const notFound = (what: string) => clientError(404, "NOT_FOUND", `${what} not found`);
export const conflict = (detail: string, data?: unknown) => clientError(409, "CONFLICT", detail, data);
export const badRequest = (detail: string) => clientError(400, "BAD_REQUEST", detail);
export const validationError = (problems: ValidationProblem[]) =>
  clientError(422, "VALIDATION_ERROR", "Validation failed", problems);
export const unsupportedMediaType = (detail = "Request body must be application/json") =>
  clientError(415, "UNSUPPORTED_MEDIA_TYPE", detail);
export const payloadTooLarge = (detail = "Request body too large") => clientError(413, "PAYLOAD_TOO_LARGE", detail);
export const tooManyRequests = (detail: string) => clientError(429, "TOO_MANY_REQUESTS", detail);
export const serviceUnavailable = (detail: string) =>
  new Errors.MoleculerRetryableError(detail, 503, "SERVICE_UNAVAILABLE");
