/**
 * What an action (or a gateway route) declares about its HTTP answers, next to its `params` and `access`:
 * the gateway's OpenAPI document (services/api-gateway/openapi.ts) is built from these declarations and the
 * params rules, and the response-conformance test holds every answer the tests receive to them.
 *
 * Only what the action itself decides is declared here; what any operation may answer (401/403 without
 * valid credentials, 404 for an object in the path, 422 for bad parameters, 400/413/415 for bodies, 429,
 * 503) the generator adds from the route's shape.
 */
import type { Schema } from "./schema";

export interface AnswerDoc {
  description: string;
  /** The JSON body; absent: the answer has no body (204, 302). */
  body?: Schema<unknown>;
  /** A `text/event-stream` answer: how its events look. */
  eventStream?: string;
  /** Response headers worth knowing, with what they carry. */
  headers?: Record<string, string>;
}

/** HTTP statuses an action answers on its own (successes, and the errors specific to it). */
export type SuccessStatus = 200 | 201 | 202 | 204 | 302;
export type ErrorStatus = 400 | 403 | 404 | 409 | 503;

export interface ActionDocs {
  /** One line, shown beside the path. */
  summary: string;
  description?: string;
  /** Every success answer, by status. */
  responses: Partial<Record<SuccessStatus, AnswerDoc>> & Partial<Record<ErrorStatus, AnswerDoc>>;
  /** Errors this action answers beyond the ones every operation may, with when. */
  errors?: Partial<Record<ErrorStatus, string>>;
  /** Only where the action name cannot give one (a gateway route without an action). */
  operationId?: string;
}
