/**
 * Celery task protocol v2, producer side, and the Redis result-backend format.
 *
 * Pure module: node built-ins only (no amqplib/moleculer import), so it can be
 * unit-tested without a broker. The message shape is pinned byte for byte
 * against Celery's own `app.send_task` (test/fixtures/celery/*.capture.json).
 */

// ---------------------------------------------------------------------------
// Task names and kwargs (DESIGN "Celery wire format")
// ---------------------------------------------------------------------------

export type CeleryTaskName = "start_lab" | "stop_lab" | "cleanup_lab";

// Type aliases, not interfaces: they stay assignable to Record<string, unknown>.
export type StartLabKwargs = {
  lab_instance_id: number;
  lab_id: number;
  student_id: number;
};

export type StopLabKwargs = {
  lab_instance_id: number;
};

export type CleanupLabKwargs = StopLabKwargs;

export interface CeleryTaskKwargs {
  start_lab: StartLabKwargs;
  stop_lab: StopLabKwargs;
  cleanup_lab: CleanupLabKwargs;
}

/** Keys of each task's kwargs, in the order we always send them. */
const KWARG_KEYS: { readonly [N in CeleryTaskName]: readonly (keyof CeleryTaskKwargs[N])[] } = {
  start_lab: ["lab_instance_id", "lab_id", "student_id"],
  stop_lab: ["lab_instance_id"],
  cleanup_lab: ["lab_instance_id"],
};

export const CELERY_TASK_NAMES: readonly CeleryTaskName[] = ["start_lab", "stop_lab", "cleanup_lab"];

export function isCeleryTaskName(name: unknown): name is CeleryTaskName {
  return typeof name === "string" && (CELERY_TASK_NAMES as readonly string[]).includes(name);
}

/** Full Celery task name, e.g. `celery_workers.start_lab` for prefix `celery_workers`. */
export function celeryTaskFullName(prefix: string, name: CeleryTaskName): string {
  return prefix === "" ? name : `${prefix}.${name}`;
}

/**
 * Validates kwargs (e.g. read back from the outbox's jsonb) and returns a fresh
 * object with exactly the task's keys in canonical order. Order matters for the
 * bytes (body JSON and kwargsrepr), and PostgreSQL jsonb does not keep it.
 */
export function canonicalKwargs<N extends CeleryTaskName>(name: N, kwargs: unknown): CeleryTaskKwargs[N] {
  if (!isPlainObject(kwargs)) {
    throw new TypeError(`kwargs of ${name} must be an object`);
  }
  const keys = KWARG_KEYS[name] as readonly string[];
  const extra = Object.keys(kwargs).filter((k) => !keys.includes(k));
  if (extra.length > 0) {
    throw new TypeError(`kwargs of ${name} has unexpected key(s): ${extra.join(", ")}`);
  }
  const out: Record<string, number> = {};
  for (const key of keys) {
    const v = kwargs[key];
    if (typeof v !== "number" || !Number.isSafeInteger(v) || v < 1 || v > 0x7fffffff) {
      throw new TypeError(`kwargs of ${name}: ${key} must be a positive integer id`);
    }
    out[key] = v;
  }
  return out as CeleryTaskKwargs[N];
}

// ---------------------------------------------------------------------------
// Message encoding
// ---------------------------------------------------------------------------

/**
 * amqplib's explicit field-value typing. A bare JS number is guessed as the
 * smallest type ('b' byte, 's' short, 'I' int, 'l' long); py-amqp reads 'b' as
 * unsigned, 's' as a *short string* and 'l' as unsigned, so integers must be
 * forced to 'I' (signed int32), which is what py-amqp itself writes.
 */
export interface AmqpInt32 {
  readonly "!": "int";
  readonly value: number;
}

export function amqpInt32(value: number): AmqpInt32 {
  if (!Number.isInteger(value) || value < -0x80000000 || value > 0x7fffffff) {
    throw new RangeError(`${value} does not fit an AMQP int32`);
  }
  return { "!": "int", value };
}

/** Protocol v2 headers, in the key order Celery writes them (the bytes depend on it). */
export interface CeleryTaskHeaders {
  lang: "py";
  task: string;
  id: string;
  shadow: null;
  eta: null;
  expires: null;
  group: null;
  group_index: null;
  retries: AmqpInt32;
  timelimit: [null, null];
  root_id: string;
  parent_id: null;
  argsrepr: string;
  kwargsrepr: string;
  origin: string;
  ignore_result: boolean;
}

/** Structurally an amqplib `Options.Publish`. */
export interface CeleryPublishOptions {
  persistent: true;
  deliveryMode: 2;
  contentType: "application/json";
  contentEncoding: "utf-8";
  priority: 0;
  correlationId: string;
  replyTo?: string;
  headers: CeleryTaskHeaders;
}

export interface CeleryTaskInput {
  /** Celery task id (uuid4 string); also correlation_id and root_id. */
  id: string;
  /** Full task name, e.g. "celery_workers.start_lab". */
  task: string;
  kwargs: Record<string, unknown>;
  /** CELERY_QUEUE: routing key on the default exchange. */
  queue: string;
  /** The sending node (Celery writes gen<pid>@<host>). */
  origin: string;
  /**
   * reply_to property. Celery fills it with a per-process oid that only the
   * RPC result backend reads; with the Redis backend it is unused, so we omit
   * it unless given (the conformance test passes the captured value).
   */
  replyTo?: string;
}

export interface EncodedCeleryTask {
  exchange: "";
  routingKey: string;
  content: Buffer;
  options: CeleryPublishOptions;
}

/** Third body element: no canvas (callbacks, errbacks, chain, chord). */
const EMBED = { callbacks: null, errbacks: null, chain: null, chord: null } as const;

/** Celery's argsrepr_maxsize / kwargsrepr_maxsize (celery.app.amqp.AMQP). */
const REPR_MAXSIZE = 1024;

/**
 * Encodes a task exactly as Celery 5's `app.send_task(task, kwargs=..., task_id=id)`
 * does (protocol v2, json serializer): publish to the default exchange with the
 * queue name as routing key. Throws TypeError on values JSON/Python cannot
 * carry faithfully (undefined, NaN, functions, class instances, cycles).
 */
export function encodeCeleryTask(input: CeleryTaskInput): EncodedCeleryTask {
  const { id, task, kwargs, queue, origin, replyTo } = input;
  requireShortString("id", id);
  requireShortString("queue", queue);
  if (typeof task !== "string" || task === "") throw new TypeError("task must be a non-empty string");
  if (typeof origin !== "string") throw new TypeError("origin must be a string");
  if (replyTo !== undefined) requireShortString("replyTo", replyTo, true);
  if (!isPlainObject(kwargs)) throw new TypeError("kwargs must be a plain object");

  // Body first: it rejects anything unserializable before we build headers.
  // Same bytes as dumps((args, kwargs, embed)), with error paths named "kwargs...".
  const body = `[[], ${pyJsonDumps(kwargs, "kwargs")}, ${pyJsonDumps(EMBED)}]`;

  const headers: CeleryTaskHeaders = {
    lang: "py",
    task,
    id,
    shadow: null,
    eta: null,
    expires: null,
    group: null,
    group_index: null,
    retries: amqpInt32(0),
    timelimit: [null, null],
    root_id: id,
    parent_id: null,
    argsrepr: "()", // saferepr(()) : we never send positional args
    kwargsrepr: celerySaferepr(kwargs, REPR_MAXSIZE),
    origin,
    ignore_result: false,
  };
  const options: CeleryPublishOptions = {
    persistent: true,
    deliveryMode: 2,
    contentType: "application/json",
    contentEncoding: "utf-8",
    priority: 0,
    correlationId: id,
    ...(replyTo !== undefined ? { replyTo } : {}),
    headers,
  };
  return { exchange: "", routingKey: queue, content: Buffer.from(body, "utf8"), options };
}

function requireShortString(name: string, v: unknown, allowEmpty = false): void {
  // AMQP shortstr properties (correlation_id, reply_to) and routing keys max 255 bytes.
  if (typeof v !== "string" || (!allowEmpty && v === "") || Buffer.byteLength(v, "utf8") > 255) {
    throw new TypeError(`${name} must be a ${allowEmpty ? "" : "non-empty "}string of at most 255 bytes`);
  }
}

// ---------------------------------------------------------------------------
// Queue declaration (what Celery declares before publishing)
// ---------------------------------------------------------------------------

/**
 * kombu's defaults for Celery's default queue: `Queue(q, Exchange(q), routing_key=q)`.
 * Declare it the same way the worker does (durable, no arguments), otherwise
 * RabbitMQ answers PRECONDITION_FAILED to whichever side declares second.
 * Order: exchange, queue, bind. Shapes match amqplib's assertExchange /
 * assertQueue / bindQueue parameters.
 */
export interface CeleryQueueDeclaration {
  exchange: {
    name: string;
    type: "direct";
    options: { durable: true; autoDelete: false; internal: false };
  };
  queue: {
    name: string;
    options: { durable: true; exclusive: false; autoDelete: false };
  };
  binding: { queue: string; exchange: string; routingKey: string };
}

export function celeryQueueDeclaration(queue: string): CeleryQueueDeclaration {
  requireShortString("queue", queue);
  return {
    exchange: { name: queue, type: "direct", options: { durable: true, autoDelete: false, internal: false } },
    queue: { name: queue, options: { durable: true, exclusive: false, autoDelete: false } },
    binding: { queue, exchange: queue, routingKey: queue },
  };
}

// ---------------------------------------------------------------------------
// Result backend (Redis)
// ---------------------------------------------------------------------------

export type CeleryTaskState =
  "PENDING" | "RECEIVED" | "STARTED" | "RETRY" | "SUCCESS" | "FAILURE" | "REVOKED" | "REJECTED" | "IGNORED";

/** celery.states.READY_STATES: the task will not change state again. */
export const CELERY_READY_STATES: readonly CeleryTaskState[] = ["SUCCESS", "FAILURE", "REVOKED"];

export interface CeleryResult {
  taskId: string;
  // `string & {}` keeps editor completion for known states while allowing others.
  status: CeleryTaskState | (string & {});
  result: unknown;
  /** For FAILURE and REVOKED: "<exc_type>: <exc_message>". */
  error?: string;
  /** Worker traceback when the backend stored one (FAILURE). */
  traceback?: string;
}

/** Redis key (and pub/sub channel) of a task's result. */
export function resultKey(id: string): string {
  return `celery-task-meta-${id}`;
}

/**
 * Parses the JSON Celery's Redis backend stores at `celery-task-meta-<id>`:
 * `{"status", "result", "traceback", "children", "date_done", "task_id"}`.
 * The value comes from another team's component: anything malformed throws an
 * Error saying what is wrong, never a TypeError from deep inside.
 */
export function parseCeleryResult(raw: string): CeleryResult {
  if (typeof raw !== "string") throw new Error("celery result: expected a string");
  let parsed: unknown;
  try {
    parsed = JSON.parse(raw);
  } catch (e) {
    throw new Error(`celery result: not valid JSON (${(e as Error).message}): ${preview(raw)}`, { cause: e });
  }
  if (!isPlainObject(parsed)) throw new Error(`celery result: expected a JSON object: ${preview(raw)}`);
  const { status, task_id: taskId, traceback } = parsed;
  if (typeof status !== "string" || status === "") {
    throw new Error(`celery result: missing or invalid "status": ${preview(raw)}`);
  }
  if (typeof taskId !== "string" || taskId === "") {
    throw new Error(`celery result: missing or invalid "task_id": ${preview(raw)}`);
  }
  if (!("result" in parsed)) throw new Error(`celery result: missing "result": ${preview(raw)}`);
  const out: CeleryResult = { taskId, status, result: parsed.result };
  if (status === "FAILURE" || status === "REVOKED") out.error = formatCeleryError(parsed.result);
  if (typeof traceback === "string") out.traceback = traceback;
  return out;
}

/** Celery serializes exceptions as {exc_type, exc_message: [args...], exc_module}. */
function formatCeleryError(result: unknown): string {
  if (isPlainObject(result) && typeof result.exc_type === "string" && result.exc_type !== "") {
    const msg = excMessageText(result.exc_message);
    return msg === "" ? result.exc_type : `${result.exc_type}: ${msg}`;
  }
  // Not an exception dict (foreign serializer, truncated write): still a failure.
  return `UnknownError: ${typeof result === "string" ? result : JSON.stringify(result ?? null)}`;
}

function excMessageText(m: unknown): string {
  if (typeof m === "string") return m;
  // Python str(exc) of one arg is that arg; of several, the tuple: join them.
  if (Array.isArray(m)) return m.map((a) => (typeof a === "string" ? a : JSON.stringify(a))).join(", ");
  if (m === undefined || m === null) return "";
  return JSON.stringify(m);
}

function preview(raw: string): string {
  return JSON.stringify(raw.length > 120 ? `${raw.slice(0, 120)}…` : raw);
}

// ---------------------------------------------------------------------------
// Python-compatible serialization (kombu json, celery saferepr)
// ---------------------------------------------------------------------------

function isPlainObject(v: unknown): v is Record<string, unknown> {
  if (typeof v !== "object" || v === null || Array.isArray(v)) return false;
  const proto: unknown = Object.getPrototypeOf(v);
  return proto === Object.prototype || proto === null;
}

/**
 * Python `repr(float)` (also json.dumps' float form): shortest round-trip digits,
 * exponent form when the exponent is < -4 or >= 16, at least two exponent digits,
 * ".0" on integral values. JS picks the same shortest digits, only formats them
 * differently.
 */
export function pyFloatRepr(n: number): string {
  if (!Number.isFinite(n)) throw new TypeError(`${n} has no JSON form`);
  if (Object.is(n, -0)) return "-0.0";
  const [mantissa, expPart] = n.toExponential().split("e") as [string, string];
  const exp = Number(expPart);
  const sign = mantissa.startsWith("-") ? "-" : "";
  const digits = mantissa.replace("-", "").replace(".", "");
  if (exp < -4 || exp >= 16) {
    const m = digits.length > 1 ? `${digits[0]}.${digits.slice(1)}` : digits;
    return `${sign}${m}e${exp < 0 ? "-" : "+"}${String(Math.abs(exp)).padStart(2, "0")}`;
  }
  if (exp >= 0) {
    const intPart = digits.slice(0, exp + 1).padEnd(exp + 1, "0");
    const frac = digits.slice(exp + 1);
    return `${sign}${intPart}.${frac === "" ? "0" : frac}`;
  }
  return `${sign}0.${"0".repeat(-exp - 1)}${digits}`;
}

/** A JS number as Python would print it: safe integers are ints, all else a float. */
function pyNumber(n: number): string {
  if (!Number.isFinite(n)) throw new TypeError(`${n} cannot be sent to Celery (no JSON form)`);
  return Number.isSafeInteger(n) && !Object.is(n, -0) ? String(n) : pyFloatRepr(n);
}

/** json.dumps(..., ensure_ascii=True) string escaping; lowercase \uXXXX per UTF-16 unit. */
function pyJsonString(s: string): string {
  let out = '"';
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    const ch = s[i];
    if (ch === '"') out += '\\"';
    else if (ch === "\\") out += "\\\\";
    else if (c >= 0x20 && c <= 0x7e) out += ch;
    else if (ch === "\n") out += "\\n";
    else if (ch === "\r") out += "\\r";
    else if (ch === "\t") out += "\\t";
    else if (ch === "\b") out += "\\b";
    else if (ch === "\f") out += "\\f";
    else out += `\\u${c.toString(16).padStart(4, "0")}`;
  }
  return `${out}"`;
}

/**
 * kombu's json dumps: Python's json.dumps defaults (", " and ": " separators,
 * ensure_ascii). JSON.stringify differs in spacing and escaping, and the
 * conformance fixture pins the bytes. Keys go in JS order, which puts
 * integer-like keys first (Python keeps insertion order): irrelevant for our
 * kwargs, whose keys are names.
 */
export function pyJsonDumps(value: unknown, root = "value"): string {
  const stack = new Set<object>();
  const enc = (v: unknown, path: string): string => {
    if (v === null) return "null";
    switch (typeof v) {
      case "boolean":
        return v ? "true" : "false";
      case "number":
        return pyNumber(v);
      case "bigint":
        return v.toString();
      case "string":
        return pyJsonString(v);
      case "object":
        break;
      default:
        throw new TypeError(`${path} is ${typeof v}, which has no JSON form`);
    }
    const o = v;
    if (stack.has(o)) throw new TypeError(`${path} is a circular reference`);
    stack.add(o);
    let out: string;
    if (Array.isArray(o)) {
      out = `[${o.map((item: unknown, i) => enc(item, `${path}[${i}]`)).join(", ")}]`;
    } else if (isPlainObject(o)) {
      out = `{${Object.keys(o)
        .map((k) => `${pyJsonString(k)}: ${enc(o[k], `${path}.${k}`)}`)
        .join(", ")}}`;
    } else {
      // A prototype chain without Object.prototype has no constructor.
      const ctor = (o as { constructor?: { name?: string } }).constructor;
      throw new TypeError(`${path} is a ${ctor?.name ?? "non-plain object"}, not plain JSON data`);
    }
    stack.delete(o);
    return out;
  };
  return enc(value, root);
}

// celery.utils.saferepr port: a streaming, truncating repr. Tokens mirror the
// Python namedtuples so the truncation rules (which are quirky: strings are not
// escaped except for "'", closing brackets survive truncation) match exactly.
interface Lit {
  kind: "lit";
  value: string;
  truncate: boolean;
  direction: -1 | 0 | 1;
}
interface KeyTok {
  kind: "key";
  value: string;
}
interface Quoted {
  kind: "quoted";
  value: string;
}
interface Dirty {
  kind: "dirty";
  obj: object;
}
interface Val {
  kind: "val";
  value: unknown;
}
type StreamItem = Lit | KeyTok | Dirty | Val;
type Token = Lit | KeyTok | Quoted | string;

const lit = (value: string, truncate: boolean, direction: -1 | 0 | 1): Lit => ({
  kind: "lit",
  value,
  truncate,
  direction,
});
const LIT_DICT_START = lit("{", false, 1);
const LIT_DICT_KVSEP = lit(": ", true, 0);
const LIT_DICT_END = lit("}", false, -1);
const LIT_LIST_START = lit("[", false, 1);
const LIT_LIST_END = lit("]", false, -1);
const LIT_LIST_SEP = lit(", ", true, 0);

function* chain(...parts: Iterable<StreamItem>[]): Iterator<StreamItem> {
  for (const p of parts) yield* p;
}

function* chainDict(o: Record<string, unknown>): Iterable<StreamItem> {
  const keys = Object.keys(o);
  for (let i = 0; i < keys.length; i++) {
    const k = keys[i];
    yield { kind: "key", value: k };
    yield LIT_DICT_KVSEP;
    yield { kind: "val", value: o[k] };
    if (i < keys.length - 1) yield LIT_LIST_SEP;
  }
}

function* chainList(a: readonly unknown[]): Iterable<StreamItem> {
  for (let i = 0; i < a.length; i++) {
    yield { kind: "val", value: a[i] };
    if (i < a.length - 1) yield LIT_LIST_SEP;
  }
}

/** Mirrors reprstream(): yields each token with the iterator it came from. */
function* reprStream(stack: Iterator<StreamItem>[], maxlevels: number): Generator<[Token, Iterator<StreamItem>]> {
  const seen = new Set<object>();
  let level = 0;
  while (stack.length > 0) {
    const it = stack.shift() as Iterator<StreamItem>;
    // Manual next(): a for-of would close `it` on break, and the rest of
    // `it` is still needed (it carries the outer levels' closing brackets).
    for (let r = it.next(); !r.done; r = it.next()) {
      const item = r.value;
      if (item.kind === "dirty") {
        seen.delete(item.obj);
        continue;
      }
      if (item.kind === "lit") {
        level += item.direction;
        yield [item, it];
        continue;
      }
      if (item.kind === "key") {
        yield [item, it];
        continue;
      }
      const v = item.value;
      if (v === null) {
        yield ["None", it];
        continue;
      }
      if (typeof v === "boolean") {
        yield [v ? "True" : "False", it];
        continue;
      }
      if (typeof v === "number") {
        yield [pyNumber(v), it];
        continue;
      }
      if (typeof v === "bigint") {
        yield [v.toString(), it];
        continue;
      }
      if (typeof v === "string") {
        yield [{ kind: "quoted", value: v }, it];
        continue;
      }
      let start: Lit;
      let end: Lit;
      let inner: Iterable<StreamItem>;
      if (Array.isArray(v)) {
        [start, end, inner] = [LIT_LIST_START, LIT_LIST_END, chainList(v)];
      } else if (isPlainObject(v)) {
        [start, end, inner] = [LIT_DICT_START, LIT_DICT_END, chainDict(v)];
      } else {
        throw new TypeError(`cannot repr ${typeof v}`);
      }
      if (maxlevels && level >= maxlevels) {
        yield [`${start.value}...${end.value}`, it];
        continue;
      }
      if (seen.has(v)) throw new TypeError("circular reference in kwargs");
      seen.add(v);
      stack.push(chain([start], inner, [{ kind: "dirty", obj: v }, end], { [Symbol.iterator]: () => it }));
      break;
    }
  }
}

/** Python len(): code points, not UTF-16 units. */
function pyLen(s: string): number {
  let n = 0;
  for (const _ of s) n++;
  return n;
}

/** celery.utils.text.truncate: cut at maxlen code points, back to the last space, add "...". */
function pyTruncate(s: string, maxlen: number | null): string {
  if (maxlen && pyLen(s) >= maxlen) {
    const head = Array.from(s).slice(0, maxlen).join("");
    const sp = head.lastIndexOf(" ");
    return `${sp === -1 ? head : head.slice(0, sp)}...`;
  }
  return s;
}

/**
 * celery.utils.saferepr.saferepr(o, maxlen, maxlevels=3): what Celery puts in
 * the argsrepr/kwargsrepr headers.
 */
export function celerySaferepr(o: unknown, maxlen: number | null = null, maxlevels = 3): string {
  const stack: Iterator<StreamItem>[] = [[{ kind: "val", value: o } as StreamItem][Symbol.iterator]()];
  const out: string[] = [];
  let remaining = maxlen;
  const stream = reprStream(stack, maxlevels);
  for (let r = stream.next(); !r.done; r = stream.next()) {
    const [token, it] = r.value;
    if (remaining !== null && remaining <= 0) {
      out.push(", ...");
      stack.push(it); // closing brackets still owed are emitted below
      break;
    }
    let val: string;
    if (typeof token === "string") val = pyTruncate(token, remaining);
    else if (token.kind === "lit") val = token.value;
    else if (token.kind === "key") val = celerySaferepr(token.value, remaining, maxlevels);
    else val = `'${pyTruncate(token.value, remaining).replace(/'/g, "\\'")}'`;
    out.push(val);
    if (remaining !== null) remaining -= pyLen(val);
  }
  for (const rest of stack) {
    for (let r = rest.next(); !r.done; r = rest.next()) {
      if (r.value.kind === "lit" && !r.value.truncate) out.push(r.value.value);
    }
  }
  return out.join("");
}
