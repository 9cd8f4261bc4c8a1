/** The gateway's error mapping: outages are 503 with a Retry-After, client mistakes keep their status. */
import { OUTAGE_RETRY_AFTER_S, toHttpAnswer } from "../../services/api-gateway/http-errors";

const req = { method: "POST", pathParams: [] };

describe("toHttpAnswer", () => {
  it.each(["SERVICE_NOT_FOUND", "SERVICE_NOT_AVAILABLE", "REQUEST_TIMEOUT", "REQUEST_REJECTED", "BAD_GATEWAY"])(
    "moleculer's %s (a node or the transporter away) is a 503 with Retry-After",
    (type) => {
      expect(toHttpAnswer({ type, code: 404 }, req)).toEqual({
        status: 503,
        body: { detail: "Service temporarily unavailable, try again" },
        serverFault: true,
        retryAfterS: OUTAGE_RETRY_AFTER_S,
      });
    },
  );

  it("a service's own 503 (the database unreachable) keeps its detail and gets Retry-After", () => {
    const detail = "Database temporarily unavailable, try again";
    const answer = toHttpAnswer({ type: "SERVICE_UNAVAILABLE", code: 503, message: detail }, req);
    expect(answer).toMatchObject({ status: 503, body: { detail }, retryAfterS: OUTAGE_RETRY_AFTER_S });
  });

  it("client errors and bugs carry no Retry-After", () => {
    expect(toHttpAnswer({ type: "CONFLICT", code: 409, message: "busy" }, req).retryAfterS).toBeUndefined();
    expect(toHttpAnswer({ name: "TypeError", message: "x is undefined" }, req)).toEqual({
      status: 500,
      body: { detail: "Internal server error" },
      serverFault: true,
    });
  });
});
