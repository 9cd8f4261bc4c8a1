/** Moleculer param rules shared by every service (plain data: no framework import). */
import { MAX_INT32 } from "./listing";

/**
 * A row id from the path or query: ids are PostgreSQL integers, so a larger number names no row and must
 * be refused (422) before it reaches SQL (where it would be an out-of-range error, a 500).
 */
export const ID_PARAM = { type: "number", integer: true, positive: true, max: MAX_INT32, convert: true } as const;

/** A row id in a JSON body: a real number; `true` or `[7]` are not converted into ids. */
export const BODY_ID_PARAM = { type: "number", integer: true, positive: true, max: MAX_INT32 } as const;
