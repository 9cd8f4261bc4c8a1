/**
 * The lab-instance event-stream hub (services/api-gateway/sse.ts) with a fake request and response:
 * routing of broadcasts, ordering by lifecycle rank, keep-alives, cleanup on disconnect and on stop.
 * The HTTP behaviour end to end is in test/integration/lab-instances.test.ts.
 */
import { EventEmitter } from "node:events";
import { IncomingMessage, type ServerResponse } from "node:http";
import { Socket } from "node:net";
import {
  LabInstanceStreams,
  formatEvent,
  isEventStreamRequest,
  lastEventRank,
  withEventStreamCallOptions,
  type StreamedInstance,
} from "../../services/api-gateway/sse";

class FakeResponse extends EventEmitter {
  status = 0;
  headers: Record<string, string> = {};
  chunks: string[] = [];
  headersSent = false;
  writableEnded = false;
  writeHead(status: number, headers: Record<string, string> = {}) {
    this.status = status;
    this.headers = headers;
    this.headersSent = true;
    return this;
  }
  write(chunk: string) {
    this.chunks.push(chunk);
    return true;
  }
  end() {
    if (this.writableEnded) return this;
    this.writableEnded = true;
    this.emit("close");
    return this;
  }
  /** The client goes away. */
  disconnect() {
    this.emit("close");
  }
  text() {
    return this.chunks.join("");
  }
  ids() {
    return [...this.text().matchAll(/^id: (\d+)$/gm)].map((m) => Number(m[1]));
  }
}

function request(
  id: number | string,
  current: StreamedInstance | Error,
  headers: Record<string, string> = {},
  delayMs = 0,
) {
  const req = new EventEmitter() as unknown as IncomingMessage & Record<string, unknown>;
  Object.assign(req, {
    method: "GET",
    url: `/api/v1/lab-instances/${id}/events`,
    headers,
    socket: { setNoDelay: () => undefined, setTimeout: () => undefined },
    $params: { id: String(id) },
    $ctx: {
      requestID: "rid-1",
      call: async () => {
        if (delayMs) await new Promise((r) => setTimeout(r, delayMs));
        if (current instanceof Error) throw current;
        return current;
      },
    },
  });
  return req;
}

const inst = (id: number, status: StreamedInstance["status"]): StreamedInstance => ({ id, status });
const tick = (ms = 5) => new Promise((r) => setTimeout(r, ms));

describe("LabInstanceStreams", () => {
  it("sends the current state, then only newer changes of its own instance, and closes after a final one", async () => {
    const hub = new LabInstanceStreams();
    const res = new FakeResponse();
    hub.handler(request(7, inst(7, "pending")), res as unknown as ServerResponse, () => undefined);
    await tick();
    expect(res.status).toBe(200);
    expect(res.headers["Content-Type"]).toBe("text/event-stream; charset=utf-8");
    expect(res.headers["X-Request-Id"]).toBe("rid-1");
    expect(hub.openStreams).toBe(1);
    hub.publish(inst(8, "running")); // another instance
    hub.publish(inst(7, "running"));
    hub.publish(inst(7, "pending")); // overtaken broadcast
    hub.publish(inst(7, "running")); // duplicate
    hub.publish(inst(7, "stopping"));
    hub.publish(inst(7, "stopped"));
    expect(res.ids()).toEqual([1, 2, 3, 4]);
    expect(res.writableEnded).toBe(true);
    expect(hub.openStreams).toBe(0);
    expect(res.text().startsWith("retry: 3000\n\n")).toBe(true);
  });

  it("buffers changes that arrive while the current state is being read", async () => {
    const hub = new LabInstanceStreams();
    const res = new FakeResponse();
    hub.handler(request(3, inst(3, "pending"), {}, 20), res as unknown as ServerResponse, () => undefined);
    await tick(1);
    hub.publish(inst(3, "running"));
    await tick(40);
    expect(res.ids()).toEqual([1, 2]);
  });

  it("resumes after Last-Event-ID and answers 204 when the final state was seen", async () => {
    const hub = new LabInstanceStreams();
    const res = new FakeResponse();
    hub.handler(
      request(5, inst(5, "running"), { "last-event-id": "2" }),
      res as unknown as ServerResponse,
      () => undefined,
    );
    await tick();
    expect(res.ids()).toEqual([]);
    hub.publish(inst(5, "stopping"));
    expect(res.ids()).toEqual([3]);

    const done = new FakeResponse();
    hub.handler(
      request(5, inst(5, "failed"), { "last-event-id": "4" }),
      done as unknown as ServerResponse,
      () => undefined,
    );
    await tick();
    expect(done.status).toBe(204);
    expect(done.writableEnded).toBe(true);
  });

  it("hands errors before the stream to moleculer-web and keeps no subscription", async () => {
    const hub = new LabInstanceStreams();
    const res = new FakeResponse();
    const errors: unknown[] = [];
    hub.handler(
      request(9, Object.assign(new Error("Lab instance not found"), { code: 404 })),
      res as unknown as ServerResponse,
      (e) => errors.push(e),
    );
    await tick();
    expect(errors).toHaveLength(1);
    expect(res.headersSent).toBe(false);
    expect(hub.openStreams).toBe(0);
  });

  it("sends keep-alive comments and forgets a client that disconnected", async () => {
    const hub = new LabInstanceStreams({ keepAliveMs: 10 });
    const res = new FakeResponse();
    hub.handler(request(4, inst(4, "running")), res as unknown as ServerResponse, () => undefined);
    await tick(45);
    expect(res.text().match(/^: keep-alive$/gm)?.length ?? 0).toBeGreaterThanOrEqual(2);
    res.disconnect();
    expect(hub.openStreams).toBe(0);
    const before = res.chunks.length;
    await tick(30);
    hub.publish(inst(4, "stopping"));
    expect(res.chunks.length).toBe(before);
  });

  it("a client that leaves during the access lookup leaves no subscription, no timer, and gets nothing written", async () => {
    jest.useFakeTimers();
    try {
      const hub = new LabInstanceStreams({ keepAliveMs: 10 });
      const res = new FakeResponse();
      // The lookup answers when the test says so.
      let answer: (i: StreamedInstance) => void = () => undefined;
      const req = request(8, inst(8, "pending"));
      (req.$ctx as { call: () => Promise<StreamedInstance> }).call = () => new Promise((r) => (answer = r));
      const passedOn: unknown[] = [];
      hub.handler(req, res as unknown as ServerResponse, (e) => passedOn.push(e));
      expect(hub.openStreams).toBe(1);
      res.disconnect();
      expect(hub.openStreams).toBe(0);

      answer(inst(8, "pending"));
      await jest.advanceTimersByTimeAsync(100);
      hub.publish(inst(8, "running"));
      await jest.advanceTimersByTimeAsync(100);
      expect(hub.openStreams).toBe(0);
      expect(jest.getTimerCount()).toBe(0);
      expect(res.headersSent).toBe(false);
      expect(res.chunks).toEqual([]);
      expect(passedOn).toEqual([]);
    } finally {
      jest.useRealTimers();
    }
  });

  it("a stop during the access lookup answers 503 (before any stream) and keeps nothing", async () => {
    const hub = new LabInstanceStreams();
    const res = new FakeResponse();
    const errors: { code?: number }[] = [];
    hub.handler(request(6, inst(6, "running"), {}, 20), res as unknown as ServerResponse, (e) =>
      errors.push(e as { code?: number }),
    );
    await tick(1);
    hub.closeAll();
    await tick(40);
    expect(errors).toMatchObject([{ code: 503 }]);
    expect(res.headersSent).toBe(false);
    expect(hub.openStreams).toBe(0);
  });

  it("closeAll ends every stream (the gateway is stopping)", async () => {
    const hub = new LabInstanceStreams();
    const a = new FakeResponse();
    const b = new FakeResponse();
    hub.handler(request(1, inst(1, "pending")), a as unknown as ServerResponse, () => undefined);
    hub.handler(request(2, inst(2, "running")), b as unknown as ServerResponse, () => undefined);
    await tick();
    expect(hub.openStreams).toBe(2);
    hub.closeAll();
    expect(a.writableEnded && b.writableEnded).toBe(true);
    expect(hub.openStreams).toBe(0);
  });
});

/** A real (unconnected) request with just a method and URL. */
function incoming(method: string, url: string): IncomingMessage {
  return Object.assign(new IncomingMessage(new Socket()), { method, url });
}

describe("helpers", () => {
  it("recognises the stream route only", () => {
    const r = (method: string, url: string) => incoming(method, url);
    expect(isEventStreamRequest(r("GET", "/api/v1/lab-instances/12/events"))).toBe(true);
    expect(isEventStreamRequest(r("GET", "/api/v1/lab-instances/12/events?x=1"))).toBe(true);
    expect(isEventStreamRequest(r("POST", "/api/v1/lab-instances/12/events"))).toBe(false);
    expect(isEventStreamRequest(r("GET", "/api/v1/lab-instances/12"))).toBe(false);
    expect(isEventStreamRequest(r("GET", "/api/v1/lab-instances/12/events/more"))).toBe(false);
  });

  it("marks only stream requests as untracked and without timeout", () => {
    const wrap = withEventStreamCallOptions((o: { requestID?: string; timeout?: number; tracking?: boolean }) => {
      o.requestID = "r";
    });
    const stream: { requestID?: string; timeout?: number; tracking?: boolean } = {};
    wrap(stream, incoming("GET", "/api/v1/lab-instances/1/events"));
    expect(stream).toEqual({ requestID: "r", timeout: 0, tracking: false });
    const plain: { requestID?: string; timeout?: number; tracking?: boolean } = {};
    wrap(plain, incoming("GET", "/api/v1/lab-instances/1"));
    expect(plain).toEqual({ requestID: "r" });
  });

  it("reads Last-Event-ID leniently", () => {
    expect(lastEventRank(undefined)).toBe(0);
    expect(lastEventRank("3")).toBe(3);
    expect(lastEventRank(" 2 ")).toBe(2);
    expect(lastEventRank("abc")).toBe(0);
    expect(lastEventRank("0")).toBe(0);
    expect(lastEventRank(["1", "2"])).toBe(2);
  });

  it("formats one event per status", () => {
    expect(formatEvent({ id: 1, status: "running" })).toBe(
      'id: 2\nevent: status\ndata: {"id":1,"status":"running"}\n\n',
    );
  });
});
