import {
  CPU_MAX_MILLI,
  IMAGE_REFERENCE_MAX_LENGTH,
  IMAGE_REFERENCE_PATTERN,
  RESOURCES_SCHEMA,
  LAB_LIST_SPEC,
  LAB_STATUSES,
  MEMORY_MAX_BYTES,
  MEMORY_MIN_BYTES,
  REJECTION_REASON_MAX,
  STORAGE_MAX_BYTES,
  STORAGE_MIN_BYTES,
  dockerImageProblems,
  nextStatus,
  parseCpu,
  parseMemory,
  parseRejectionReason,
  parseResources,
  parseStorage,
  putStatus,
  resourcesEqual,
  statusAfterEdit,
  transitionPatch,
  validateImageReference,
  validateResources,
  type LabAction,
  type LabApprovalState,
  type LabChanges,
  type LabStatus,
  type QuantityResult,
} from "../../services/labs/labs.rules";
import { parseListQuery } from "../../lib/listing";
import type { Role } from "../../lib/principal";

const ROLES: Role[] = ["admin", "teacher", "student"];
const ACTIONS: LabAction[] = ["submit", "approve", "reject"];

/* ───────────────────────────── state machine ───────────────────────────── */

describe("nextStatus", () => {
  // The legal transitions, written out independently of the implementation's table.
  const LEGAL: Record<LabAction, { from: LabStatus[]; to: LabStatus; roles: Role[] }> = {
    submit: { from: ["draft", "rejected"], to: "pending_approval", roles: ["teacher", "admin"] },
    approve: { from: ["draft", "pending_approval"], to: "approved", roles: ["admin"] },
    reject: { from: ["pending_approval"], to: "rejected", roles: ["admin"] },
  };

  const matrix = LAB_STATUSES.flatMap((status) =>
    ACTIONS.flatMap((action) => ROLES.map((role) => [status, action, role] as [LabStatus, LabAction, Role])),
  );

  it("covers all 36 combinations", () => {
    expect(matrix).toHaveLength(36);
  });

  it.each(matrix)("%s --%s--> as %s", (status, action, role) => {
    const rule = LEGAL[action];
    const r = nextStatus(status, action, role);
    if (!rule.roles.includes(role)) expect(r).toEqual({ ok: false, code: "FORBIDDEN", detail: expect.any(String) });
    else if (!rule.from.includes(status))
      expect(r).toEqual({ ok: false, code: "INVALID_TRANSITION", detail: expect.any(String) });
    else expect(r).toEqual({ ok: true, status: rule.to });
  });

  it("submits a draft", () => {
    expect(nextStatus("draft", "submit", "teacher")).toEqual({ ok: true, status: "pending_approval" });
  });

  it("resubmits a rejected lab", () => {
    expect(nextStatus("rejected", "submit", "teacher")).toEqual({ ok: true, status: "pending_approval" });
  });

  it("lets an admin approve and reject a pending lab", () => {
    expect(nextStatus("pending_approval", "approve", "admin")).toEqual({ ok: true, status: "approved" });
    expect(nextStatus("pending_approval", "reject", "admin")).toEqual({ ok: true, status: "rejected" });
  });

  it("lets an admin approve a draft straight away (the seed's create → approve)", () => {
    expect(nextStatus("draft", "approve", "admin")).toEqual({ ok: true, status: "approved" });
  });

  it("explains an illegal approval in words", () => {
    expect(nextStatus("approved", "approve", "admin")).toEqual({
      ok: false,
      code: "INVALID_TRANSITION",
      detail: "Lab is approved; only a draft lab or a lab pending approval can be approved",
    });
    expect(nextStatus("draft", "reject", "admin")).toMatchObject({
      detail: "Lab is draft; only a lab pending approval can be rejected",
    });
    expect(nextStatus("rejected", "reject", "admin")).toMatchObject({
      detail: "Lab is rejected; only a lab pending approval can be rejected",
    });
  });

  it("explains an illegal submit in words", () => {
    expect(nextStatus("pending_approval", "submit", "teacher")).toMatchObject({
      code: "INVALID_TRANSITION",
      detail: "Lab is pending approval; only a draft or rejected lab can be submitted for approval",
    });
    expect(nextStatus("approved", "submit", "teacher")).toMatchObject({
      code: "INVALID_TRANSITION",
      detail: /^Lab is approved;/,
    });
  });

  it("checks the role before the state (403 rather than 409 for a teacher approving a draft)", () => {
    expect(nextStatus("draft", "approve", "teacher")).toEqual({
      ok: false,
      code: "FORBIDDEN",
      detail: "Only an admin can approve labs",
    });
    expect(nextStatus("approved", "reject", "teacher")).toEqual({
      ok: false,
      code: "FORBIDDEN",
      detail: "Only an admin can reject labs",
    });
    expect(nextStatus("draft", "submit", "student")).toMatchObject({
      code: "FORBIDDEN",
      detail: /teachers and admins/,
    });
  });

  it("refuses unknown actions and statuses arriving at runtime", () => {
    expect(nextStatus("draft", "publish" as LabAction, "admin")).toMatchObject({
      ok: false,
      code: "INVALID_TRANSITION",
    });
    expect(nextStatus("draft", "toString" as LabAction, "admin")).toMatchObject({
      ok: false,
      code: "INVALID_TRANSITION",
    });
    expect(nextStatus("archived" as LabStatus, "approve", "admin")).toMatchObject({
      ok: false,
      code: "INVALID_TRANSITION",
      detail: /^Lab is archived;/,
    });
    expect(nextStatus("draft", "submit", "root" as Role)).toMatchObject({ ok: false, code: "FORBIDDEN" });
  });
});

describe("transitionPatch", () => {
  it("clears approval and reason on submit", () => {
    expect(transitionPatch("submit", 5)).toEqual({
      status: "pending_approval",
      approved_by: null,
      rejection_reason: null,
    });
  });

  it("records the approver and clears a stale reason on approve", () => {
    expect(transitionPatch("approve", 1)).toEqual({ status: "approved", approved_by: 1, rejection_reason: null });
  });

  it("records the reason on reject", () => {
    expect(transitionPatch("reject", 1, "Image too large")).toEqual({
      status: "rejected",
      approved_by: null,
      rejection_reason: "Image too large",
    });
    expect(transitionPatch("reject", 1).rejection_reason).toBeNull();
  });

  it("agrees with nextStatus on the target status", () => {
    expect(transitionPatch("submit", 1).status).toBe(
      (nextStatus("draft", "submit", "teacher") as { status: LabStatus }).status,
    );
    expect(transitionPatch("approve", 1).status).toBe(
      (nextStatus("pending_approval", "approve", "admin") as { status: LabStatus }).status,
    );
    expect(transitionPatch("reject", 1).status).toBe(
      (nextStatus("pending_approval", "reject", "admin") as { status: LabStatus }).status,
    );
  });
});

describe("parseRejectionReason", () => {
  it("trims and returns the reason", () => {
    expect(parseRejectionReason({ reason: "  too big  " })).toEqual({ ok: true, value: "too big" });
  });

  it.each([
    [{}, ["body", "reason"], "missing"],
    [{ reason: 3 }, ["body", "reason"], "string_type"],
    [{ reason: null }, ["body", "reason"], "string_type"],
    [{ reason: "   " }, ["body", "reason"], "string_too_short"],
    [{ reason: "x".repeat(REJECTION_REASON_MAX + 1) }, ["body", "reason"], "string_too_long"],
    [null, ["body"], "dict_type"],
    ["no", ["body"], "dict_type"],
    [["reason"], ["body"], "dict_type"],
  ])("rejects %j", (body, loc, type) => {
    expect(parseRejectionReason(body)).toEqual({ ok: false, problems: [{ loc, msg: expect.any(String), type }] });
  });

  it("accepts a reason of exactly the maximum length", () => {
    expect(parseRejectionReason({ reason: "x".repeat(REJECTION_REASON_MAX) }).ok).toBe(true);
  });
});

/* ───────────────────────────── re-approval on edit ───────────────────────────── */

describe("statusAfterEdit", () => {
  const base = (status: LabStatus): LabApprovalState => ({
    status,
    approved_by: status === "approved" ? 1 : null,
    docker_image: "python:3.12-slim",
    resources: { cpu: "500m", memory: "512Mi", storage: "1Gi" },
    network_isolated: true,
  });

  const SENSITIVE: [string, LabChanges][] = [
    ["docker_image", { docker_image: "python:3.13-slim" }],
    ["resources", { resources: { cpu: "1", memory: "512Mi", storage: "1Gi" } }],
    ["network_isolated", { network_isolated: false }],
  ];
  const HARMLESS: [string, LabChanges][] = [
    ["name", { name: "New name" }],
    ["description", { description: "New text" }],
    ["description cleared", { description: null }],
    ["max_lifetime_s", { max_lifetime_s: 7200 }],
    ["max_lifetime_s cleared", { max_lifetime_s: null }],
    ["nothing", {}],
  ];

  describe.each(SENSITIVE)("a change to %s", (field, changes) => {
    it("by a teacher sends an approved lab back to pending_approval and clears approved_by", () => {
      expect(statusAfterEdit(base("approved"), changes, "teacher")).toEqual({
        ok: true,
        status: "pending_approval",
        approved_by: null,
        reapproval_required: true,
        changed: [field],
      });
    });

    it("by an admin keeps the lab approved (and its approver)", () => {
      expect(statusAfterEdit(base("approved"), changes, "admin")).toEqual({
        ok: true,
        status: "approved",
        approved_by: 1,
        reapproval_required: false,
        changed: [field],
      });
    });

    it.each(["draft", "pending_approval", "rejected"] as LabStatus[])(
      "by a teacher keeps a %s lab as it is",
      (status) => {
        expect(statusAfterEdit(base(status), changes, "teacher")).toMatchObject({
          ok: true,
          status,
          approved_by: null,
          reapproval_required: false,
        });
      },
    );

    it.each(["draft", "pending_approval", "rejected"] as LabStatus[])(
      "by an admin keeps a %s lab as it is",
      (status) => {
        expect(statusAfterEdit(base(status), changes, "admin")).toMatchObject({
          ok: true,
          status,
          reapproval_required: false,
        });
      },
    );

    it("by a student is forbidden", () => {
      expect(statusAfterEdit(base("approved"), changes, "student")).toEqual({
        ok: false,
        code: "FORBIDDEN",
        detail: "Students cannot edit labs",
      });
    });
  });

  describe.each(HARMLESS)("a change to %s alone", (_field, changes) => {
    it.each(["teacher", "admin"] as Role[])("by %s keeps an approved lab approved", (role) => {
      expect(statusAfterEdit(base("approved"), changes, role)).toEqual({
        ok: true,
        status: "approved",
        approved_by: 1,
        reapproval_required: false,
        changed: [],
      });
    });

    it.each(LAB_STATUSES)("keeps a %s lab in its status", (status) => {
      expect(statusAfterEdit(base(status), changes, "teacher")).toMatchObject({ ok: true, status });
    });
  });

  it("counts only real changes: a PUT repeating the stored values keeps the approval", () => {
    const lab = base("approved");
    const same: LabChanges = {
      name: "Renamed",
      docker_image: lab.docker_image,
      resources: { ...lab.resources },
      network_isolated: lab.network_isolated,
    };
    expect(statusAfterEdit(lab, same, "teacher")).toMatchObject({ status: "approved", approved_by: 1, changed: [] });
  });

  it("compares resources by value: 0.5 CPU is 500m, 1024Mi is 1Gi", () => {
    const r = statusAfterEdit(
      base("approved"),
      { resources: { cpu: "0.5", memory: "0.5Gi", storage: "1024Mi" } },
      "teacher",
    );
    expect(r).toMatchObject({ status: "approved", changed: [] });
  });

  it.each([
    ["cpu", { cpu: "501m", memory: "512Mi", storage: "1Gi" }],
    ["memory", { cpu: "500m", memory: "513Mi", storage: "1Gi" }],
    ["storage", { cpu: "500m", memory: "512Mi", storage: "2Gi" }],
    ["memory 512M vs 512Mi", { cpu: "500m", memory: "512M", storage: "1Gi" }],
  ])("detects a change of %s inside resources", (_what, resources) => {
    expect(statusAfterEdit(base("approved"), { resources }, "teacher")).toMatchObject({
      status: "pending_approval",
      changed: ["resources"],
    });
  });

  it("compares the image as text: a different spelling of the same image is a change", () => {
    const r = statusAfterEdit(base("approved"), { docker_image: "docker.io/library/python:3.12-slim" }, "teacher");
    expect(r).toMatchObject({ status: "pending_approval", changed: ["docker_image"] });
  });

  it("lists every changed sensitive field", () => {
    const r = statusAfterEdit(
      base("approved"),
      {
        name: "x",
        docker_image: "node:22",
        network_isolated: false,
        resources: { cpu: "2", memory: "1Gi", storage: "1Gi" },
      },
      "teacher",
    );
    expect(r).toMatchObject({
      status: "pending_approval",
      approved_by: null,
      reapproval_required: true,
      changed: ["docker_image", "resources", "network_isolated"],
    });
  });

  it("treats network_isolated true → false and false → true alike", () => {
    const open = { ...base("approved"), network_isolated: false };
    expect(statusAfterEdit(open, { network_isolated: true }, "teacher")).toMatchObject({ status: "pending_approval" });
  });
});

describe("resourcesEqual", () => {
  it("is true for the same meaning and false otherwise", () => {
    expect(
      resourcesEqual(
        { cpu: "1", memory: "1Gi", storage: "1Gi" },
        { cpu: "1000m", memory: "1024Mi", storage: "1048576Ki" },
      ),
    ).toBe(true);
    expect(
      resourcesEqual({ cpu: "1", memory: "1Gi", storage: "1Gi" }, { cpu: "1", memory: "1G", storage: "1Gi" }),
    ).toBe(false);
  });

  it("falls back to text for unparsable values", () => {
    expect(
      resourcesEqual({ cpu: "junk", memory: "1Gi", storage: "1Gi" }, { cpu: "junk", memory: "1Gi", storage: "1Gi" }),
    ).toBe(true);
    expect(
      resourcesEqual({ cpu: "junk", memory: "1Gi", storage: "1Gi" }, { cpu: "1", memory: "1Gi", storage: "1Gi" }),
    ).toBe(false);
  });
});

/* ───────────────────────────── quantities ───────────────────────────── */

const value = (r: QuantityResult): number => {
  if (!r.ok) throw new Error(`expected ok, got ${r.msg}`);
  return r.value;
};
const failure = (r: QuantityResult): { msg: string; type: string } => {
  if (r.ok) throw new Error(`expected a failure, got ${r.value}`);
  return { msg: r.msg, type: r.type };
};

describe("parseCpu", () => {
  it.each([
    ["500m", 500],
    ["0.5", 500],
    ["1", 1000],
    ["2", 2000],
    ["1.5", 1500],
    ["1.1", 1100], // exact decimal arithmetic, no 1100.0000000000002
    ["0.1", 100],
    [".5", 500],
    ["1.", 1000],
    ["+1", 1000],
    ["0500m", 500],
    ["1m", 1],
    ["250m", 250],
    ["5e-1", 500],
    ["5E-1", 500],
    ["1e1", 10_000],
    ["2e+1", 20_000],
    ["0.064k", 64_000],
    ["64", 64_000],
    ["64000m", 64_000],
    ["0.0001", 1], // below 1m rounds up, as Quantity.MilliValue() does
    ["1500.5m", 1501],
  ])("%j → %d millicores", (q, expected) => {
    expect(value(parseCpu(q))).toBe(expected);
  });

  it.each([
    ["", "value_error"],
    ["-1", "greater_than"],
    ["-500m", "greater_than"],
    ["0", "greater_than"],
    ["0m", "greater_than"],
    ["0.0", "greater_than"],
    ["-0", "greater_than"],
    ["1.2.3", "value_error"],
    ["1..5", "value_error"],
    [".", "value_error"],
    ["m", "value_error"],
    ["abc", "value_error"],
    ["1 ", "value_error"],
    [" 1", "value_error"],
    ["1 m", "value_error"],
    ["1K", "value_error"], // only lowercase k is kilo
    ["1mi", "value_error"],
    ["1e", "value_error"],
    ["e3", "value_error"],
    ["1e3.5", "value_error"],
    ["1e31", "value_error"], // exponent out of range
    ["1e-31", "value_error"],
    ["0x10", "value_error"],
    ["1,5", "value_error"],
    ["1\n", "value_error"],
    ["500Mi", "value_error"],
    ["1Ki", "value_error"],
    ["64.001", "less_than_equal"],
    ["65", "less_than_equal"],
    ["64001m", "less_than_equal"],
    ["1k", "less_than_equal"],
    ["1E", "less_than_equal"], // exa
    ["1e30", "less_than_equal"],
  ])("rejects %j (%s)", (q, type) => {
    expect(failure(parseCpu(q)).type).toBe(type);
  });

  it("accepts exactly the ceiling and the floor", () => {
    expect(value(parseCpu(`${CPU_MAX_MILLI}m`))).toBe(CPU_MAX_MILLI);
    expect(value(parseCpu("1m"))).toBe(1);
  });

  it("says why binary suffixes are wrong for CPU", () => {
    expect(failure(parseCpu("500Mi")).msg).toMatch(/decimal units.*'Mi' are for memory/);
  });

  it("gives readable messages", () => {
    expect(failure(parseCpu("abc")).msg).toBe("'abc' is not a valid Kubernetes cpu quantity (e.g. 500m, 0.5, 2)");
    expect(failure(parseCpu("0")).msg).toBe("CPU must be greater than 0");
    expect(failure(parseCpu("65")).msg).toBe("CPU must be at most 64 cores (64000m)");
  });

  it.each([[1], [0.5], [null], [undefined], [{}], [["1"]]])("rejects non-string %j", (q) => {
    expect(failure(parseCpu(q))).toEqual({ msg: "Input should be a valid string", type: "string_type" });
  });

  it("refuses absurdly long input without doing big arithmetic", () => {
    expect(failure(parseCpu("1".repeat(65))).msg).toMatch(/too long/);
    expect(value(parseCpu(`0.${"0".repeat(60)}1`))).toBe(1); // 63 chars: parsed exactly, rounds up to 1m
  });
});

describe("parseMemory", () => {
  it.each([
    ["512Mi", 512 * 1024 ** 2],
    ["1Gi", 1024 ** 3],
    ["1G", 1e9],
    ["1e9", 1e9],
    ["1E9", 1e9],
    ["1500M", 1.5e9],
    ["1.5Gi", 1.5 * 1024 ** 3],
    ["0.5Gi", 512 * 1024 ** 2],
    ["4Mi", MEMORY_MIN_BYTES],
    ["4096Ki", MEMORY_MIN_BYTES],
    ["4194304", MEMORY_MIN_BYTES],
    ["4194303.1", MEMORY_MIN_BYTES], // fractional bytes round up
    ["64Gi", MEMORY_MAX_BYTES],
    ["68719476736", MEMORY_MAX_BYTES],
    ["0.0625Ti", 64 * 1024 ** 3],
    ["128974848", 128974848],
    ["129e6", 129e6],
    ["123Mi", 123 * 1024 ** 2],
  ])("%j → %d bytes", (q, expected) => {
    expect(value(parseMemory(q))).toBe(expected);
  });

  it.each([
    ["", "value_error"],
    ["512m", "value_error"], // milli-bytes: a typo for Mi
    ["512MB", "value_error"],
    ["1KB", "value_error"],
    ["1K", "value_error"],
    ["1kb", "value_error"],
    ["1gi", "value_error"],
    ["1 Gi", "value_error"],
    ["Gi", "value_error"],
    ["1.2.3Gi", "value_error"],
    ["5k", "greater_than_equal"],
    ["-1Gi", "greater_than"],
    ["0", "greater_than"],
    ["0Gi", "greater_than"],
    ["1Mi", "greater_than_equal"],
    ["4194303", "greater_than_equal"],
    ["1", "greater_than_equal"],
    ["65Gi", "less_than_equal"],
    ["64.1Gi", "less_than_equal"],
    ["68719476737", "less_than_equal"],
    ["1Ti", "less_than_equal"],
    ["1Pi", "less_than_equal"],
    ["1Ei", "less_than_equal"],
    ["1P", "less_than_equal"],
    ["1e20", "less_than_equal"],
  ])("rejects %j (%s)", (q, type) => {
    expect(failure(parseMemory(q)).type).toBe(type);
  });

  it("explains the milli-byte mistake", () => {
    expect(failure(parseMemory("512m")).msg).toMatch(/thousandths of a byte; use Mi/);
  });

  it("names the bounds", () => {
    expect(failure(parseMemory("65Gi")).msg).toBe("Memory must be at most 64Gi");
    expect(failure(parseMemory("1Mi")).msg).toBe("Memory must be at least 4Mi");
  });
});

describe("parseStorage", () => {
  it.each([
    ["1Gi", 1024 ** 3],
    ["10G", 10e9],
    ["1Mi", STORAGE_MIN_BYTES],
    ["1Ti", STORAGE_MAX_BYTES],
    ["1024Gi", STORAGE_MAX_BYTES],
    ["1099511627776", STORAGE_MAX_BYTES],
    ["500Mi", 500 * 1024 ** 2],
  ])("%j → %d bytes", (q, expected) => {
    expect(value(parseStorage(q))).toBe(expected);
  });

  it.each([
    ["1.5Ti", "less_than_equal"],
    ["1025Gi", "less_than_equal"],
    ["1099511627777", "less_than_equal"],
    ["2T", "less_than_equal"],
    ["1Ki", "greater_than_equal"],
    ["0", "greater_than"],
    ["1m", "value_error"],
    ["1GB", "value_error"],
  ])("rejects %j (%s)", (q, type) => {
    expect(failure(parseStorage(q)).type).toBe(type);
  });

  it("names the bounds", () => {
    expect(failure(parseStorage("2Ti")).msg).toBe("Storage must be at most 1Ti");
    expect(failure(parseStorage("1Ki")).msg).toBe("Storage must be at least 1Mi");
  });
});

describe("parseResources / validateResources", () => {
  const good = { cpu: "500m", memory: "512Mi", storage: "1Gi" };

  it("accepts the documented example and returns the parsed values", () => {
    expect(parseResources(good)).toEqual({
      ok: true,
      value: good,
      parsed: { cpu_millicores: 500, memory_bytes: 512 * 1024 ** 2, storage_bytes: 1024 ** 3 },
    });
    expect(validateResources(good)).toEqual([]);
  });

  it("returns a fresh object holding only the three keys", () => {
    const r = parseResources(good);
    expect(r.ok && r.value).not.toBe(good);
  });

  it.each([[null], ["500m"], [["500m"]], [42], [undefined]])("rejects a non-object %j", (v) => {
    expect(validateResources(v)).toEqual([
      { loc: ["body", "resources"], msg: "Input should be a valid dictionary", type: "dict_type" },
    ]);
  });

  it("requires every key", () => {
    expect(validateResources({})).toEqual([
      { loc: ["body", "resources", "cpu"], msg: "Field required", type: "missing" },
      { loc: ["body", "resources", "memory"], msg: "Field required", type: "missing" },
      { loc: ["body", "resources", "storage"], msg: "Field required", type: "missing" },
    ]);
    expect(validateResources({ cpu: "1", memory: "1Gi" })).toEqual([
      { loc: ["body", "resources", "storage"], msg: "Field required", type: "missing" },
    ]);
  });

  it("requires strings (a bare number is not accepted)", () => {
    expect(validateResources({ ...good, cpu: 1 })).toEqual([
      { loc: ["body", "resources", "cpu"], msg: "Input should be a valid string", type: "string_type" },
    ]);
    expect(validateResources({ ...good, memory: null })[0]).toMatchObject({
      loc: ["body", "resources", "memory"],
      type: "string_type",
    });
  });

  it("rejects unknown keys", () => {
    expect(validateResources({ ...good, gpu: "1" })).toEqual([
      { loc: ["body", "resources", "gpu"], msg: "Extra inputs are not permitted", type: "extra_forbidden" },
    ]);
    const polluted = JSON.parse('{"cpu":"1","memory":"1Gi","storage":"1Gi","__proto__":{"x":1}}') as unknown;
    expect(validateResources(polluted)).toEqual([
      { loc: ["body", "resources", "__proto__"], msg: "Extra inputs are not permitted", type: "extra_forbidden" },
    ]);
  });

  it("reports each bad quantity at its own loc", () => {
    expect(validateResources({ cpu: "500Mi", memory: "512m", storage: "2Ti", extra: 1 })).toEqual([
      {
        loc: ["body", "resources", "cpu"],
        msg: expect.stringContaining("CPU takes decimal units"),
        type: "value_error",
      },
      { loc: ["body", "resources", "memory"], msg: expect.stringContaining("thousandths"), type: "value_error" },
      { loc: ["body", "resources", "storage"], msg: "Storage must be at most 1Ti", type: "less_than_equal" },
      { loc: ["body", "resources", "extra"], msg: "Extra inputs are not permitted", type: "extra_forbidden" },
    ]);
  });

  it("takes a custom loc prefix", () => {
    expect(validateResources({ ...good, cpu: "0" }, ["body", "lab", "resources"])).toEqual([
      { loc: ["body", "lab", "resources", "cpu"], msg: "CPU must be greater than 0", type: "greater_than" },
    ]);
  });
});

/* ───────────────────────────── image references ───────────────────────────── */

const SHA256 = "a".repeat(32) + "0123456789abcdef".repeat(2);
const SHA384 = "b".repeat(96);
const SHA512 = "c".repeat(128);

describe("validateImageReference", () => {
  it.each([
    ["python:3.12-slim", { domain: undefined, path: "python", tag: "3.12-slim", digest: undefined }],
    [
      "registry.gitlab.com/autolabs/labs/python-basic:v1.0.0",
      { domain: "registry.gitlab.com", path: "autolabs/labs/python-basic", tag: "v1.0.0", digest: undefined },
    ],
    ["localhost:5000/x/y:tag", { domain: "localhost:5000", path: "x/y", tag: "tag", digest: undefined }],
    ["localhost/x", { domain: "localhost", path: "x", tag: undefined, digest: undefined }],
    [
      `ghcr.io/org/img@sha256:${SHA256}`,
      { domain: "ghcr.io", path: "org/img", tag: undefined, digest: `sha256:${SHA256}` },
    ],
    [`img:tag@sha256:${SHA256}`, { domain: undefined, path: "img", tag: "tag", digest: `sha256:${SHA256}` }],
    ["python", { domain: undefined, path: "python", tag: undefined, digest: undefined }],
    ["autolabs/python", { domain: undefined, path: "autolabs/python", tag: undefined, digest: undefined }],
    ["192.168.1.10:5000/team/img:1", { domain: "192.168.1.10:5000", path: "team/img", tag: "1", digest: undefined }],
    ["[::1]:5000/img:tag", { domain: "[::1]:5000", path: "img", tag: "tag", digest: undefined }],
    ["Registry.Example.COM/img", { domain: "Registry.Example.COM", path: "img", tag: undefined, digest: undefined }],
    ["reg.io:5000", { domain: undefined, path: "reg.io", tag: "5000", digest: undefined }], // docker reads it the same way
  ])("accepts %j", (ref, parts) => {
    expect(validateImageReference(ref)).toEqual({ ok: true, value: parts });
  });

  it.each([
    "docker.io/library/python:latest",
    "my_image",
    "a__b",
    "a--b",
    "a-b-c",
    "a.b",
    "a.b/c",
    "a/b/c/d/e:1",
    "img:TAG_1.0-rc",
    "img:_x",
    "img:v1.0.0-Alpha",
    `img:${"t".repeat(128)}`,
    `img@sha384:${SHA384}`,
    `img@sha512:${SHA512}`,
    "0/1:2",
    "my-registry.local:443/a/b",
  ])("accepts %j", (ref) => {
    expect(validateImageReference(ref).ok).toBe(true);
  });

  it("accepts a reference of exactly 255 characters", () => {
    expect(validateImageReference("a".repeat(IMAGE_REFERENCE_MAX_LENGTH)).ok).toBe(true);
  });

  it.each([
    ["", /must not be empty/],
    [" python", /whitespace/],
    ["py thon", /whitespace/],
    ["python\n", /whitespace/],
    ["python\t:3", /whitespace/],
    ["Python:3.12", /repository name must be lowercase/],
    ["autolabs/Python", /repository name must be lowercase/],
    ["Autolabs/python", /repository name must be lowercase/], // not a registry host: no dot, not localhost
    ["registry.io/Org/img", /repository name must be lowercase/],
    ["image:", /tag must not be empty/],
    [":tag", /repository name must not be empty/],
    ["a//b", /empty components/],
    ["/a", /empty components/],
    ["a/", /empty components/],
    [`img:${"t".repeat(129)}`, /at most 128/],
    ["img:-tag", /invalid tag/],
    ["img:.tag", /invalid tag/],
    ["img:t+g", /invalid tag/],
    ["img:t/ag", /invalid registry host/],
    ["img:a:b", /invalid tag/],
    ["-img", /invalid repository path component/],
    ["img-", /invalid repository path component/],
    ["_img", /invalid repository path component/],
    ["a_-b", /invalid repository path component/],
    ["a___b", /invalid repository path component/],
    ["a..b", /invalid repository path component/],
    ["a/b$c", /invalid repository path component/],
    ["localhost:abc/x", /invalid registry host/],
    ["localhost:/x", /invalid registry host/],
    ["-bad.host/img", /invalid registry host/],
    ["host-.com/img", /invalid registry host/],
    ["bad_host.com/img", /invalid registry host/],
    ["[::g]:5000/img", /invalid registry host/],
    ["img@", /digest must look like/],
    ["img@sha256", /digest must look like/],
    ["img@sha256:abc", /64 lowercase hex/],
    [`img@sha256:${SHA256.toUpperCase()}`, /64 lowercase hex/],
    [`img@sha256:${SHA256}0`, /64 lowercase hex/],
    [`img@sha256:${SHA256.slice(1)}g`, /64 lowercase hex/],
    [`img@md5:${"a".repeat(32)}`, /unsupported digest algorithm 'md5'/],
    [`img@SHA256:${SHA256}`, /unsupported digest algorithm/],
    [`img@sha256:${SHA256}@sha256:${SHA256}`, /64 lowercase hex/],
    [`@sha256:${SHA256}`, /repository name must not be empty/],
    ["a".repeat(IMAGE_REFERENCE_MAX_LENGTH + 1), /at most 255 characters/],
  ])("rejects %j", (ref, why) => {
    const r = validateImageReference(ref);
    expect(r.ok).toBe(false);
    expect(!r.ok && r.msg).toMatch(why);
  });

  it("rejects a long name with a digest even though each part is fine", () => {
    const name = `registry.example.com/${"a".repeat(180)}`;
    expect(validateImageReference(name).ok).toBe(true);
    expect(validateImageReference(`${name}@sha256:${SHA256}`).ok).toBe(false);
  });

  it.each([[null], [undefined], [42], [{}], [["python"]]])("rejects non-string %j", (v) => {
    expect(validateImageReference(v)).toEqual({ ok: false, msg: "Input should be a valid string" });
  });
});

describe("dockerImageProblems", () => {
  it("is empty for a valid image", () => {
    expect(dockerImageProblems("python:3.12-slim")).toEqual([]);
  });

  it("reports at body.docker_image", () => {
    expect(dockerImageProblems("Python")).toEqual([
      {
        loc: ["body", "docker_image"],
        msg: "Invalid image reference: repository name must be lowercase",
        type: "value_error",
      },
    ]);
    expect(dockerImageProblems(7)).toEqual([
      { loc: ["body", "docker_image"], msg: "Input should be a valid string", type: "string_type" },
    ]);
    expect(dockerImageProblems(undefined, ["body", "image"])[0]?.loc).toEqual(["body", "image"]);
  });
});

/* ───────────────────────────── status in a PUT ───────────────────────────── */

describe("putStatus", () => {
  it("absent, the status read, or what the edit leaves: no change", () => {
    expect(putStatus("approved", "pending_approval", "approved", "teacher")).toEqual({ ok: true, submit: false });
    expect(putStatus("draft", "draft", undefined, "teacher")).toEqual({ ok: true, submit: false });
    expect(putStatus("approved", "approved", "approved", "teacher")).toEqual({ ok: true, submit: false });
    expect(putStatus("pending_approval", "pending_approval", "pending_approval", "teacher")).toEqual({
      ok: true,
      submit: false,
    });
  });

  it("pending_approval from draft or rejected is a submit", () => {
    expect(putStatus("draft", "draft", "pending_approval", "teacher")).toEqual({ ok: true, submit: true });
    expect(putStatus("rejected", "rejected", "pending_approval", "admin")).toEqual({ ok: true, submit: true });
  });

  it("pending_approval from approved is the submit's own 409", () => {
    expect(putStatus("approved", "approved", "pending_approval", "teacher")).toMatchObject({
      ok: false,
      code: "INVALID_TRANSITION",
      detail: /^Lab is approved;/,
    });
  });

  it("any other lab status is a 409 naming the action; a student never submits (403)", () => {
    expect(putStatus("pending_approval", "pending_approval", "approved", "teacher")).toEqual({
      ok: false,
      code: "INVALID_TRANSITION",
      detail: "A PUT cannot make a pending approval lab approved; use POST /labs/{id}/approve",
    });
    expect(putStatus("draft", "draft", "rejected", "admin")).toMatchObject({
      code: "INVALID_TRANSITION",
      detail: /reject$/,
    });
    expect(putStatus("rejected", "rejected", "draft", "teacher")).toMatchObject({ code: "INVALID_TRANSITION" });
    expect(putStatus("draft", "draft", "pending_approval", "student")).toMatchObject({ code: "FORBIDDEN" });
  });

  it("not a lab status: 422 at body.status", () => {
    for (const bad of ["running", "", null, 3, ["draft"], "toString"]) {
      expect(putStatus("draft", "draft", bad, "teacher")).toEqual({
        ok: false,
        code: "INVALID",
        problems: [
          {
            loc: ["body", "status"],
            msg: "Input should be 'draft', 'pending_approval', 'approved' or 'rejected'",
            type: "enum",
          },
        ],
      });
    }
  });
});

/* ───────────────────────────── list spec ───────────────────────────── */

describe("LAB_LIST_SPEC", () => {
  it("parses the design's example query", () => {
    const r = parseListQuery({ status: "approved", course_id: "123", sort: "-created_at" }, LAB_LIST_SPEC);
    expect(r).toEqual({
      ok: true,
      value: {
        offset: 0,
        limit: 50,
        sort: { field: "created_at", direction: "DESC" },
        filters: { status: "approved", course_id: 123 },
      },
    });
  });

  it("offers exactly the lab statuses as the status filter", () => {
    const r = parseListQuery({ status: "running" }, LAB_LIST_SPEC);
    expect(!r.ok && r.problems[0]?.msg).toBe("Input should be 'draft', 'pending_approval', 'approved' or 'rejected'");
  });
});

describe("the API document's grammars (JSON Schema patterns) agree with the validators", () => {
  const image = new RegExp(IMAGE_REFERENCE_PATTERN, "u");
  it.each([
    "python:3.12-slim",
    "registry.gitlab.com/autolabs/labs/python-basic:v1.0.0",
    "localhost:5000/x/y:tag",
    "localhost/x",
    `ghcr.io/org/img@sha256:${SHA256}`,
    `img:tag@sha256:${SHA256}`,
    "autolabs/python",
    "192.168.1.10:5000/team/img:1",
    "[::1]:5000/img:tag",
    "Registry.Example.COM/img",
    "reg.io:5000",
    "a__b",
    "a--b",
    "a.b/c",
    "img:_x",
    `img@sha384:${SHA384}`,
    `img@sha512:${SHA512}`,
    "0/1:2",
    "my-registry.local:443/a/b",
  ])("the image pattern accepts %j, as the validator does", (ref) => {
    expect(validateImageReference(ref).ok).toBe(true);
    expect(image.test(ref)).toBe(true);
  });

  it.each([
    "",
    " python",
    "Python:3.12",
    "Autolabs/python",
    "registry.io/Org/img",
    "image:",
    ":tag",
    "a//b",
    "img:-tag",
    "-img",
    "a..b",
    "localhost:abc/x",
    "img@sha256:abc",
    `img@md5:${"a".repeat(32)}`,
  ])("the image pattern refuses %j, as the validator does", (ref) => {
    expect(validateImageReference(ref).ok).toBe(false);
    expect(image.test(ref)).toBe(false);
  });

  const props = RESOURCES_SCHEMA.properties as Record<"cpu" | "memory" | "storage", { pattern: string }>;
  const cpu = new RegExp(props.cpu.pattern, "u");
  const memory = new RegExp(props.memory.pattern, "u");
  it.each(["500m", "0.5", "2", "1e-1", "+1", ".5", "2e0"])("the cpu pattern accepts %j, as parseCpu does", (q) => {
    expect(parseCpu(q).ok).toBe(true);
    expect(cpu.test(q)).toBe(true);
  });
  it.each(["512Mi", "1Gi", "1500M", "1e9", "4Mi"])("the memory pattern accepts %j, as parseMemory does", (q) => {
    expect(parseMemory(q).ok).toBe(true);
    expect(memory.test(q)).toBe(true);
  });
  it.each([
    ["cpu", "500Mi"],
    ["cpu", "1K"],
    ["cpu", "abc"],
    ["memory", "512m"],
    ["memory", "1mi"],
    ["memory", "1 Gi"],
  ])("the %s pattern refuses %j, as the parser does", (kind, q) => {
    expect((kind === "cpu" ? parseCpu : parseMemory)(q).ok).toBe(false);
    expect((kind === "cpu" ? cpu : memory).test(q)).toBe(false);
  });
});
