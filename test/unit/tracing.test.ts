import { parseTraceparent, traceIdOf, traceparentOf } from "../../platform/tracing";

describe("W3C traceparent", () => {
  const header = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";

  it("reads version 00 with its sampled flag", () => {
    expect(parseTraceparent(header)).toEqual({
      traceId: "0af7651916cd43dd8448eb211c80319c",
      parentId: "b7ad6b7169203331",
      sampled: true,
    });
    expect(parseTraceparent(header.replace(/01$/, "00"))?.sampled).toBe(false);
    expect(parseTraceparent(` ${header.toUpperCase()} `)?.traceId).toBe("0af7651916cd43dd8448eb211c80319c");
  });

  it.each([
    ["absent", undefined],
    ["repeated", [header, header]],
    ["all-zero trace id", `00-${"0".repeat(32)}-b7ad6b7169203331-01`],
    ["all-zero parent id", `00-0af7651916cd43dd8448eb211c80319c-${"0".repeat(16)}-01`],
    ["short trace id", "00-0af7651916cd43dd-b7ad6b7169203331-01"],
    ["another version", "01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"],
    ["junk", "x".repeat(55)],
  ])("ignores a %s header (the request starts its own trace)", (_label, value) => {
    expect(parseTraceparent(value)).toBeNull();
  });

  it("writes the span a context runs in, with the request's 128-bit trace id", () => {
    const ctx = {
      requestID: "0af76519-16cd-43dd-8448-eb211c80319c",
      id: "x",
      tracing: true,
      span: { id: "b7ad6b71-6920-3331-8000-000000000000" },
    };
    expect(traceparentOf(ctx)).toBe(header);
    expect(traceparentOf({ ...ctx, tracing: false })).toBeNull();
    expect(traceparentOf({ ...ctx, span: null })).toBeNull();
    expect(traceIdOf("not-a-trace")).toBeUndefined();
  });
});
