import {
  briefError,
  clip,
  formatCacheStats,
  formatOutbox,
  formatRelay,
  formatTable,
  humanAge,
  maskEnv,
  outboxState,
} from "../../main/repl-format";
import type { OutboxEntry, TasksHealth } from "../../services/tasks/tasks.contract";
import { notFound } from "../../platform/errors";
import { Errors } from "moleculer";

const NOW = new Date("2026-12-02T07:00:00Z");

function row(over: Partial<OutboxEntry>): OutboxEntry {
  return {
    id: "0b6c3f0e-8d3e-4b8e-9a51-2d8f6b1c0a11",
    task_name: "start_lab",
    lab_instance_id: 7,
    created_at: new Date("2026-12-02T06:58:00Z"),
    age_s: 120,
    attempts: 0,
    next_attempt_at: new Date("2026-12-02T06:58:00Z"),
    last_error: null,
    published_at: null,
    result_status: null,
    result_error: null,
    result_attempts: 0,
    ...over,
  };
}

describe("operator REPL formatting", () => {
  it("aligns columns and leaves no trailing blanks", () => {
    expect(
      formatTable(
        ["id", "name"],
        [
          ["1", "a"],
          ["1234", "bb"],
        ],
      ),
    ).toBe("id    name\n----  ----\n1     a\n1234  bb");
  });

  it("says ages the way an operator reads them", () => {
    expect([humanAge(0), humanAge(42), humanAge(125), humanAge(7384), humanAge(200_000), humanAge(-3)]).toEqual([
      "0s",
      "42s",
      "2m05s",
      "2h03m",
      "2d07h",
      "0s",
    ]);
  });

  it("clips multi-line errors to one line", () => {
    expect(clip("Traceback:\n  File x\n  boom", 20)).toBe("Traceback: File x b…");
    expect(clip(null)).toBe("");
  });

  it("tells unsent, backing-off, awaiting and done rows apart", () => {
    expect(outboxState(row({}), NOW)).toBe("unsent, due");
    expect(outboxState(row({ next_attempt_at: new Date("2026-12-02T07:00:30Z"), attempts: 3 }), NOW)).toBe(
      "unsent, retry in 30s",
    );
    expect(outboxState(row({ published_at: NOW }), NOW)).toBe("sent, awaiting result");
    expect(outboxState(row({ published_at: NOW, result_status: "SUCCESS" }), NOW)).toBe("done: SUCCESS");
  });

  it("prints the outbox with age, attempts and the last error", () => {
    const text = formatOutbox(
      [row({ attempts: 4, last_error: "connect ECONNREFUSED 127.0.0.1:5672", age_s: 3600 })],
      NOW,
    );
    expect(text.split("\n")[2]).toMatch(
      /^0b6c3f0e-8d3e-4b8e-9a51-2d8f6b1c0a11\s+start_lab\s+7\s+1h00m\s+4\s+unsent, due\s+connect ECONNREFUSED 127\.0\.0\.1:5672$/,
    );
    expect(formatOutbox([], NOW)).toBe("outbox: no rows");
  });

  it("masks secrets by name and passwords inside URLs", () => {
    const masked = maskEnv({
      DATABASE_URL: "postgres://autolabs:s3cret@db:5432/autolabs",
      TRANSPORTER: "amqp://guest:guest@mq1:5672;amqp://guest:guest@mq2:5672",
      OIDC_CLIENT_SECRET: "abc",
      COOKIE_KEYS: "k1,k2",
      SESSION_TOKEN: "t",
      REDIS_URL: "redis://redis:6379/1",
      PORT: "8000",
      EMPTY_SECRET: "",
    });
    expect(masked).toEqual({
      DATABASE_URL: "postgres://autolabs:***@db:5432/autolabs",
      TRANSPORTER: "amqp://guest:***@mq1:5672;amqp://guest:***@mq2:5672",
      OIDC_CLIENT_SECRET: "***",
      COOKIE_KEYS: "***",
      SESSION_TOKEN: "***",
      REDIS_URL: "redis://redis:6379/1",
      PORT: "8000",
      EMPTY_SECRET: "",
    });
    expect(JSON.stringify(masked)).not.toMatch(/s3cret|guest@|abc/);
  });

  it("sums cache counters per node and scope", () => {
    const text = formatCacheStats([
      {
        node: "domain-1",
        metrics: [
          { name: "autolabs.cache.hits.total", values: [{ labels: { scope: "courses" }, value: 3 }] },
          { name: "autolabs.cache.misses.total", values: [{ labels: { scope: "courses" }, value: 1 }] },
          { name: "moleculer.cacher.get.total", values: [{ labels: {}, value: 99 }] },
        ],
      },
    ]);
    expect(text.split("\n")[2]).toMatch(/^domain-1\s+courses\s+3\s+1\s+75%\s+0$/);
    expect(formatCacheStats([{ node: "n", metrics: [] }])).toMatch(/no cache counters/);
  });

  it("shows each relay's broker, confirms and backlog, and a node that did not answer", () => {
    const health: TasksHealth = {
      broker: "connected",
      broker_error: null,
      result_backend: "connected",
      relay: { published: 12, failed: 1 },
      outbox: { unpublished: 2, oldest_unpublished_s: 75, awaiting_result: 3 },
    };
    const lines = formatRelay([
      { node: "domain-1", health },
      { node: "domain-2", health: { error: "RequestTimeoutError: timed out" } },
    ]).split("\n");
    expect(lines[2]).toMatch(/^domain-1\s+connected\s+12\s+1\s+2\s+1m15s\s+3\s+connected$/);
    expect(lines[3]).toMatch(/^domain-2\s+\?\s+RequestTimeoutError: timed out$/);
  });

  it("turns an error into one line, with validation details", () => {
    expect(briefError(notFound("User"))).toMatch(/^\w+ \(404\): User not found$/);
    const v = new Errors.ValidationError("Parameters validation error!", "VALIDATION_ERROR", [
      { type: "uuid", field: "id", message: "The 'id' field must be a valid UUID." },
    ]);
    expect(briefError(v)).toBe(
      "ValidationError (422): Parameters validation error!: The 'id' field must be a valid UUID.",
    );
    expect(briefError(v)).not.toMatch(/\n/);
  });
});
