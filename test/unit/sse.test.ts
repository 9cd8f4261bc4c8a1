/**
 * The lab-instance event-stream hub (services/api-gateway/sse.ts) with a fake request and response:
 * routing of broadcasts, ordering by lifecycle rank, keep-alives, cleanup on disconnect and on stop.
 * The HTTP behaviour end to end is in test/integration/lab-instances.test.ts.
 */
import { EventEmitter } from "node:events";
import { IncomingMessage, type ServerResponse } from "node:http";
import { Socket } from "node:net";
import { manualClock } from "../support/manual-clock";
import { waitFor } from "../support/wait-for";
import {
  LabInstanceStreams,
  formatEvent,
  isEventStreamRequest,
  lastEventRank,
  lastUserEvent,
  userEventId,
  withEventStreamCallOptions,
  type StatusChange,
  type StreamedInstance,
} from "../../services/api-gateway/sse";
import type { Principal } from "../../lib/principal";

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
  /** The access lookup answers once this settles (a client or a shutdown can act meanwhile). */
  lookupGate?: Promise<void>,
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
        if (lookupGate) await lookupGate;
        if (current instanceof Error) throw current;
        return current;
      },
    },
  });
  return req;
}

const inst = (id: number, status: StreamedInstance["status"]): StreamedInstance => ({ id, status });
/** Waits for what the stream does after its (asynchronous) access lookup. */
const until = (what: string, condition: () => boolean) => waitFor(what, () => Promise.resolve(condition()), 5_000, 1);
function gate(): { promise: Promise<void>; open(): void } {
  let open: () => void = () => undefined;
  const promise = new Promise<void>((r) => (open = r));
  return { promise, open };
}

describe("LabInstanceStreams", () => {
  it("sends the current state, then only newer changes of its own instance, and closes after a final one", async () => {
    const hub = new LabInstanceStreams();
    const res = new FakeResponse();
    hub.handler(request(7, inst(7, "pending")), res as unknown as ServerResponse, () => undefined);
    await until("the stream's head", () => res.headersSent);
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
    const lookup = gate();
    hub.handler(request(3, inst(3, "pending"), {}, lookup.promise), res as unknown as ServerResponse, () => undefined);
    hub.publish(inst(3, "running"));
    lookup.open();
    await until("two events", () => res.ids().length >= 2);
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
    await until("the stream's head", () => res.headersSent);
    expect(res.ids()).toEqual([]);
    hub.publish(inst(5, "stopping"));
    expect(res.ids()).toEqual([3]);

    const done = new FakeResponse();
    hub.handler(
      request(5, inst(5, "failed"), { "last-event-id": "4" }),
      done as unknown as ServerResponse,
      () => undefined,
    );
    await until("the answer", () => done.writableEnded);
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
    await until("the error", () => errors.length > 0);
    expect(errors).toHaveLength(1);
    expect(res.headersSent).toBe(false);
    expect(hub.openStreams).toBe(0);
  });

  it("sends keep-alive comments and forgets a client that disconnected", async () => {
    const clock = manualClock();
    const hub = new LabInstanceStreams({ keepAliveMs: 10, clock });
    const res = new FakeResponse();
    hub.handler(request(4, inst(4, "running")), res as unknown as ServerResponse, () => undefined);
    await waitFor("the stream's keep-alive timer", () => Promise.resolve(clock.pending === 1));
    const keepAlives = () => res.text().match(/^: keep-alive$/gm)?.length ?? 0;
    clock.advance(9);
    expect(keepAlives()).toBe(0);
    clock.advance(21);
    expect(keepAlives()).toBe(3);
    res.disconnect();
    expect(hub.openStreams).toBe(0);
    expect(clock.pending).toBe(0);
    const before = res.chunks.length;
    clock.advance(30);
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
    const lookup = gate();
    hub.handler(request(6, inst(6, "running"), {}, lookup.promise), res as unknown as ServerResponse, (e) =>
      errors.push(e as { code?: number }),
    );
    hub.closeAll();
    lookup.open();
    await until("the error", () => errors.length > 0);
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
    await until("both streams' heads", () => a.headersSent && b.headersSent);
    expect(hub.openStreams).toBe(2);
    hub.closeAll();
    expect(a.writableEnded && b.writableEnded).toBe(true);
    expect(hub.openStreams).toBe(0);
  });
});

/** A request of `GET /lab-instances/events` by `user`, whose first page (the snapshot) is `items`. */
function userRequest(user: Principal | null, items: StreamedInstance[], headers: Record<string, string> = {}) {
  const req = new EventEmitter() as unknown as IncomingMessage & Record<string, unknown>;
  const calls: { action: string; params: unknown }[] = [];
  Object.assign(req, {
    method: "GET",
    url: "/api/v1/lab-instances/events",
    headers,
    socket: { setNoDelay: () => undefined, setTimeout: () => undefined },
    $params: {},
    $ctx: {
      requestID: "rid-2",
      meta: { user },
      call: (action: string, params: unknown) => {
        calls.push({ action, params });
        return Promise.resolve({ items, total: items.length, offset: 0, limit: 100 });
      },
    },
  });
  return { req, calls };
}

const change = (
  id: number,
  status: StatusChange["status"],
  student_id: number,
  course_owner_id: number,
): StatusChange => ({
  id,
  status,
  student_id,
  course_owner_id,
  updated_at: new Date(1_700_000_000_000 + id),
});

describe("LabInstanceStreams: the caller's stream", () => {
  const student: Principal = { kind: "user", id: 5, role: "student" };
  const teacher: Principal = { kind: "user", id: 9, role: "teacher" };

  it("sends the active instances first (oldest first), then the changes the caller may view, and stays open", async () => {
    const hub = new LabInstanceStreams();
    const res = new FakeResponse();
    const { req, calls } = userRequest(student, [change(2, "running", 5, 9), change(1, "pending", 5, 9)]);
    hub.userHandler(req, res as unknown as ServerResponse, () => undefined);
    await until("the stream started", () => res.status === 200);
    expect(calls).toEqual([
      { action: "lab-instances.list", params: { active: "true", sort: "-updated_at", limit: 100 } },
    ]);
    expect(res.status).toBe(200);
    hub.publish(change(3, "pending", 6, 9)); // another student's
    hub.publish(change(1, "running", 5, 9));
    hub.publish(change(1, "pending", 5, 9)); // overtaken
    hub.publish(change(2, "stopped", 5, 9));
    hub.publish({ id: 4, status: "pending" }); // no routing facts: nobody's
    const events = [...res.text().matchAll(/^id: (.*)\nevent: status\ndata: (.*)$/gm)].map((m) => [
      m[1],
      JSON.parse(m[2]) as Record<string, unknown>,
    ]);
    expect(events.map(([id]) => id)).toEqual([
      "1.1.1700000000001",
      "2.2.1700000000002",
      "1.2.1700000000001",
      "2.4.1700000000002",
    ]);
    // The course owner routes the broadcast; it is not part of what the client gets.
    for (const [, data] of events) expect(data).not.toHaveProperty("course_owner_id");
    expect(res.writableEnded).toBe(false);
    expect(hub.openStreams).toBe(1);
    hub.closeAll();
    expect(res.writableEnded).toBe(true);
    expect(hub.openStreams).toBe(0);
  });

  it("a teacher gets their courses' instances; a Last-Event-ID resumes from its time, skipping what it saw", async () => {
    const hub = new LabInstanceStreams();
    const res = new FakeResponse();
    const { req, calls } = userRequest(teacher, [change(7, "running", 5, 9)], { "last-event-id": "7.2.1700000000007" });
    hub.userHandler(req, res as unknown as ServerResponse, () => undefined);
    await until("the stream started", () => res.status === 200);
    expect(calls[0]?.params).toEqual({
      updated_since: new Date(1_700_000_000_007 - 60_000).toISOString(),
      sort: "-updated_at",
      limit: 100,
    });
    expect(res.ids()).toEqual([]);
    hub.publish(change(8, "pending", 6, 10)); // another teacher's course
    hub.publish(change(7, "stopping", 5, 9));
    expect(res.text()).toContain("id: 7.3.");
    expect(res.text()).not.toContain('"id":8');
    res.disconnect();
    expect(hub.openStreams).toBe(0);
  });

  it("an anonymous caller's list call fails: the error goes to moleculer-web, no stream", async () => {
    const hub = new LabInstanceStreams();
    const res = new FakeResponse();
    const { req } = userRequest(null, []);
    (req.$ctx as { call: () => Promise<never> }).call = () =>
      Promise.reject(Object.assign(new Error("Not signed in"), { code: 401 }));
    const errors: unknown[] = [];
    hub.userHandler(req, res as unknown as ServerResponse, (e) => errors.push(e));
    await until("the error reached moleculer-web", () => errors.length === 1);
    expect(errors).toMatchObject([{ code: 401 }]);
    expect(res.headersSent).toBe(false);
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
    expect(isEventStreamRequest(r("GET", "/api/v1/lab-instances/events"))).toBe(true);
    expect(isEventStreamRequest(r("GET", "/api/v1/lab-instances/events?x=1"))).toBe(true);
    expect(isEventStreamRequest(r("GET", "/api/v1/lab-instances"))).toBe(false);
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

  it("reads the caller's stream's Last-Event-ID strictly, and names its events the same on every node", () => {
    expect(lastUserEvent("12.2.1700000000000")).toEqual({ instanceId: 12, rank: 2, atMs: 1_700_000_000_000 });
    for (const bad of [undefined, "2", "12.2", "0.1.5", "x.2.3", "12.2.3.4"]) expect(lastUserEvent(bad)).toBeNull();
    expect(userEventId({ id: 3, status: "running", updated_at: new Date(5000) })).toBe("3.2.5000");
    // Over the transporter a Date arrives as its ISO string.
    expect(userEventId({ id: 3, status: "running", updated_at: "1970-01-01T00:00:05.000Z" as unknown as Date })).toBe(
      "3.2.5000",
    );
  });

  it("formats one event per status", () => {
    expect(formatEvent({ id: 1, status: "running" })).toBe(
      'id: 2\nevent: status\ndata: {"id":1,"status":"running"}\n\n',
    );
  });
});
