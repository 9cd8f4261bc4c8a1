/**
 * Helpers of the lab-instance integration tests: a course with approved labs and assigned students set up
 * through the API, worker results applied through the broker as the tasks service does, outbox reads, and
 * a small SSE client over fetch.
 */
import { importJWK, SignJWT } from "jose";
import type { ApiResponse, TestPlatform } from "./platform";
import { systemPrincipal } from "../../lib/principal";
import type { ApplyTaskResultAnswer, ApplyTaskResultParams } from "../../services/lab-instances/lab-instances.contract";

/** What the helpers need of a platform (startTestPlatform's, or one built by hand on another database). */
export type WorldPlatform = Pick<TestPlatform, "api" | "userId" | "broker" | "sequelize" | "config" | "url">;

// access answers the start rule (access.check) for lab-instances.
export const WITHOUT_TASKS = "api-gateway,auth,courses,labs,lab-instances,access";
export const RESOURCES = { cpu: "500m", memory: "512Mi", storage: "1Gi" };
export const STATUS_KEYS = [
  "celery_task_id",
  "connection_url",
  "course_id",
  "course_name",
  "created_at",
  "error",
  "expires_at",
  "id",
  "k8s_pod_name",
  "lab_id",
  "lab_name",
  "started_at",
  "status",
  "stopped_at",
  "student_id",
  "updated_at",
];

export interface Instance {
  id: number;
  lab_id: number;
  course_id: number;
  student_id: number;
  status: string;
  celery_task_id: string | null;
  k8s_pod_name: string | null;
  connection_url: string | null;
  error: string | null;
  created_at: string;
  started_at: string | null;
  stopped_at: string | null;
  expires_at: string | null;
  updated_at: string;
  lab_name: string;
  course_name: string;
}
export interface Page<T> {
  items: T[];
  total: number;
  offset: number;
  limit: number;
}
export interface OutboxRow {
  id: string;
  task_name: string;
  kwargs: Record<string, unknown>;
  queue: string;
  lab_instance_id: number;
}

/* ───────────────────────────── helpers ───────────────────────────── */

export function must(what: string, res: ApiResponse, status: number): ApiResponse {
  if (res.status !== status)
    throw new Error(`${what}: expected ${status}, got ${res.status} ${JSON.stringify(res.body)}`);
  return res;
}

export const detail = (res: ApiResponse): string => String((res.body as { detail?: unknown }).detail);

/** A second teacher the demo IdP does not have: a token signed with the IdP's own key. */
export async function teacher2Token(p: Pick<TestPlatform, "idp" | "config">): Promise<string> {
  const jwk = p.idp.privateJwks().keys[0];
  const key = await importJWK(jwk, "RS256");
  const now = Math.floor(Date.now() / 1000);
  return new SignJWT({
    iss: p.idp.issuer,
    aud: p.config.oidc.audience,
    sub: "320000000000000777",
    email: "teacher-other@autolabs.local",
    name: "Other Teacher",
    iat: now,
    exp: now + 600,
    [p.config.oidc.rolesClaim]: { teacher: { "300000000000000001": "autolabs.local" } },
  })
    .setProtectedHeader({ alg: "RS256", kid: jwk.kid, typ: "at+jwt" })
    .sign(key);
}

export interface World {
  p: WorldPlatform;
  ids: { student: number; student2: number; teacher: number };
  course: number;
  /** Approved labs attached to `course`. */
  labs: number[];
  start(labId: number, as?: string, courseId?: number): Promise<ApiResponse>;
  get(id: number, as?: string): Promise<Instance>;
  apply(params: ApplyTaskResultParams): Promise<ApplyTaskResultAnswer>;
  outbox(instanceId: number): Promise<OutboxRow[]>;
  /** Ends every active instance directly in the database, so a test starts from a clean slate. */
  reset(): Promise<void>;
  approvedLab(extra?: Record<string, unknown>): Promise<number>;
}

export async function world(p: WorldPlatform, labCount: number): Promise<World> {
  const ids = {
    student: await p.userId("student"),
    student2: await p.userId("student2"),
    teacher: await p.userId("teacher"),
  };
  const course = must(
    "course",
    await p.api("POST", "/courses", { as: "teacher", body: { name: "Networks" } }),
    201,
  ).json<{ id: number }>().id;
  must(
    "assign",
    await p.api("POST", `/courses/${course}/students`, {
      as: "teacher",
      body: { student_ids: [ids.student, ids.student2] },
    }),
    200,
  );
  let n = 0;
  const approvedLab = async (extra: Record<string, unknown> = {}) => {
    const body = {
      name: `Lab ${++n}`,
      docker_image: "registry.autolabs.local/labs/net:1.0",
      resources: RESOURCES,
      ...extra,
    };
    const lab = must("lab", await p.api("POST", "/labs", { as: "teacher", body }), 201).json<{ id: number }>().id;
    must("submit", await p.api("POST", `/labs/${lab}/submit`, { as: "teacher" }), 200);
    must("approve", await p.api("POST", `/labs/${lab}/approve`, { as: "admin" }), 200);
    return lab;
  };
  const labs: number[] = [];
  for (let i = 0; i < labCount; i++) {
    const lab = await approvedLab(i === 0 ? { max_lifetime_s: 3600 } : {});
    must("attach", await p.api("POST", `/courses/${course}/labs`, { as: "teacher", body: { lab_id: lab } }), 201);
    labs.push(lab);
  }
  return {
    p,
    ids,
    course,
    labs,
    approvedLab,
    start: (labId, as = "student", courseId = course) =>
      p.api("POST", "/lab-instances", { as, body: { lab_id: labId, course_id: courseId } }),
    async get(id, as = "admin") {
      return must("get", await p.api("GET", `/lab-instances/${id}`, { as }), 200).json<Instance>();
    },
    apply: (params) =>
      p.broker.call("lab-instances.applyTaskResult", params, {
        meta: { user: systemPrincipal("test: worker result") },
      }),
    async outbox(instanceId) {
      const [rows] = await p.sequelize.query(
        "SELECT id, task_name, kwargs, queue, lab_instance_id FROM task_outbox WHERE lab_instance_id = $id ORDER BY created_at, task_name",
        { bind: { id: instanceId } },
      );
      return rows as OutboxRow[];
    },
    async reset() {
      await p.sequelize.query(
        "UPDATE lab_instances SET status = 'stopped' WHERE status IN ('pending', 'running', 'stopping')",
      );
    },
  };
}

export const startOk = {
  status: "running",
  k8s_pod_name: "lab-pod-1",
  connection_url: "https://labs.example.test/i/1",
};

export async function until<T>(
  what: string,
  fn: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  timeoutMs = 10_000,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v) return v;
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 50));
  }
}

/* ───────────────────────────── SSE client ───────────────────────────── */

export interface SseEvent {
  id?: string;
  event?: string;
  data?: string;
}
export interface Stream {
  status: number;
  headers: Headers;
  events: SseEvent[];
  comments: string[];
  /** Resolves when the server ended the stream. */
  ended: Promise<void>;
  waitFor(n: number, timeoutMs?: number): Promise<SseEvent[]>;
  close(): void;
  body: string;
}

export async function openStream(
  p: Pick<TestPlatform, "url">,
  path: string,
  token: string | null,
  headers: Record<string, string> = {},
): Promise<Stream> {
  const ctrl = new AbortController();
  const res = await fetch(`${p.url}/api/v1${path}`, {
    headers: { accept: "text/event-stream", ...(token ? { authorization: `Bearer ${token}` } : {}), ...headers },
    signal: ctrl.signal,
  });
  const s: Stream = {
    status: res.status,
    headers: res.headers,
    events: [],
    comments: [],
    body: "",
    ended: Promise.resolve(),
    async waitFor(n, timeoutMs = 5000) {
      await until(`${n} SSE event(s), have ${JSON.stringify(s.events)}`, () => s.events.length >= n, timeoutMs);
      return s.events;
    },
    close: () => ctrl.abort(),
  };
  if (!res.body) return s;
  const reader = res.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  s.ended = (async () => {
    try {
      for (;;) {
        const { done, value } = await reader.read();
        if (done) break;
        const text = decoder.decode(value, { stream: true });
        s.body += text;
        buffer += text;
        let cut: number;
        while ((cut = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, cut);
          buffer = buffer.slice(cut + 2);
          const ev: SseEvent = {};
          let isEvent = false;
          for (const line of block.split("\n")) {
            if (line.startsWith(":")) s.comments.push(line);
            const m = /^(id|event|data): ?(.*)$/.exec(line);
            if (m) {
              ev[m[1] as keyof SseEvent] = m[2];
              isEvent = true;
            }
          }
          if (isEvent && ev.data !== undefined) s.events.push(ev);
        }
      }
    } catch {
      /* aborted by the test */
    }
  })();
  return s;
}

export const statusOf = (e: SseEvent) => (JSON.parse(e.data ?? "{}") as Instance).status;
