/**
 * Pins encodeCeleryTask byte for byte against what Celery's own send_task put on
 * the wire (test/fixtures/celery/*.capture.json, made by capture_send_task.py),
 * and covers parseCeleryResult.
 */
import { readFileSync } from "fs";
import { join } from "path";
import {
  canonicalKwargs,
  celeryQueueDeclaration,
  celerySaferepr,
  celeryTaskFullName,
  encodeCeleryTask,
  EncodedCeleryTask,
  parseCeleryResult,
  pyFloatRepr,
  pyJsonDumps,
  resultKey,
} from "../../services/tasks/celery-protocol";

// amqplib's own encoder, so we compare the frame bytes amqplib will really send
// (it has no type declarations for these internals).
/* eslint-disable @typescript-eslint/no-require-imports -- untyped internals of amqplib, typed right here */
const apiArgs = require("amqplib/lib/api_args") as {
  publish(exchange: string, routingKey: string, options: object): Record<string, unknown>;
};
const defs = require("amqplib/lib/defs") as {
  BasicProperties: number;
  encodeProperties(id: number, channel: number, size: number, fields: Record<string, unknown>): Buffer;
};
/* eslint-enable @typescript-eslint/no-require-imports */

const FIXTURES = join(__dirname, "..", "fixtures", "celery");

type Typed = { type: string; value: unknown };
interface Capture {
  versions: Record<string, string>;
  input: { task: string; id: string; kwargs: Record<string, unknown>; queue: string };
  publish: { exchange: string; routing_key: string };
  properties: Record<string, unknown>;
  headers_typed: [string, Typed][];
  properties_b64: string;
  redelivered_identical: boolean;
  body_b64: string;
  declarations: { method: string; kwargs: Record<string, unknown> }[];
}

function loadCapture(file: string): Capture {
  return JSON.parse(readFileSync(join(FIXTURES, file), "utf8")) as Capture;
}

/** Property flags + property list exactly as amqplib would put them in the content header frame. */
function amqplibPropertyBytes(msg: EncodedCeleryTask): Buffer {
  const fields = apiArgs.publish(msg.exchange, msg.routingKey, msg.options);
  const frame = defs.encodeProperties(defs.BasicProperties, 1, msg.content.length, fields);
  // frame: type(1) channel(2) size(4) class(2) weight(2) body-size(8) | properties | frame-end(1)
  return frame.subarray(19, frame.length - 1);
}

/** Decodes the headers table keeping AMQP type tags (what py-amqp dispatches on). */
function decodeTypedHeaders(props: Buffer): [string, Typed][] {
  const flags = props.readUInt16BE(0);
  let off = 2;
  if (flags & 0x8000) off += 1 + props[off];
  if (flags & 0x4000) off += 1 + props[off];
  if (!(flags & 0x2000)) return [];
  const item = (): Typed => {
    const tag = String.fromCharCode(props[off]);
    off += 1;
    switch (tag) {
      case "S": {
        const n = props.readUInt32BE(off);
        off += 4;
        const value = props.toString("utf8", off, off + n);
        off += n;
        return { type: tag, value };
      }
      case "I":
        off += 4;
        return { type: tag, value: props.readInt32BE(off - 4) };
      case "b":
        off += 1;
        return { type: tag, value: props.readInt8(off - 1) };
      case "s":
        off += 2;
        return { type: tag, value: props.readInt16BE(off - 2) };
      case "t":
        off += 1;
        return { type: tag, value: props[off - 1] !== 0 };
      case "V":
        return { type: tag, value: null };
      case "A": {
        const end = off + 4 + props.readUInt32BE(off);
        off += 4;
        const value: Typed[] = [];
        while (off < end) value.push(item());
        return { type: tag, value };
      }
      case "F":
        return { type: tag, value: table() };
      default:
        throw new Error(`unexpected tag ${tag}`);
    }
  };
  const table = (): [string, Typed][] => {
    const end = off + 4 + props.readUInt32BE(off);
    off += 4;
    const out: [string, Typed][] = [];
    while (off < end) {
      const klen = props[off];
      const key = props.toString("utf8", off + 1, off + 1 + klen);
      off += 1 + klen;
      out.push([key, item()]);
    }
    return out;
  };
  return table();
}

describe.each([
  ["start_lab", "start_lab.capture.json"],
  ["stop_lab", "stop_lab.capture.json"],
])("encodeCeleryTask matches Celery's send_task capture: %s", (_name, file) => {
  const cap = loadCapture(file);
  const header = (name: string): unknown => cap.headers_typed.find(([k]) => k === name)?.[1].value;
  const msg = encodeCeleryTask({
    id: cap.input.id,
    task: cap.input.task,
    kwargs: cap.input.kwargs,
    queue: cap.input.queue,
    origin: header("origin") as string, // gen<pid>@<host> of the capturing process
    replyTo: cap.properties.reply_to as string, // that process's oid (see CeleryTaskInput.replyTo)
  });

  it("was captured from Celery 5 with protocol v2, unchanged by RabbitMQ", () => {
    expect(cap.versions.celery).toMatch(/^5\./);
    expect(cap.redelivered_identical).toBe(true);
  });

  it("publishes to the default exchange with the queue as routing key", () => {
    expect(msg.exchange).toBe(cap.publish.exchange);
    expect(msg.routingKey).toBe(cap.publish.routing_key);
  });

  it("has the body bytes Celery sends", () => {
    expect(msg.content.toString("utf8")).toBe(Buffer.from(cap.body_b64, "base64").toString("utf8"));
    expect(msg.content.equals(Buffer.from(cap.body_b64, "base64"))).toBe(true);
  });

  it("has the headers Celery sends, with the same AMQP type tags and order", () => {
    expect(decodeTypedHeaders(amqplibPropertyBytes(msg))).toEqual(cap.headers_typed);
  });

  it("has the same properties", () => {
    expect({
      content_type: msg.options.contentType,
      content_encoding: msg.options.contentEncoding,
      delivery_mode: msg.options.deliveryMode,
      priority: msg.options.priority,
      correlation_id: msg.options.correlationId,
      reply_to: msg.options.replyTo,
    }).toEqual(cap.properties);
  });

  it("encodes to the very content-header bytes py-amqp wrote", () => {
    expect(amqplibPropertyBytes(msg).toString("base64")).toBe(cap.properties_b64);
  });

  it("declares queue and exchange the way Celery did", () => {
    const d = celeryQueueDeclaration(cap.input.queue);
    const byMethod = (m: string): Record<string, unknown> | undefined =>
      cap.declarations.find((x) => x.method === m)?.kwargs;
    expect(cap.declarations.map((x) => x.method)).toEqual(["exchange_declare", "queue_declare", "queue_bind"]);
    expect(byMethod("exchange_declare")).toMatchObject({
      exchange: d.exchange.name,
      type: d.exchange.type,
      durable: d.exchange.options.durable,
      auto_delete: d.exchange.options.autoDelete,
      arguments: null,
    });
    expect(byMethod("queue_declare")).toMatchObject({
      queue: d.queue.name,
      durable: d.queue.options.durable,
      exclusive: d.queue.options.exclusive,
      auto_delete: d.queue.options.autoDelete,
      arguments: {},
    });
    expect(byMethod("queue_bind")).toMatchObject({
      queue: d.binding.queue,
      exchange: d.binding.exchange,
      routing_key: d.binding.routingKey,
    });
  });
});

describe("encodeCeleryTask details", () => {
  const base = {
    id: "11111111-2222-4333-8444-555555555555",
    task: celeryTaskFullName("celery_workers", "start_lab"),
    kwargs: { lab_instance_id: 1, lab_id: 2, student_id: 3 },
    queue: "celery",
    origin: "tasks-node-1",
  };

  it("writes the DESIGN's example kwargsrepr and typed integer header", () => {
    const msg = encodeCeleryTask(base);
    expect(msg.options.headers.kwargsrepr).toBe("{'lab_instance_id': 1, 'lab_id': 2, 'student_id': 3}");
    expect(msg.options.headers.retries).toEqual({ "!": "int", value: 0 });
    expect(msg.options.headers.task).toBe("celery_workers.start_lab");
    expect(msg.options.persistent).toBe(true);
    // no header may be undefined: amqplib would silently drop it
    for (const [k, v] of Object.entries(msg.options.headers)) expect([k, v]).not.toEqual([k, undefined]);
  });

  it("accepts canonicalKwargs' typed result directly and names the bad path in errors", () => {
    const kwargs = canonicalKwargs("stop_lab", { lab_instance_id: 5 });
    expect(encodeCeleryTask({ ...base, kwargs }).content.toString()).toContain('{"lab_instance_id": 5}');
    expect(() => encodeCeleryTask({ ...base, kwargs: { a: [1, undefined] } })).toThrow(/kwargs\.a\[1\]/);
  });

  it("omits reply_to unless given", () => {
    const msg = encodeCeleryTask(base);
    expect("replyTo" in msg.options).toBe(false);
    expect(decodeTypedHeaders(amqplibPropertyBytes(msg)).map(([k]) => k)).toContain("ignore_result");
  });

  it.each([
    ["undefined value", { a: undefined }],
    ["NaN", { a: Number.NaN }],
    ["Infinity", { a: Number.POSITIVE_INFINITY }],
    ["a Date", { a: new Date(0) }],
    ["a function", { a: () => 1 }],
  ])("rejects kwargs with %s", (_label, kwargs) => {
    expect(() => encodeCeleryTask({ ...base, kwargs })).toThrow(TypeError);
  });

  it("rejects circular kwargs", () => {
    const kwargs: Record<string, unknown> = {};
    kwargs.self = kwargs;
    expect(() => encodeCeleryTask({ ...base, kwargs })).toThrow(/circular/);
  });

  it("rejects an empty id or queue", () => {
    expect(() => encodeCeleryTask({ ...base, id: "" })).toThrow(/id/);
    expect(() => encodeCeleryTask({ ...base, queue: "" })).toThrow(/queue/);
  });
});

describe("canonicalKwargs", () => {
  it("reorders keys (jsonb does not keep order) and keeps exactly the task's keys", () => {
    const k = canonicalKwargs("start_lab", { student_id: 3, lab_id: 2, lab_instance_id: 1 });
    expect(Object.keys(k)).toEqual(["lab_instance_id", "lab_id", "student_id"]);
    expect(canonicalKwargs("cleanup_lab", { lab_instance_id: 9 })).toEqual({ lab_instance_id: 9 });
  });

  it.each([
    ["stop_lab", { lab_instance_id: 1, lab_id: 2 }, /unexpected/],
    ["start_lab", { lab_instance_id: 1, lab_id: 2 }, /student_id/],
    ["stop_lab", { lab_instance_id: "1" }, /positive integer/],
    ["stop_lab", { lab_instance_id: 1.5 }, /positive integer/],
    ["stop_lab", null, /object/],
  ] as const)("rejects %s %j", (name, kwargs, re) => {
    expect(() => canonicalKwargs(name, kwargs)).toThrow(re);
  });
});

describe("Python-compatible serialization (Celery saferepr, kombu json)", () => {
  const file = JSON.parse(readFileSync(join(FIXTURES, "serialization.cases.json"), "utf8")) as {
    cases: { kwargs_json: string; kwargsrepr: string; body: string }[];
  };

  it.each(file.cases.map((c, i) => [i, c] as const))("case %i matches Celery", (_i, c) => {
    const kwargs = JSON.parse(c.kwargs_json) as Record<string, unknown>;
    expect(celerySaferepr(kwargs, 1024)).toBe(c.kwargsrepr);
    expect(pyJsonDumps([[], kwargs, { callbacks: null, errbacks: null, chain: null, chord: null }])).toBe(c.body);
  });

  it.each([
    [0.1, "0.1"],
    [1e16, "1e+16"],
    [1e15 + 0.5, "1000000000000000.5"],
    [2 ** 53 + 2, "9007199254740994.0"],
    [-1.25e-10, "-1.25e-10"],
    [0.0001, "0.0001"],
  ])("pyFloatRepr(%p) = %s", (n, s) => {
    expect(pyFloatRepr(n)).toBe(s);
  });
});

describe("parseCeleryResult", () => {
  const id = "6f1c2a7e-3b5d-4c8e-9a0f-1d2e3f4a5b6c";

  it("reads a SUCCESS with the worker's dict", () => {
    const raw = JSON.stringify({
      status: "SUCCESS",
      result: { status: "running", k8s_pod_name: "lab-42", connection_url: "https://labs.example.test/i/42" },
      traceback: null,
      children: [],
      date_done: "2026-11-26T14:51:00.123456",
      task_id: id,
    });
    expect(parseCeleryResult(raw)).toEqual({
      taskId: id,
      status: "SUCCESS",
      result: { status: "running", k8s_pod_name: "lab-42", connection_url: "https://labs.example.test/i/42" },
    });
  });

  it("reads a FAILURE as '<exc_type>: <exc_message>'", () => {
    const raw = JSON.stringify({
      status: "FAILURE",
      result: { exc_type: "RuntimeError", exc_message: ["image pull failed"], exc_module: "builtins" },
      traceback: "Traceback (most recent call last):\n  ...\nRuntimeError: image pull failed\n",
      children: [],
      date_done: "2026-11-26T14:51:00.123456",
      task_id: id,
    });
    const r = parseCeleryResult(raw);
    expect(r.status).toBe("FAILURE");
    expect(r.error).toBe("RuntimeError: image pull failed");
    expect(r.traceback).toContain("Traceback");
  });

  it.each([
    [{ exc_type: "RuntimeError", exc_message: [] }, "RuntimeError"],
    [{ exc_type: "ValueError", exc_message: "plain string" }, "ValueError: plain string"],
    [{ exc_type: "KeyError", exc_message: ["a", 2] }, "KeyError: a, 2"],
    ["something odd", "UnknownError: something odd"],
    [null, "UnknownError: null"],
  ])("formats failure result %j as %s", (result, error) => {
    expect(parseCeleryResult(JSON.stringify({ status: "FAILURE", result, task_id: id })).error).toBe(error);
  });

  it("gives REVOKED an error too, and other states none", () => {
    const revoked = {
      status: "REVOKED",
      result: { exc_type: "TaskRevokedError", exc_message: ["revoked"] },
      task_id: id,
    };
    expect(parseCeleryResult(JSON.stringify(revoked)).error).toBe("TaskRevokedError: revoked");
    const started = parseCeleryResult(JSON.stringify({ status: "STARTED", result: { pid: 1 }, task_id: id }));
    expect(started).toEqual({ taskId: id, status: "STARTED", result: { pid: 1 } });
  });

  it.each([
    ["not JSON", "{status: SUCCESS", /not valid JSON/],
    ["empty", "", /not valid JSON/],
    ["an array", "[1,2]", /JSON object/],
    ["null", "null", /JSON object/],
    ["a number", "42", /JSON object/],
    ["no status", JSON.stringify({ result: 1, task_id: id }), /"status"/],
    ["a numeric status", JSON.stringify({ status: 1, result: 1, task_id: id }), /"status"/],
    ["no task_id", JSON.stringify({ status: "SUCCESS", result: 1 }), /"task_id"/],
    ["no result", JSON.stringify({ status: "SUCCESS", task_id: id }), /"result"/],
  ])("rejects %s with a clear Error", (_label, raw, re) => {
    expect(() => parseCeleryResult(raw)).toThrow(re);
  });

  it("rejects a non-string without crashing", () => {
    expect(() => parseCeleryResult(undefined as unknown as string)).toThrow(/expected a string/);
  });

  it("names the key and channel", () => {
    expect(resultKey(id)).toBe(`celery-task-meta-${id}`);
  });
});
