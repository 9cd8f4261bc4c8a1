/** Which errors mean "the database is unreachable" (→ 503) and which are bugs or client errors (unchanged). */
import {
  ConnectionAcquireTimeoutError,
  ConnectionError,
  ConnectionRefusedError,
  DatabaseError,
  UniqueConstraintError,
} from "sequelize";
import { isDatabaseOutage } from "../../platform/database-outage";

const pgError = (message: string, code?: string) => Object.assign(new Error(message), code ? { code } : {});

describe("isDatabaseOutage", () => {
  it.each([
    ["connection refused", new ConnectionRefusedError(pgError("connect ECONNREFUSED 127.0.0.1:5", "ECONNREFUSED"))],
    ["pool acquire timeout", new ConnectionAcquireTimeoutError(new Error("Operation timeout"))],
    ["server starting up (57P03)", new ConnectionError(pgError("the database system is starting up", "57P03"))],
    ["session ended by a restart (57P01)", new DatabaseError(pgError("terminating connection", "57P01") as never)],
    ["connection lost mid-query", new DatabaseError(pgError("Connection terminated unexpectedly") as never)],
    ["connection exception class 08", new DatabaseError(pgError("connection failure", "08006") as never)],
    ["a raw pg error (advisory lock connection)", pgError("terminating connection", "57P01")],
  ])("%s is an outage", (_what, err) => {
    expect(isDatabaseOutage(err)).toBe(true);
  });

  it.each([
    ["a syntax error (a bug)", new DatabaseError(pgError('syntax error at or near "SELEC"', "42601") as never)],
    ["a unique violation", new UniqueConstraintError({ message: "duplicate key" })],
    ["an HTTP client's reset (not the database)", pgError("read ECONNRESET", "ECONNRESET")],
    ["a plain error", new Error("boom")],
    ["not an error", "Connection terminated"],
    ["nothing", undefined],
  ])("%s is not", (_what, err) => {
    expect(isDatabaseOutage(err)).toBe(false);
  });
});
