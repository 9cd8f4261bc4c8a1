/**
 * A database that cannot be reached is an outage, not a bug: the action's error becomes a 503 (retryable,
 * `SERVICE_UNAVAILABLE`) where it is thrown, on the node that has the driver's error in hand (its SQLSTATE
 * does not survive the trip to the gateway), instead of a 500 at the gateway.
 */
import type { Context, Middleware } from "moleculer";
import { serviceUnavailable } from "./errors";

/** Sequelize's connection-level errors (node_modules/sequelize/lib/errors/connection/*): all mean "unreachable". */
const CONNECTION_ERRORS = new Set([
  "SequelizeConnectionError",
  "SequelizeConnectionRefusedError",
  "SequelizeConnectionTimedOutError",
  "SequelizeConnectionAcquireTimeoutError",
  "SequelizeHostNotFoundError",
  "SequelizeHostNotReachableError",
  "SequelizeInvalidConnectionError",
]);

/**
 * SQLSTATEs of a server going away or not there yet: class 08 (connection exception), 57P01 admin shutdown
 * (a restart ends every session), 57P02 crash shutdown, 57P03 cannot connect now (starting up / shutting down).
 */
const OUTAGE_SQLSTATE = /^(08...|57P0[123])$/;

/** node-postgres's own errors for a connection that died under a query (they carry no SQLSTATE). */
const DRIVER_CONNECTION_LOST = /^(Connection terminated|Client has encountered a connection error|Client was closed)/;

interface DriverError {
  name?: unknown;
  code?: unknown;
  message?: unknown;
  parent?: DriverError;
  original?: DriverError;
}

/** Pure: is this error (a Sequelize error, or the pg error it wraps) the database being unreachable? */
export function isDatabaseOutage(err: unknown): boolean {
  if (!err || typeof err !== "object") return false;
  const e = err as DriverError;
  if (typeof e.name === "string" && CONNECTION_ERRORS.has(e.name)) return true;
  const cause = e.parent ?? e.original;
  const code = cause?.code ?? e.code;
  if (typeof code === "string" && OUTAGE_SQLSTATE.test(code)) return true;
  // Socket codes only under a Sequelize error: elsewhere (an HTTP call) they are not the database's.
  if (cause?.code === "ECONNREFUSED" || cause?.code === "ECONNRESET") return true;
  const message = cause?.message ?? e.message;
  return typeof message === "string" && DRIVER_CONNECTION_LOST.test(message);
}

type Handler = (ctx: Context) => Promise<unknown>;

const DETAIL = "Database temporarily unavailable, try again";

export const DatabaseOutageMiddleware: Middleware = {
  name: "DatabaseOutage",
  localAction(next: Handler) {
    // One catch on the promise the action returns anyway: no extra work on a successful call.
    return (ctx: Context) =>
      next(ctx).catch((err: unknown) => {
        throw isDatabaseOutage(err) ? serviceUnavailable(DETAIL) : err;
      });
  },
};
