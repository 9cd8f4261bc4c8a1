/**
 * Lab domain rules: the approval state machine, the re-approval rule on edits, Kubernetes quantity
 * parsing and Docker image-reference validation.
 *
 * Pure: no moleculer, no sequelize. Decisions come back as values (`{ok: false, code, detail}`) or
 * FastAPI-shaped validation problems; the service maps them (INVALID_TRANSITION → 409 conflict,
 * FORBIDDEN → 403, problems → 422).
 */
import type { Role } from "../../lib/principal";
import { controlCharProblem } from "../../lib/params";
import type { ListSpec } from "../../lib/listing";
import type { ValidationProblem } from "../../lib/validation-problem";
import type { JsonSchema } from "../../lib/schema";

/* ───────────────────────────── Approval state machine ───────────────────────────── */

export type LabStatus = "draft" | "pending_approval" | "approved" | "rejected";
export const LAB_STATUSES: readonly LabStatus[] = ["draft", "pending_approval", "approved", "rejected"];
export type LabAction = "submit" | "approve" | "reject";

export type TransitionResult =
  { ok: true; status: LabStatus } | { ok: false; code: "INVALID_TRANSITION" | "FORBIDDEN"; detail: string };

const STATUS_LABEL: Record<LabStatus, string> = {
  draft: "draft",
  pending_approval: "pending approval",
  approved: "approved",
  rejected: "rejected",
};

interface TransitionRule {
  from: readonly LabStatus[];
  to: LabStatus;
  roles: readonly Role[];
  /** Used in the 409 detail: "only a lab <fromLabel> can be <verb>". */
  fromLabel: string;
  verb: string;
  forbidden: string;
}

/**
 * The whole machine. Anything not listed is illegal. Notably: an approved lab cannot be re-submitted
 * or rejected through these actions (a non-admin edit of a sensitive field sends it back, see
 * statusAfterEdit), and a rejected lab goes back to review only through an explicit resubmit.
 */
const TRANSITIONS: Record<LabAction, TransitionRule> = {
  submit: {
    from: ["draft", "rejected"],
    to: "pending_approval",
    // Students never own labs; ownership (created_lab) is the access mixin's check, not this module's.
    roles: ["teacher", "admin"],
    fromLabel: "a draft or rejected lab",
    verb: "submitted for approval",
    forbidden: "Only teachers and admins can submit labs for approval",
  },
  approve: {
    // An admin's own review needs no submit first: the seed's flow is create, then approve.
    from: ["draft", "pending_approval"],
    to: "approved",
    roles: ["admin"],
    fromLabel: "a draft lab or a lab pending approval",
    verb: "approved",
    forbidden: "Only an admin can approve labs",
  },
  reject: {
    from: ["pending_approval"],
    to: "rejected",
    roles: ["admin"],
    fromLabel: "a lab pending approval",
    verb: "rejected",
    forbidden: "Only an admin can reject labs",
  },
};

/**
 * Where `action` takes a lab in `current` status. The role is checked before the state, so a teacher
 * approving a draft hears 403 (they may never approve) rather than 409 (which suggests retrying later).
 */
export function nextStatus(current: LabStatus, action: LabAction, actorRole: Role): TransitionResult {
  // Own-property lookup: runtime strings ("toString", junk from a caller) must not hit Object.prototype.
  const rule = Object.prototype.hasOwnProperty.call(TRANSITIONS, action) ? TRANSITIONS[action] : undefined;
  if (!rule) return { ok: false, code: "INVALID_TRANSITION", detail: `Unknown lab action '${action}'` };
  if (!rule.roles.includes(actorRole)) return { ok: false, code: "FORBIDDEN", detail: rule.forbidden };
  if (!rule.from.includes(current)) {
    const label = Object.prototype.hasOwnProperty.call(STATUS_LABEL, current) ? STATUS_LABEL[current] : current;
    return {
      ok: false,
      code: "INVALID_TRANSITION",
      detail: `Lab is ${label}; only ${rule.fromLabel} can be ${rule.verb}`,
    };
  }
  return { ok: true, status: rule.to };
}

/** The approval columns a transition writes. */
export interface LabStatusPatch {
  status: LabStatus;
  approved_by: number | null;
  rejection_reason: string | null;
}

/**
 * The columns to write once `nextStatus` said ok. approved_by is set only by approve; rejection_reason
 * only by reject, and cleared on resubmit/approve because it describes the current rejection, not history.
 */
export function transitionPatch(action: LabAction, actorId: number, reason?: string): LabStatusPatch {
  switch (action) {
    case "submit":
      return { status: "pending_approval", approved_by: null, rejection_reason: null };
    case "approve":
      return { status: "approved", approved_by: actorId, rejection_reason: null };
    case "reject":
      return { status: "rejected", approved_by: null, rejection_reason: reason ?? null };
  }
}

export const REJECTION_REASON_MAX = 2000;

/**
 * Body of `POST /labs/{id}/reject {"reason"}`. A reason is required: the teacher must learn what to fix.
 * Returns the trimmed reason or problems at ["body","reason"].
 */
export function parseRejectionReason(
  body: unknown,
): { ok: true; value: string } | { ok: false; problems: ValidationProblem[] } {
  const loc = ["body", "reason"];
  if (!isPlainObject(body))
    return { ok: false, problems: [{ loc: ["body"], msg: "Input should be a valid dictionary", type: "dict_type" }] };
  const raw = body.reason;
  if (raw === undefined) return { ok: false, problems: [{ loc, msg: "Field required", type: "missing" }] };
  if (typeof raw !== "string")
    return { ok: false, problems: [{ loc, msg: "Input should be a valid string", type: "string_type" }] };
  const reason = raw.trim();
  const control = controlCharProblem(reason, true);
  if (control) return { ok: false, problems: [{ loc, msg: control, type: "string_pattern_mismatch" }] };
  if (reason === "")
    return { ok: false, problems: [{ loc, msg: "String should have at least 1 character", type: "string_too_short" }] };
  if (reason.length > REJECTION_REASON_MAX)
    return {
      ok: false,
      problems: [
        { loc, msg: `String should have at most ${REJECTION_REASON_MAX} characters`, type: "string_too_long" },
      ],
    };
  return { ok: true, value: reason };
}

/* ───────────────────────────── Re-approval on edit ───────────────────────────── */

export interface LabResources {
  cpu: string;
  memory: string;
  storage: string;
}

/** What statusAfterEdit needs to know about the stored lab. */
export interface LabApprovalState {
  status: LabStatus;
  approved_by: number | null;
  docker_image: string;
  resources: LabResources;
  network_isolated: boolean;
}

/** The validated fields of a PUT. Absent (undefined) means "not sent": that field stays as stored. */
export interface LabChanges {
  name?: string;
  description?: string | null;
  docker_image?: string;
  resources?: LabResources;
  network_isolated?: boolean;
  max_lifetime_s?: number | null;
}

/** Fields that decide what runs in the cluster: changing them invalidates an admin's approval. */
export const REAPPROVAL_FIELDS = ["docker_image", "resources", "network_isolated"] as const;
export type ReapprovalField = (typeof REAPPROVAL_FIELDS)[number];

export type EditOutcome =
  | {
      ok: true;
      status: LabStatus;
      approved_by: number | null;
      /** True when this edit moved an approved lab back to pending_approval. */
      reapproval_required: boolean;
      /** Sensitive fields whose value actually changed (for the log / event). */
      changed: ReapprovalField[];
    }
  | { ok: false; code: "FORBIDDEN"; detail: string };

/**
 * Resources compare by meaning, not spelling: "0.5" → "500m" is the same pod and needs no new review.
 * Anything unparsable compares as text (validation rejects it before this is ever reached anyway).
 */
export function resourcesEqual(a: LabResources, b: LabResources): boolean {
  const same = (x: string, y: string, parse: (q: string) => QuantityResult): boolean => {
    const px = parse(x);
    const py = parse(y);
    return px.ok && py.ok ? px.value === py.value : x === y;
  };
  return (
    same(a.cpu, b.cpu, parseCpu) && same(a.memory, b.memory, parseMemory) && same(a.storage, b.storage, parseStorage)
  );
}

/**
 * Status (and approved_by) after an edit that the access rules already allowed
 * (teacher who created the lab, or admin).
 *
 * - A non-admin change to docker_image, resources or network_isolated of an APPROVED lab sends it back
 *   to pending_approval and clears approved_by: an admin approved what runs, not the lab's name.
 *   Only real changes count: a PUT that repeats the stored values keeps the approval.
 * - name, description, max_lifetime_s never affect status.
 * - Admin edits never change status: the admin is the approver.
 * - pending_approval: a non-admin may keep editing; it stays pending (the admin reviews the current
 *   values when deciding, so there is nothing to invalidate).
 * - rejected stays rejected and draft stays draft until explicitly submitted (nextStatus "submit").
 * - A student may never edit a lab (defence in depth: the access mixin denies this first).
 * The image is compared as text on purpose: "python" vs "docker.io/library/python:latest" may resolve to
 * the same thing today, but an image change is what review exists for, so we err towards re-review.
 */
export function statusAfterEdit(lab: LabApprovalState, changes: LabChanges, actorRole: Role): EditOutcome {
  if (actorRole !== "admin" && actorRole !== "teacher")
    return { ok: false, code: "FORBIDDEN", detail: "Students cannot edit labs" };

  const changed: ReapprovalField[] = [];
  if (changes.docker_image !== undefined && changes.docker_image !== lab.docker_image) changed.push("docker_image");
  if (changes.resources !== undefined && !resourcesEqual(changes.resources, lab.resources)) changed.push("resources");
  if (changes.network_isolated !== undefined && changes.network_isolated !== lab.network_isolated)
    changed.push("network_isolated");

  if (actorRole !== "admin" && lab.status === "approved" && changed.length > 0)
    return { ok: true, status: "pending_approval", approved_by: null, reapproval_required: true, changed };
  return { ok: true, status: lab.status, approved_by: lab.approved_by, reapproval_required: false, changed };
}

/**
 * The `status` of a `PUT /labs/{id}` body. The workflow owns status, so a PUT may only repeat the status it read
 * (`stored`: a frontend PUTting the object back), name what its edit leaves (`afterEdit`), both no change, or
 * ask for `pending_approval`, which is a submit (the seed's frontend PUTs it).
 * Anything else is refused, never silently ignored: not a lab status → 422; approved/rejected/draft → 409
 * naming the action that does it (or 403 from the submit rule).
 */
export type PutStatusResult =
  | { ok: true; submit: boolean }
  | { ok: false; code: "INVALID_TRANSITION" | "FORBIDDEN"; detail: string }
  | { ok: false; code: "INVALID"; problems: ValidationProblem[] };

const ACTION_OF = { approved: "approve", rejected: "reject" } as const;

function isLabStatus(v: unknown): v is LabStatus {
  return typeof v === "string" && (LAB_STATUSES as readonly string[]).includes(v);
}

export function putStatus(
  stored: LabStatus,
  afterEdit: LabStatus,
  requested: unknown,
  actorRole: Role,
): PutStatusResult {
  if (requested === undefined) return { ok: true, submit: false };
  const loc = ["body", "status"];
  if (!isLabStatus(requested)) {
    const msg = "Input should be 'draft', 'pending_approval', 'approved' or 'rejected'";
    return { ok: false, code: "INVALID", problems: [{ loc, msg, type: "enum" }] };
  }
  if (requested === stored || requested === afterEdit) return { ok: true, submit: false };
  if (requested === "pending_approval") {
    const next = nextStatus(afterEdit, "submit", actorRole);
    return next.ok ? { ok: true, submit: true } : next;
  }
  const how =
    requested === "draft" ? "only pending_approval (a submit)" : `use POST /labs/{id}/${ACTION_OF[requested]}`;
  return {
    ok: false,
    code: "INVALID_TRANSITION",
    detail: `A PUT cannot make a ${STATUS_LABEL[afterEdit]} lab ${STATUS_LABEL[requested]}; ${how}`,
  };
}

/** List spec for `GET /labs?status=&course_id=` (see lib/listing.ts). */
export const LAB_LIST_SPEC = {
  sortable: ["id", "name", "status", "created_at", "updated_at"],
  defaultSort: "-created_at",
  filters: { status: "enum:draft|pending_approval|approved|rejected", course_id: "int" },
} as const satisfies ListSpec;

/* ───────────────────────────── Kubernetes quantities ───────────────────────────── */

/*
 * Grammar (k8s.io/apimachinery/pkg/api/resource.Quantity):
 *   quantity        ::= signedNumber suffix
 *   suffix          ::= binarySI | decimalExponent | decimalSI
 *   binarySI        ::= Ki | Mi | Gi | Ti | Pi | Ei
 *   decimalSI       ::= m | "" | k | M | G | T | P | E
 *   decimalExponent ::= "e" signedNumber | "E" signedNumber   (integer exponent)
 *   signedNumber    ::= sign number | number;  sign ::= "+" | "-"
 *   number          ::= digits | digits "." digits | digits "." | "." digits
 * Case matters ("1K" and "1mi" are invalid; "1E" is exa, "1E3" is an exponent); no spaces.
 * Fractions of the base unit round UP, as Quantity.Value()/MilliValue() do: "0.1Ki" = 103 bytes.
 * Arithmetic is exact (BigInt), so "1.1" CPU is 1100m, never 1100.0000000000002.
 */

export type QuantityResult = { ok: true; value: number } | { ok: false; msg: string; type: string };

/** Ceilings and floors of what one lab instance may ask for (product limits, documented in the API). */
export const CPU_MIN_MILLI = 1;
export const CPU_MAX_MILLI = 64_000; // 64 cores
const MI = 1024 ** 2;
const GI = 1024 ** 3;
/** Below a few MiB the container runtime cannot even start the process: fail at 422, not as a failed pod. */
export const MEMORY_MIN_BYTES = 4 * MI;
export const MEMORY_MAX_BYTES = 64 * GI;
export const STORAGE_MIN_BYTES = 1 * MI;
export const STORAGE_MAX_BYTES = 1024 * GI; // 1Ti
/** Longer strings are not plausible quantities; the cap also bounds the BigInt work. */
export const QUANTITY_MAX_LENGTH = 64;
/** |exponent| beyond this is out of range for any resource (1e30 bytes…); bounds the BigInt work too. */
const MAX_EXPONENT = 30;

const BINARY_SI: Record<string, number> = { Ki: 10, Mi: 20, Gi: 30, Ti: 40, Pi: 50, Ei: 60 };
const DECIMAL_SI: Record<string, number> = { m: -3, "": 0, k: 3, M: 6, G: 9, T: 12, P: 15, E: 18 };
const NUMBER_RE = /^([+-]?)(\d+\.?\d*|\.\d+)(.*)$/s;
const EXPONENT_RE = /^[eE]([+-]?\d+)$/;

type SuffixKind = "binary" | "decimal" | "exponent";
interface RawQuantity {
  negative: boolean;
  /** value = num / den (exact, den > 0), in the base unit (cores or bytes). */
  num: bigint;
  den: bigint;
  suffix: string;
  suffixKind: SuffixKind;
}

function parseQuantityGrammar(q: string): RawQuantity | undefined {
  const m = NUMBER_RE.exec(q);
  if (!m) return undefined;
  const [, sign, number, suffix] = m; // every group takes part (possibly empty)
  let pow10 = 0;
  let pow2 = 0;
  let suffixKind: SuffixKind;
  const exp = EXPONENT_RE.exec(suffix);
  if (exp) {
    const e = Number(exp[1]);
    if (Math.abs(e) > MAX_EXPONENT) return undefined;
    pow10 = e;
    suffixKind = "exponent";
  } else if (Object.prototype.hasOwnProperty.call(BINARY_SI, suffix)) {
    pow2 = BINARY_SI[suffix];
    suffixKind = "binary";
  } else if (Object.prototype.hasOwnProperty.call(DECIMAL_SI, suffix)) {
    pow10 = DECIMAL_SI[suffix];
    suffixKind = "decimal";
  } else {
    return undefined;
  }
  const [intPart = "", fracPart = ""] = number.split(".");
  pow10 -= fracPart.length;
  let num = BigInt(`${intPart}${fracPart}` || "0") * 2n ** BigInt(pow2);
  let den = 1n;
  if (pow10 >= 0) num *= 10n ** BigInt(pow10);
  else den = 10n ** BigInt(-pow10);
  return { negative: sign === "-", num, den, suffix, suffixKind };
}

interface QuantityKind {
  /** "CPU", "Memory", "Storage": used in messages. */
  what: string;
  examples: string;
  /** Multiplier from the base unit to the returned unit (1000 for millicores, 1 for bytes). */
  scale: bigint;
  min: number;
  max: number;
  minLabel: string;
  maxLabel: string;
  /** Rejects a well-formed suffix that is a mistake for this resource; returns the message. */
  suffixMistake: (raw: RawQuantity) => string | undefined;
  /** The unit suffixes this resource takes (besides an exponent): what the API document's pattern allows. */
  suffixes: readonly string[];
}

function parseQuantity(q: unknown, kind: QuantityKind): QuantityResult {
  if (typeof q !== "string") return { ok: false, msg: "Input should be a valid string", type: "string_type" };
  if (q.length > QUANTITY_MAX_LENGTH)
    return {
      ok: false,
      msg: `${kind.what} quantity is too long (at most ${QUANTITY_MAX_LENGTH} characters)`,
      type: "value_error",
    };
  const raw = parseQuantityGrammar(q);
  if (!raw)
    return {
      ok: false,
      msg: `'${q}' is not a valid Kubernetes ${kind.what.toLowerCase()} quantity (e.g. ${kind.examples})`,
      type: "value_error",
    };
  const mistake = kind.suffixMistake(raw);
  if (mistake) return { ok: false, msg: mistake, type: "value_error" };
  if (raw.num === 0n || raw.negative)
    return { ok: false, msg: `${kind.what} must be greater than 0`, type: "greater_than" };
  const scaled = raw.num * kind.scale;
  const ceil = (scaled + raw.den - 1n) / raw.den; // round up, like Quantity.Value()/MilliValue()
  if (ceil > BigInt(kind.max))
    return { ok: false, msg: `${kind.what} must be at most ${kind.maxLabel}`, type: "less_than_equal" };
  if (ceil < BigInt(kind.min))
    return { ok: false, msg: `${kind.what} must be at least ${kind.minLabel}`, type: "greater_than_equal" };
  return { ok: true, value: Number(ceil) };
}

/** 'm' on bytes means milli-bytes: "512m" is half a byte, always a typo for "512Mi". */
const noMilliBytes =
  (what: string) =>
  (raw: RawQuantity): string | undefined =>
    raw.suffix === "m"
      ? `${what} suffix 'm' means thousandths of a byte; use Mi (mebibytes) or M (megabytes)`
      : undefined;

const CPU: QuantityKind = {
  what: "CPU",
  examples: "500m, 0.5, 2",
  scale: 1000n,
  min: CPU_MIN_MILLI,
  max: CPU_MAX_MILLI,
  minLabel: "1m",
  maxLabel: "64 cores (64000m)",
  // Binary suffixes are legal Quantity syntax, but "500Mi" CPU is always memory typed in the wrong field.
  suffixMistake: (raw) =>
    raw.suffixKind === "binary"
      ? `CPU takes decimal units such as 500m, 0.5 or 2; binary suffixes like '${raw.suffix}' are for memory and storage`
      : undefined,
  suffixes: Object.keys(DECIMAL_SI),
};

const MEMORY: QuantityKind = {
  what: "Memory",
  examples: "512Mi, 1Gi, 1500M",
  scale: 1n,
  min: MEMORY_MIN_BYTES,
  max: MEMORY_MAX_BYTES,
  minLabel: "4Mi",
  maxLabel: "64Gi",
  suffixMistake: noMilliBytes("Memory"),
  suffixes: [...Object.keys(BINARY_SI), ...Object.keys(DECIMAL_SI).filter((s) => s !== "m")],
};

const STORAGE: QuantityKind = {
  what: "Storage",
  examples: "1Gi, 500Mi, 10G",
  scale: 1n,
  min: STORAGE_MIN_BYTES,
  max: STORAGE_MAX_BYTES,
  minLabel: "1Mi",
  maxLabel: "1Ti",
  suffixMistake: noMilliBytes("Storage"),
  suffixes: [...Object.keys(BINARY_SI), ...Object.keys(DECIMAL_SI).filter((s) => s !== "m")],
};

/** CPU quantity → millicores. "500m" → 500, "0.5" → 500, "2" → 2000. Range 1m..64 cores. */
export function parseCpu(q: unknown): QuantityResult {
  return parseQuantity(q, CPU);
}
/** Memory quantity → bytes. "512Mi" → 536870912, "1G" → 1e9, "1e9" → 1e9. Range 4Mi..64Gi. */
export function parseMemory(q: unknown): QuantityResult {
  return parseQuantity(q, MEMORY);
}
/** Storage quantity → bytes. Range 1Mi..1Ti. */
export function parseStorage(q: unknown): QuantityResult {
  return parseQuantity(q, STORAGE);
}

/** A quantity of `kind` as JSON Schema: the grammar (a positive number, this resource's suffixes) and its range. */
function quantitySchema(kind: QuantityKind): JsonSchema {
  const suffixes = kind.suffixes.filter((x) => x !== "").join("|");
  return {
    type: "string",
    maxLength: QUANTITY_MAX_LENGTH,
    pattern: `^\\+?(?:\\d+\\.?\\d*|\\.\\d+)(?:${suffixes}|[eE][+-]?\\d+)?$`,
    description: `Kubernetes quantity, ${kind.minLabel} to ${kind.maxLabel} (e.g. ${kind.examples})`,
    examples: [kind.examples.split(", ")[0]],
  };
}

/** A request's `resources` object as JSON Schema (what parseResources accepts, for the API document). */
export const RESOURCES_SCHEMA: JsonSchema = {
  type: "object",
  properties: { cpu: quantitySchema(CPU), memory: quantitySchema(MEMORY), storage: quantitySchema(STORAGE) },
  required: ["cpu", "memory", "storage"],
  additionalProperties: false,
};

export interface ParsedResources {
  cpu_millicores: number;
  memory_bytes: number;
  storage_bytes: number;
}

const RESOURCE_PARSERS: Record<keyof LabResources, (q: unknown) => QuantityResult> = {
  cpu: parseCpu,
  memory: parseMemory,
  storage: parseStorage,
};

function isPlainObject(v: unknown): v is Record<string, unknown> {
  return typeof v === "object" && v !== null && !Array.isArray(v);
}

/**
 * Validates a request's `resources` object: cpu, memory and storage are all required strings; unknown
 * keys (e.g. "gpu") are rejected rather than silently stored. Every problem is reported at once.
 */
export function parseResources(
  value: unknown,
  loc: readonly (string | number)[] = ["body", "resources"],
): { ok: true; value: LabResources; parsed: ParsedResources } | { ok: false; problems: ValidationProblem[] } {
  if (!isPlainObject(value))
    return { ok: false, problems: [{ loc: [...loc], msg: "Input should be a valid dictionary", type: "dict_type" }] };
  const problems: ValidationProblem[] = [];
  const parsed: Partial<Record<keyof LabResources, number>> = {};
  for (const key of Object.keys(RESOURCE_PARSERS) as (keyof LabResources)[]) {
    const raw = Object.prototype.hasOwnProperty.call(value, key) ? value[key] : undefined;
    if (raw === undefined) {
      problems.push({ loc: [...loc, key], msg: "Field required", type: "missing" });
      continue;
    }
    const r = RESOURCE_PARSERS[key](raw);
    if (r.ok) parsed[key] = r.value;
    else problems.push({ loc: [...loc, key], msg: r.msg, type: r.type });
  }
  for (const key of Object.keys(value))
    if (!Object.prototype.hasOwnProperty.call(RESOURCE_PARSERS, key))
      problems.push({ loc: [...loc, key], msg: "Extra inputs are not permitted", type: "extra_forbidden" });
  if (problems.length > 0) return { ok: false, problems };
  return {
    ok: true,
    // Only the three known keys are copied: nothing else from the body reaches the jsonb column.
    value: { cpu: value.cpu as string, memory: value.memory as string, storage: value.storage as string },
    parsed: {
      cpu_millicores: parsed.cpu as number,
      memory_bytes: parsed.memory as number,
      storage_bytes: parsed.storage as number,
    },
  };
}

/** Problems of a request's `resources` object (empty when valid). */
export function validateResources(
  value: unknown,
  loc: readonly (string | number)[] = ["body", "resources"],
): ValidationProblem[] {
  const r = parseResources(value, loc);
  return r.ok ? [] : r.problems;
}

/* ───────────────────────────── Docker image references ───────────────────────────── */

/*
 * Grammar (github.com/distribution/reference):
 *   reference        := name [ ":" tag ] [ "@" digest ]
 *   name             := [domain '/'] remote-name
 *   domain           := host [':' port-number]
 *   host             := domain-name | IPv4address | \[ IPv6address \]
 *   domain-name      := domain-component ['.' domain-component]*
 *   domain-component := /([a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])/
 *   remote-name      := path-component ['/' path-component]*
 *   path-component   := /[a-z0-9]+/ [separator /[a-z0-9]+/]*;  separator := /[_.]|__|[-]+/
 *   tag              := /[\w][\w.-]{0,127}/
 *   digest           := algorithm ":" hex
 * Choices:
 * - The tag is optional: no tag means "latest", as docker and Kubernetes resolve it. (Pinning is good
 *   practice, but the admin reviewing the lab is the place to insist on it, not the parser.)
 * - The first of several components is the registry when it has a '.' or ':' or is "localhost".
 *   Docker also treats an uppercase first component ("Autolabs/python") as a registry host; we do not:
 *   a dot-less uppercase host is almost surely a mistyped Docker Hub namespace, so it gets
 *   "repository name must be lowercase" like "Python:3" does. Hosts with a dot may use any case.
 * - Digests: only the registered algorithms, with their exact lowercase-hex lengths (sha256/64,
 *   sha384/96, sha512/128), as the OCI digest package verifies; other algorithms are refused.
 * - The whole reference is at most 255 characters (distribution caps the name at 255; we cap the whole
 *   string, stricter, so a reference plus digest stays short enough for logs, events and UIs).
 */

export interface ImageReference {
  /** Registry host[:port], when given. */
  domain: string | undefined;
  /** Repository path, e.g. "autolabs/labs/python-basic" or "python". */
  path: string;
  /** undefined = no tag given (resolves to "latest" unless a digest pins it). */
  tag: string | undefined;
  digest: string | undefined;
}

export type ImageReferenceResult = { ok: true; value: ImageReference } | { ok: false; msg: string };

export const IMAGE_REFERENCE_MAX_LENGTH = 255;
const DOMAIN_COMPONENT = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
const IPV6_HOST = "\\[[a-fA-F0-9:]+\\]";
const DOMAIN_RE = new RegExp(`^(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})*|${IPV6_HOST})(?::[0-9]+)?$`);
const PATH_COMPONENT = "[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*";
const PATH_COMPONENT_RE = new RegExp(`^${PATH_COMPONENT}$`);
const TAG = "[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}";
const TAG_RE = new RegExp(`^${TAG}$`);
const DIGEST_HEX_LENGTH: Record<string, number> = { sha256: 64, sha384: 96, sha512: 128 };

/**
 * The same grammar as one regular expression, for the API document (JSON Schema `pattern`). A registry is
 * recognised as validateImageReference does (a '.', a port or localhost); the pattern accepts every reference
 * the validator accepts (unit-tested), and the validator's messages say what is wrong with the rest.
 */
export const IMAGE_REFERENCE_PATTERN = (() => {
  const registry = `(?:${DOMAIN_COMPONENT}(?:\\.${DOMAIN_COMPONENT})+(?::[0-9]+)?|${DOMAIN_COMPONENT}:[0-9]+|localhost|${IPV6_HOST}(?::[0-9]+)?)`;
  const digest = Object.entries(DIGEST_HEX_LENGTH)
    .map(([algorithm, length]) => `${algorithm}:[a-f0-9]{${length}}`)
    .join("|");
  return `^(?:${registry}/)?${PATH_COMPONENT}(?:/${PATH_COMPONENT})*(?::${TAG})?(?:@(?:${digest}))?$`;
})();

function badImage(msg: string): ImageReferenceResult {
  return { ok: false, msg };
}

function parseDigest(d: string): string | undefined {
  const colon = d.indexOf(":");
  if (colon < 0) return "digest must look like sha256:<64 hex characters>";
  const algorithm = d.slice(0, colon);
  const hex = d.slice(colon + 1);
  const length = Object.prototype.hasOwnProperty.call(DIGEST_HEX_LENGTH, algorithm)
    ? DIGEST_HEX_LENGTH[algorithm]
    : undefined;
  if (length === undefined) return `unsupported digest algorithm '${algorithm}' (use sha256, sha384 or sha512)`;
  if (hex.length !== length || !/^[a-f0-9]+$/.test(hex))
    return `${algorithm} digest must be ${length} lowercase hex characters`;
  return undefined;
}

/** Validates a Docker image reference; returns its parts or a message saying what is wrong. */
export function validateImageReference(ref: unknown): ImageReferenceResult {
  if (typeof ref !== "string") return badImage("Input should be a valid string");
  if (ref === "") return badImage("image reference must not be empty");
  if (ref.length > IMAGE_REFERENCE_MAX_LENGTH)
    return badImage(`image reference must be at most ${IMAGE_REFERENCE_MAX_LENGTH} characters`);
  if (/\s/.test(ref)) return badImage("image reference must not contain whitespace");

  let rest = ref;
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
    const problem = parseDigest(digest);
    if (problem) return badImage(problem);
  }

  let tag: string | undefined;
  const lastSlash = rest.lastIndexOf("/");
  const colon = rest.indexOf(":", lastSlash + 1); // a ':' before the last '/' is a registry port
  if (colon >= 0) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
    if (tag === "") return badImage("tag must not be empty (drop the ':' to mean latest)");
    if (tag.length > 128) return badImage("tag must be at most 128 characters");
    if (!TAG_RE.test(tag))
      return badImage(`invalid tag '${tag}': letters, digits, '_', '.', '-', not starting with '.' or '-'`);
  }
  if (rest === "") return badImage("repository name must not be empty");

  const components = rest.split("/");
  let domain: string | undefined;
  const first = components[0];
  if (components.length > 1 && (/[.:]/.test(first) || first === "localhost")) {
    domain = first;
    components.shift();
    if (!DOMAIN_RE.test(domain)) return badImage(`invalid registry host '${domain}'`);
  }
  for (const c of components) {
    if (c === "") return badImage("repository path must not contain empty components ('//' or a leading/trailing '/')");
    if (!PATH_COMPONENT_RE.test(c)) {
      if (c !== c.toLowerCase()) return badImage("repository name must be lowercase");
      return badImage(
        `invalid repository path component '${c}': lowercase letters and digits separated by '.', '_', '__' or '-'`,
      );
    }
  }
  return { ok: true, value: { domain, path: components.join("/"), tag, digest } };
}

/** Problems of a request's docker_image (empty when valid), FastAPI-shaped at `loc`. */
export function dockerImageProblems(
  value: unknown,
  loc: readonly (string | number)[] = ["body", "docker_image"],
): ValidationProblem[] {
  if (typeof value !== "string") return [{ loc: [...loc], msg: "Input should be a valid string", type: "string_type" }];
  const r = validateImageReference(value);
  return r.ok ? [] : [{ loc: [...loc], msg: `Invalid image reference: ${r.msg}`, type: "value_error" }];
}

/** A request's `docker_image` as JSON Schema (what validateImageReference accepts, for the API document). */
export const IMAGE_REFERENCE_SCHEMA: JsonSchema = {
  type: "string",
  minLength: 1,
  maxLength: IMAGE_REFERENCE_MAX_LENGTH,
  pattern: IMAGE_REFERENCE_PATTERN,
  description: "Docker image reference: [registry[:port]/]path[:tag][@digest]; no tag means latest",
  examples: ["registry.autolabs.local/labs/python:3.12"],
};
