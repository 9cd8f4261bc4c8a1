import { answerBytes, rememberAnswerBytes } from "../../platform/answer-bytes";

describe("answer bytes", () => {
  const page = { items: [{ id: 1 }], total: 1 };
  const json = Buffer.from(JSON.stringify(page));
  rememberAnswerBytes(page, json, "courses.list:Abc123");

  it("are the cache's bytes for the action whose cache key they were stored under", () => {
    expect(answerBytes(page, "courses.list")).toBe(json);
  });

  it("are not used for another action's answer (it may have changed the object it got from a cached call)", () => {
    expect(answerBytes(page, "courses.catalog")).toBeUndefined();
    expect(answerBytes(page, undefined)).toBeUndefined();
    expect(answerBytes({ ...page }, "courses.list")).toBeUndefined();
  });

  it("a key without params is the bare action name; non-objects are never remembered", () => {
    const whole = { ok: true };
    rememberAnswerBytes(whole, Buffer.from('{"ok":true}'), "api-gateway.health");
    expect(answerBytes(whole, "api-gateway.health")?.toString()).toBe('{"ok":true}');
    rememberAnswerBytes("text", Buffer.from('"text"'), "x.y:1");
    expect(answerBytes("text", "x.y")).toBeUndefined();
  });
});
