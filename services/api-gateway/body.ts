/**
 * Request bodies at the edge: the shape bounds checked on the raw JSON before it is parsed (deeply nested
 * input would overflow the recursive validator and serializer later: a 500), and body-parser's failures
 * mapped to client errors (moleculer-web would otherwise turn e.g. a zlib error, whose code is a string,
 * into a 500). Compressed bodies (gzip, deflate, br) are accepted: body-parser applies the size limit to
 * the inflated bytes, so a zip bomb is a 413 after `limit` bytes, never a full inflation.
 */
import type { IncomingMessage, ServerResponse } from "node:http";
import { badRequest, payloadTooLarge, unsupportedMediaType } from "../../platform/errors";

/** Far beyond any body of this API (its deepest is resources: 2 levels), far below a stack overflow. */
export const JSON_MAX_DEPTH = 32;
/** Object members in the whole body: the largest real body has a handful. Arrays are bounded by the size limit. */
export const JSON_MAX_KEYS = 1000;

const QUOTE = 0x22;
const BACKSLASH = 0x5c;
const COLON = 0x3a;
const OPEN = new Set([0x5b, 0x7b]);
const CLOSE = new Set([0x5d, 0x7d]);

/**
 * Why these JSON bytes are too complex to accept, or null. A linear scan without parsing: brackets and colons
 * inside strings do not count. UTF-8 is safe to scan bytewise (no multi-byte sequence contains an ASCII byte).
 * Malformed JSON is left to the parser.
 */
export function jsonShapeProblem(bytes: Uint8Array, maxDepth = JSON_MAX_DEPTH, maxKeys = JSON_MAX_KEYS): string | null {
  let depth = 0;
  let keys = 0;
  let inString = false;
  let escaped = false;
  for (const b of bytes) {
    if (inString) {
      if (escaped) escaped = false;
      else if (b === BACKSLASH) escaped = true;
      else if (b === QUOTE) inString = false;
    } else if (b === QUOTE) inString = true;
    else if (OPEN.has(b)) {
      if (++depth > maxDepth) return `JSON body nested deeper than ${maxDepth} levels`;
    } else if (CLOSE.has(b)) depth--;
    else if (b === COLON && ++keys > maxKeys) return `JSON body has more than ${maxKeys} keys`;
  }
  return null;
}

const TOO_COMPLEX = "json.too.complex";

/** body-parser's `verify` hook: runs on the raw (inflated) bytes before JSON.parse. */
export function verifyJsonShape(_req: IncomingMessage, _res: ServerResponse, buf: Buffer): void {
  const problem = jsonShapeProblem(buf);
  if (problem) throw Object.assign(new Error(problem), { type: TOO_COMPLEX });
}

interface BodyParserError {
  type?: unknown;
  status?: unknown;
  message?: string;
}

/** body-parser's error → the client error it is (a server fault stays as it is). */
export function bodyParserError(err: BodyParserError): Error | BodyParserError {
  switch (err.type) {
    case TOO_COMPLEX:
      return badRequest(err.message ?? "JSON body too complex");
    case "entity.parse.failed":
      return badRequest("Malformed JSON body");
    case "entity.too.large":
      return payloadTooLarge();
    case "encoding.unsupported":
      return unsupportedMediaType("Unsupported Content-Encoding: use gzip, deflate, br or none");
    case "charset.unsupported":
      return unsupportedMediaType("Unsupported charset: JSON bodies are UTF-8");
  }
  const status = typeof err.status === "number" ? err.status : 500;
  // Decompression errors (zlib's codes are strings) and aborted or short bodies.
  if (status >= 400 && status < 500) {
    return badRequest("Request body could not be read: it does not match its Content-Encoding or length");
  }
  return err;
}

/** An error middleware (4 arguments) after moleculer-web's body parsers. */
export function bodyParserErrors(
  err: BodyParserError,
  _req: IncomingMessage,
  _res: ServerResponse,
  next: (e?: unknown) => void,
): void {
  next(bodyParserError(err));
}
