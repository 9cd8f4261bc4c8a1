/**
 * Labs through HTTP (DESIGN "HTTP API: labs", "Access rules"): create as draft, the approval workflow
 * (submit, approve, reject with a reason, resubmit), re-approval after a non-admin change of what runs,
 * Kubernetes quantity and image validation, deletion guarded by active instances, mass assignment, and
 * who sees which lab. Every refused call is followed by a re-read proving it changed nothing.
 *
 * Accounts: the IdP's demo admin, teacher, student, student2; teacher2 and student3 are forged with the
 * IdP's key (see test/support/http-api.ts).
 */
import { startTestPlatform, type TestPlatform } from "../support/platform";
import { checkedApi, fixtures, locs, RESOURCES, type Api, type Fixtures, type Ids } from "../support/http-api";
import { ifAssigned } from "../support/cleanup";

let p: TestPlatform;
let api: Api;
let f: Fixtures;
let ids: Ids;

beforeAll(async () => {
  p = await startTestPlatform({ SERVICES: "api-gateway,auth,courses,labs" });
  api = checkedApi(p);
  f = await fixtures(p, api);
  ids = f.ids;
});
afterAll(async () => {
  await ifAssigned(p)?.stop();
});

interface Lab {
  id: number;
  name: string;
  description: string;
  docker_image: string;
  resources: { cpu: string; memory: string; storage: string };
  network_isolated: boolean;
  max_lifetime_s: number | null;
  status: string;
  rejection_reason: string | null;
  created_by: number;
  approved_by: number | null;
  created_at: string;
  updated_at: string;
}
interface Page<T> {
  items: T[];
  total: number;
  offset: number;
  limit: number;
}

const LAB_KEYS = [
  "approved_by",
  "created_at",
  "created_by",
  "description",
  "docker_image",
  "id",
  "max_lifetime_s",
  "name",
  "network_isolated",
  "rejection_reason",
  "resources",
  "status",
  "updated_at",
];
const IMAGE = "registry.autolabs.local/labs/python:3.12";
const DIGEST = "a".repeat(64);

/** The lab row as the database has it now. */
async function snapshot(id: number): Promise<string> {
  return JSON.stringify(await f.row("labs", id));
}
const statusOf = async (id: number) => ((await f.row("labs", id)) as { status: string }).status;

async function pendingLab(as: string, extra: Record<string, unknown> = {}): Promise<Lab> {
  const lab = await f.lab(as, extra);
  const res = await api("POST", `/labs/${lab.id}/submit`, { as });
  expect(res.status).toBe(200);
  return res.body as Lab;
}
async function rejectedLab(as: string): Promise<Lab> {
  const lab = await pendingLab(as);
  const res = await api("POST", `/labs/${lab.id}/reject`, { as: "admin", body: { reason: "Pin the image tag" } });
  expect(res.status).toBe(200);
  return res.body as Lab;
}
const approvedLab = async (as: string, extra: Record<string, unknown> = {}) =>
  (await f.approvedLab(as, extra)) as unknown as Lab;
const draftLab = async (as: string, extra: Record<string, unknown> = {}) => (await f.lab(as, extra)) as unknown as Lab;

describe("POST /labs", () => {
  it("a teacher creates a draft they own: 201, Location, the documented fields", async () => {
    const res = await api("POST", "/labs", {
      as: "teacher",
      body: {
        name: " Python basics ",
        description: "Intro",
        docker_image: IMAGE,
        resources: RESOURCES,
        network_isolated: true,
        max_lifetime_s: 3600,
      },
    });
    expect(res.status).toBe(201);
    const lab = res.body as Lab;
    expect(Object.keys(lab).sort()).toEqual(LAB_KEYS);
    expect(lab).toMatchObject({
      name: "Python basics",
      description: "Intro",
      docker_image: IMAGE,
      resources: RESOURCES,
      network_isolated: true,
      max_lifetime_s: 3600,
      status: "draft",
      rejection_reason: null,
      created_by: ids.teacher,
      approved_by: null,
    });
    expect(res.headers.get("location")).toBe(`/api/v1/labs/${lab.id}`);
    expect(await f.row("labs", lab.id)).toMatchObject({
      status: "draft",
      created_by: ids.teacher,
      docker_image: IMAGE,
    });
  });

  it("defaults: not isolated, no own lifetime, empty description; an admin's lab is a draft too", async () => {
    const res = await api("POST", "/labs", {
      as: "admin",
      body: { name: "Minimal", docker_image: "python", resources: RESOURCES },
    });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({
      status: "draft",
      created_by: ids.admin,
      network_isolated: false,
      max_lifetime_s: null,
      description: "",
    });
  });

  it("a student may not create a lab (403), nothing written", async () => {
    const before = await f.count("labs");
    const res = await api("POST", "/labs", {
      as: "student",
      body: { name: "Mine", docker_image: IMAGE, resources: RESOURCES },
    });
    expect(res.status).toBe(403);
    expect(await f.count("labs")).toBe(before);
  });

  it("status, created_by, approved_by, rejection_reason, id in the body never take effect", async () => {
    const res = await api("POST", "/labs", {
      as: "teacher",
      body: {
        name: "Sneaky",
        docker_image: IMAGE,
        resources: RESOURCES,
        id: 888888,
        status: "approved",
        created_by: ids.teacher2,
        approved_by: ids.admin,
        rejection_reason: "none",
        created_at: "2000-01-01T00:00:00Z",
      },
    });
    expect(res.status).toBe(201);
    const lab = res.body as Lab;
    expect(lab.id).not.toBe(888888);
    expect(lab).toMatchObject({ status: "draft", created_by: ids.teacher, approved_by: null, rejection_reason: null });
    expect(new Date(lab.created_at).getFullYear()).toBeGreaterThan(2020);
    expect(await f.row("labs", lab.id)).toMatchObject({
      status: "draft",
      created_by: ids.teacher,
      approved_by: null,
      rejection_reason: null,
    });
    expect(await f.row("labs", 888888)).toBeUndefined();
  });

  it.each<[string, Record<string, unknown>, string[]]>([
    ["missing name", { name: undefined }, ["body.name"]],
    ["empty name", { name: "  " }, ["body.name"]],
    ["missing image", { docker_image: undefined }, ["body.docker_image"]],
    ["missing resources", { resources: undefined }, ["body.resources"]],
    ["resources not an object", { resources: "500m/512Mi" }, ["body.resources"]],
    ["resources an array", { resources: ["500m"] }, ["body.resources"]],
    ["resources without memory", { resources: { cpu: "1", storage: "1Gi" } }, ["body.resources.memory"]],
    ["an unknown resource", { resources: { ...RESOURCES, gpu: "1" } }, ["body.resources.gpu"]],
    ["cpu in binary units", { resources: { ...RESOURCES, cpu: "500Mi" } }, ["body.resources.cpu"]],
    ["cpu zero", { resources: { ...RESOURCES, cpu: "0" } }, ["body.resources.cpu"]],
    ["cpu negative", { resources: { ...RESOURCES, cpu: "-1" } }, ["body.resources.cpu"]],
    ["cpu above 64 cores", { resources: { ...RESOURCES, cpu: "65" } }, ["body.resources.cpu"]],
    ["cpu garbage", { resources: { ...RESOURCES, cpu: "1.5.3" } }, ["body.resources.cpu"]],
    ["cpu a number", { resources: { ...RESOURCES, cpu: 1 } }, ["body.resources.cpu"]],
    ["cpu with a space", { resources: { ...RESOURCES, cpu: "500 m" } }, ["body.resources.cpu"]],
    ["memory in millibytes", { resources: { ...RESOURCES, memory: "512m" } }, ["body.resources.memory"]],
    ["memory with a wrong-case suffix", { resources: { ...RESOURCES, memory: "1K" } }, ["body.resources.memory"]],
    ["memory above 64Gi", { resources: { ...RESOURCES, memory: "65Gi" } }, ["body.resources.memory"]],
    ["memory below 4Mi", { resources: { ...RESOURCES, memory: "1Mi" } }, ["body.resources.memory"]],
    ["storage above 1Ti", { resources: { ...RESOURCES, storage: "2Ti" } }, ["body.resources.storage"]],
    ["storage empty", { resources: { ...RESOURCES, storage: "" } }, ["body.resources.storage"]],
    ["image upper case", { docker_image: "Python:3" }, ["body.docker_image"]],
    ["image empty tag", { docker_image: "python:" }, ["body.docker_image"]],
    ["image with whitespace", { docker_image: "python 3" }, ["body.docker_image"]],
    ["image empty", { docker_image: "" }, ["body.docker_image"]],
    ["image too long", { docker_image: `registry.local/${"a".repeat(300)}` }, ["body.docker_image"]],
    ["image short digest", { docker_image: "python@sha256:abc" }, ["body.docker_image"]],
    ["image unknown digest algorithm", { docker_image: `python@md5:${DIGEST}` }, ["body.docker_image"]],
    ["image empty path component", { docker_image: "registry.local:5000/labs//x" }, ["body.docker_image"]],
    ["image shell text", { docker_image: "python;rm -rf /" }, ["body.docker_image"]],
    ["image not a string", { docker_image: 5 }, ["body.docker_image"]],
    ["lifetime below a minute", { max_lifetime_s: 10 }, ["body.max_lifetime_s"]],
    ["lifetime above 30 days", { max_lifetime_s: 30 * 86400 + 1 }, ["body.max_lifetime_s"]],
    ["lifetime fractional", { max_lifetime_s: 3600.5 }, ["body.max_lifetime_s"]],
    ["network_isolated not a boolean", { network_isolated: "yes" }, ["body.network_isolated"]],
    [
      "several problems at once",
      { docker_image: "Bad Image", resources: { cpu: "x", memory: "512m", storage: "1Gi" } },
      ["body.docker_image", "body.resources.cpu", "body.resources.memory"],
    ],
  ])("%s → 422 at its loc, nothing written", async (_name, change, expected) => {
    const before = await f.count("labs");
    const all: Record<string, unknown> = { name: "Validated", docker_image: IMAGE, resources: RESOURCES, ...change };
    const body = Object.fromEntries(Object.entries(all).filter(([, v]) => v !== undefined));
    const res = await api("POST", "/labs", { as: "teacher", body });
    expect(res.status).toBe(422);
    expect(locs(res).sort()).toEqual([...expected].sort());
    expect(await f.count("labs")).toBe(before);
  });

  it.each<[string, Record<string, unknown>]>([
    ["half a core as a decimal", { resources: { cpu: "0.5", memory: "1G", storage: "10G" } }],
    ["millicores and exponent memory", { resources: { cpu: "1500m", memory: "1e9", storage: "1Gi" } }],
    ["whole cores, Mi and Ti", { resources: { cpu: "64", memory: "256Mi", storage: "1Ti" } }],
    ["a Docker Hub name without tag", { docker_image: "python" }],
    ["a tagged official image", { docker_image: "python:3.12-slim" }],
    ["a registry with a port", { docker_image: "localhost:5000/lab" }],
    ["a nested path and a digest", { docker_image: `registry.local:5000/a/b-c/d_e@sha256:${DIGEST}` }],
    ["tag and digest", { docker_image: `ghcr.io/org/lab:1.0@sha256:${DIGEST}` }],
    ["the shortest and the longest lifetime", { max_lifetime_s: 60 }],
  ])("valid: %s", async (_name, change) => {
    const res = await api("POST", "/labs", {
      as: "teacher",
      body: { name: "Valid", docker_image: IMAGE, resources: RESOURCES, ...change },
    });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject(change);
  });
});

describe("approval workflow", () => {
  it("draft → submit → pending_approval → approve → approved (by whom)", async () => {
    const lab = await draftLab("teacher");
    const submitted = await api("POST", `/labs/${lab.id}/submit`, { as: "teacher" });
    expect(submitted.status).toBe(200);
    expect(submitted.body).toMatchObject({ id: lab.id, status: "pending_approval", approved_by: null });
    const approved = await api("POST", `/labs/${lab.id}/approve`, { as: "admin" });
    expect(approved.status).toBe(200);
    expect(approved.body).toMatchObject({
      id: lab.id,
      status: "approved",
      approved_by: ids.admin,
      rejection_reason: null,
    });
    expect(await f.row("labs", lab.id)).toMatchObject({ status: "approved", approved_by: ids.admin });
  });

  it("approve and reject are for admins only: the creator and students get 403, nothing changes", async () => {
    const lab = await pendingLab("teacher");
    const state = await snapshot(lab.id);
    for (const as of ["teacher", "teacher2", "student"]) {
      expect((await api("POST", `/labs/${lab.id}/approve`, { as })).status).toBe(403);
      expect((await api("POST", `/labs/${lab.id}/reject`, { as, body: { reason: "no" } })).status).toBe(403);
    }
    expect(await snapshot(lab.id)).toBe(state);
    expect((await api("POST", "/labs/2000000000/approve", { as: "admin" })).status).toBe(404);
  });

  it("an admin approves a draft straight away (the seed's create → approve)", async () => {
    const lab = await draftLab("teacher");
    const approved = await api("POST", `/labs/${lab.id}/approve`, { as: "admin" });
    expect(approved.status).toBe(200);
    expect(approved.body).toMatchObject({ id: lab.id, status: "approved", approved_by: ids.admin });
    expect(await f.row("labs", lab.id)).toMatchObject({ status: "approved", approved_by: ids.admin });
  });

  it("a teacher's PUT {status: pending_approval} is a submit; other statuses are refused, nothing changes", async () => {
    const lab = await draftLab("teacher");
    const state = await snapshot(lab.id);
    const refused: [unknown, number][] = [
      ["approved", 409],
      ["rejected", 409],
      ["running", 422],
      [null, 422],
    ];
    for (const [status, code] of refused) {
      const res = await api("PUT", `/labs/${lab.id}`, { as: "teacher", body: { name: "Renamed", status } });
      expect([status, res.status]).toEqual([status, code]);
      expect(await snapshot(lab.id)).toBe(state);
    }
    // The status it already has is no change (a frontend PUTting the whole object back).
    const same = await api("PUT", `/labs/${lab.id}`, { as: "teacher", body: { status: "draft" } });
    expect(same.status).toBe(200);
    expect(same.body).toMatchObject({ status: "draft" });
    const submitted = await api("PUT", `/labs/${lab.id}`, {
      as: "teacher",
      body: { name: "Submitted by PUT", status: "pending_approval" },
    });
    expect(submitted.status).toBe(200);
    expect(submitted.body).toMatchObject({ name: "Submitted by PUT", status: "pending_approval", approved_by: null });
    expect(await f.row("labs", lab.id)).toMatchObject({ name: "Submitted by PUT", status: "pending_approval" });
    // Once approved, pending_approval by PUT is the submit's own 409; /submit stays.
    expect((await api("POST", `/labs/${lab.id}/approve`, { as: "admin" })).status).toBe(200);
    const again = await api("PUT", `/labs/${lab.id}`, { as: "teacher", body: { status: "pending_approval" } });
    expect(again.status).toBe(409);
    // A student cannot PUT at all.
    expect((await api("PUT", `/labs/${lab.id}`, { as: "student", body: { status: "pending_approval" } })).status).toBe(
      403,
    );
  });

  it("approving an approved or a rejected lab → 409, nothing changes", async () => {
    for (const lab of [await approvedLab("teacher"), await rejectedLab("teacher")]) {
      const state = await snapshot(lab.id);
      const res = await api("POST", `/labs/${lab.id}/approve`, { as: "admin" });
      expect(res.status).toBe(409);
      expect(typeof (res.body as { detail: string }).detail).toBe("string");
      expect(await snapshot(lab.id)).toBe(state);
    }
  });

  it("submitting a pending or an approved lab → 409, nothing changes", async () => {
    for (const lab of [await pendingLab("teacher"), await approvedLab("teacher")]) {
      const state = await snapshot(lab.id);
      expect((await api("POST", `/labs/${lab.id}/submit`, { as: "teacher" })).status).toBe(409);
      expect(await snapshot(lab.id)).toBe(state);
    }
  });

  it("reject needs a reason (422 at body.reason), then stores it trimmed", async () => {
    const lab = await pendingLab("teacher");
    const state = await snapshot(lab.id);
    for (const body of [
      undefined,
      {},
      { reason: "" },
      { reason: "   " },
      { reason: 42 },
      { reason: ["x"] },
      { reason: "r".repeat(2001) },
    ]) {
      const res = await api("POST", `/labs/${lab.id}/reject`, { as: "admin", body });
      expect(res.status).toBe(422);
      expect(locs(res)).toEqual(["body.reason"]);
    }
    expect(await snapshot(lab.id)).toBe(state);
    const res = await api("POST", `/labs/${lab.id}/reject`, {
      as: "admin",
      body: { reason: "  Use an image from our registry  " },
    });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({
      status: "rejected",
      rejection_reason: "Use an image from our registry",
      approved_by: null,
    });
    expect(await f.row("labs", lab.id)).toMatchObject({
      status: "rejected",
      rejection_reason: "Use an image from our registry",
    });
  });

  it("rejecting a draft, an approved or a rejected lab → 409, nothing changes", async () => {
    for (const lab of [await draftLab("teacher"), await approvedLab("teacher"), await rejectedLab("teacher")]) {
      const state = await snapshot(lab.id);
      expect((await api("POST", `/labs/${lab.id}/reject`, { as: "admin", body: { reason: "again" } })).status).toBe(
        409,
      );
      expect(await snapshot(lab.id)).toBe(state);
    }
  });

  it("a rejected lab is fixed and resubmitted (reason cleared), then approved", async () => {
    const lab = await rejectedLab("teacher");
    const fixed = await api("PUT", `/labs/${lab.id}`, {
      as: "teacher",
      body: { docker_image: "registry.autolabs.local/labs/python:3.12.1" },
    });
    expect(fixed.status).toBe(200);
    expect(fixed.body).toMatchObject({ status: "rejected", rejection_reason: "Pin the image tag" });
    const resubmitted = await api("POST", `/labs/${lab.id}/submit`, { as: "teacher" });
    expect(resubmitted.status).toBe(200);
    expect(resubmitted.body).toMatchObject({ status: "pending_approval", rejection_reason: null });
    const approved = await api("POST", `/labs/${lab.id}/approve`, { as: "admin" });
    expect(approved.body).toMatchObject({
      status: "approved",
      approved_by: ids.admin,
      docker_image: "registry.autolabs.local/labs/python:3.12.1",
    });
  });

  it("submit: another teacher gets 404 for an invisible lab and 403 for a visible one; a student 403; an admin may", async () => {
    const draft = await draftLab("teacher");
    const rejected = await rejectedLab("teacher");
    const approved = await approvedLab("teacher");
    for (const lab of [draft, rejected]) {
      const state = await snapshot(lab.id);
      expect((await api("POST", `/labs/${lab.id}/submit`, { as: "teacher2" })).status).toBe(404);
      expect((await api("POST", `/labs/${lab.id}/submit`, { as: "student" })).status).toBe(403);
      expect(await snapshot(lab.id)).toBe(state);
    }
    const state = await snapshot(approved.id);
    expect((await api("POST", `/labs/${approved.id}/submit`, { as: "teacher2" })).status).toBe(403);
    expect(await snapshot(approved.id)).toBe(state);
    const byAdmin = await api("POST", `/labs/${draft.id}/submit`, { as: "admin" });
    expect(byAdmin.status).toBe(200);
    expect(byAdmin.body).toMatchObject({ status: "pending_approval", created_by: ids.teacher });
  });
});

describe("PUT /labs/{id}: edits and re-approval", () => {
  it.each<[string, Record<string, unknown>]>([
    ["docker_image", { docker_image: "registry.autolabs.local/labs/python:3.13" }],
    ["resources", { resources: { ...RESOURCES, memory: "1Gi" } }],
    ["network_isolated", { network_isolated: true }],
  ])("the creator changing %s of an approved lab sends it back to pending_approval", async (_field, change) => {
    const lab = await approvedLab("teacher");
    const res = await api("PUT", `/labs/${lab.id}`, { as: "teacher", body: change });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ ...change, status: "pending_approval", approved_by: null });
    expect(await f.row("labs", lab.id)).toMatchObject({ ...change, status: "pending_approval", approved_by: null });
    // And it needs an admin again.
    expect((await api("POST", `/labs/${lab.id}/approve`, { as: "admin" })).body).toMatchObject({ status: "approved" });
  });

  it("name, description and lifetime changes keep an approved lab approved", async () => {
    const lab = await approvedLab("teacher");
    const res = await api("PUT", `/labs/${lab.id}`, {
      as: "teacher",
      body: { name: "Renamed", description: "Better words", max_lifetime_s: 7200 },
    });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({
      name: "Renamed",
      description: "Better words",
      max_lifetime_s: 7200,
      status: "approved",
      approved_by: ids.admin,
    });
    expect(await statusOf(lab.id)).toBe("approved");
  });

  it("repeating the stored values (or the same quantities spelled differently) keeps the approval", async () => {
    const lab = await approvedLab("teacher");
    const res = await api("PUT", `/labs/${lab.id}`, {
      as: "teacher",
      body: {
        docker_image: IMAGE,
        resources: { cpu: "0.5", memory: "512Mi", storage: "1024Mi" },
        network_isolated: false,
      },
    });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({ status: "approved", approved_by: ids.admin });
  });

  it("an admin's change of what runs keeps the lab approved and the approver", async () => {
    const lab = await approvedLab("teacher");
    const res = await api("PUT", `/labs/${lab.id}`, {
      as: "admin",
      body: {
        docker_image: "registry.autolabs.local/labs/python:3.14",
        resources: { cpu: "2", memory: "2Gi", storage: "5Gi" },
        network_isolated: true,
      },
    });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({
      status: "approved",
      approved_by: ids.admin,
      docker_image: "registry.autolabs.local/labs/python:3.14",
      created_by: ids.teacher,
    });
  });

  it("edits keep draft, pending and rejected labs where they are", async () => {
    for (const lab of [await draftLab("teacher"), await pendingLab("teacher"), await rejectedLab("teacher")]) {
      const res = await api("PUT", `/labs/${lab.id}`, {
        as: "teacher",
        body: { docker_image: "python:3.11", name: "Edited" },
      });
      expect(res.status).toBe(200);
      expect(res.body).toMatchObject({ status: lab.status, name: "Edited", docker_image: "python:3.11" });
    }
  });

  it("created_by, approved_by, rejection_reason and id in a PUT body never take effect; status is no shortcut", async () => {
    const draft = await draftLab("teacher");
    const other = await draftLab("teacher");
    const otherState = await snapshot(other.id);
    const state = await snapshot(draft.id);
    const shortcut = await api("PUT", `/labs/${draft.id}`, { as: "teacher", body: { status: "approved" } });
    expect(shortcut.status).toBe(409);
    expect(await snapshot(draft.id)).toBe(state);
    const res = await api("PUT", `/labs/${draft.id}`, {
      as: "teacher",
      body: {
        id: other.id,
        name: "Still a draft",
        status: "draft",
        created_by: ids.teacher2,
        approved_by: ids.admin,
        rejection_reason: "x",
        created_at: "2000-01-01T00:00:00Z",
      },
    });
    expect(res.status).toBe(200);
    expect(res.body).toMatchObject({
      id: draft.id,
      name: "Still a draft",
      status: "draft",
      created_by: ids.teacher,
      approved_by: null,
      rejection_reason: null,
    });
    expect(await f.row("labs", draft.id)).toMatchObject({
      status: "draft",
      created_by: ids.teacher,
      approved_by: null,
      rejection_reason: null,
    });
    expect(await snapshot(other.id)).toBe(otherState);

    const approved = await approvedLab("teacher");
    const keep = await api("PUT", `/labs/${approved.id}`, {
      as: "teacher",
      body: { status: "approved", approved_by: ids.admin, docker_image: "python:3.9" },
    });
    expect(keep.body).toMatchObject({ status: "pending_approval", approved_by: null });
  });

  it("a partial PUT touches only the fields it names", async () => {
    const lab = await draftLab("teacher", { description: "Keep me", network_isolated: true, max_lifetime_s: 600 });
    const res = await api("PUT", `/labs/${lab.id}`, { as: "teacher", body: { name: "Only the name" } });
    expect(res.body).toMatchObject({
      name: "Only the name",
      description: "Keep me",
      docker_image: lab.docker_image,
      resources: lab.resources,
      network_isolated: true,
      max_lifetime_s: 600,
    });
  });

  it("an invalid PUT is 422 at its loc and changes nothing, not even the status of an approved lab", async () => {
    const lab = await approvedLab("teacher");
    const state = await snapshot(lab.id);
    for (const [body, loc] of [
      [{ docker_image: "NOT VALID" }, "body.docker_image"],
      [{ resources: { cpu: "1" } }, "body.resources.memory"],
      [{ resources: { ...RESOURCES, cpu: "999" } }, "body.resources.cpu"],
      [{ name: "" }, "body.name"],
      [{ max_lifetime_s: 1 }, "body.max_lifetime_s"],
    ] as const) {
      const res = await api("PUT", `/labs/${lab.id}`, { as: "teacher", body });
      expect(res.status).toBe(422);
      expect(locs(res)).toContain(loc);
    }
    expect(await snapshot(lab.id)).toBe(state);
  });

  it("another teacher: 403 on a visible (approved) lab, 404 on an invisible one; students 403; nothing changes", async () => {
    const course = await f.course("teacher");
    await f.assign(course, ids.student);
    const approved = await approvedLab("teacher");
    const draft = await draftLab("teacher");
    await f.attach(course, approved.id);
    for (const [lab, teacher2Status] of [
      [approved, 403],
      [draft, 404],
    ] as const) {
      const state = await snapshot(lab.id);
      expect((await api("PUT", `/labs/${lab.id}`, { as: "teacher2", body: { name: "hijack" } })).status).toBe(
        teacher2Status,
      );
      for (const as of ["student", "student2"]) {
        expect((await api("PUT", `/labs/${lab.id}`, { as, body: { name: "hijack" } })).status).toBe(403);
      }
      expect(await snapshot(lab.id)).toBe(state);
    }
  });
});

describe("DELETE /labs/{id}", () => {
  it("the creator deletes: 204, then 404; it leaves the courses it was attached to", async () => {
    const course = await f.course("teacher");
    await f.assign(course, ids.student);
    const lab = await approvedLab("teacher");
    await f.attach(course, lab.id);
    // Warm the cached course lab list first: the deletion must not be served stale.
    expect(((await api("GET", `/courses/${course}/labs`, { as: "student" })).body as Page<Lab>).total).toBe(1);
    const res = await api("DELETE", `/labs/${lab.id}`, { as: "teacher" });
    expect(res.status).toBe(204);
    expect(res.body).toBeNull();
    expect(await f.row("labs", lab.id)).toBeUndefined();
    expect(await f.count("course_labs WHERE lab_id = $id", { id: lab.id })).toBe(0);
    expect((await api("GET", `/labs/${lab.id}`, { as: "admin" })).status).toBe(404);
    expect((await api("DELETE", `/labs/${lab.id}`, { as: "teacher" })).status).toBe(404);
    expect(((await api("GET", `/courses/${course}/labs`, { as: "student" })).body as Page<Lab>).total).toBe(0);
    expect(((await api("GET", `/courses/${course}/labs`, { as: "teacher" })).body as Page<Lab>).total).toBe(0);
  });

  it("another teacher: 403 on a visible lab, 404 on an invisible one; students 403; an admin may", async () => {
    const approved = await approvedLab("teacher");
    const draft = await draftLab("teacher");
    for (const [lab, status] of [
      [approved, 403],
      [draft, 404],
    ] as const) {
      const state = await snapshot(lab.id);
      expect((await api("DELETE", `/labs/${lab.id}`, { as: "teacher2" })).status).toBe(status);
      expect((await api("DELETE", `/labs/${lab.id}`, { as: "student" })).status).toBe(403);
      expect(await snapshot(lab.id)).toBe(state);
    }
    expect((await api("DELETE", `/labs/${draft.id}`, { as: "admin" })).status).toBe(204);
    expect(await f.row("labs", draft.id)).toBeUndefined();
  });

  it.each(["pending", "running", "stopping"])(
    "a lab with an active (%s) instance → 409, lab and instance stay",
    async (status) => {
      const course = await f.course("teacher");
      await f.assign(course, ids.student);
      const lab = await approvedLab("teacher");
      await f.attach(course, lab.id);
      const instance = await f.instance(lab.id, course, ids.student, status);
      const state = await snapshot(lab.id);
      for (const as of ["teacher", "admin"]) {
        const res = await api("DELETE", `/labs/${lab.id}`, { as });
        expect(res.status).toBe(409);
        expect((res.body as { detail: string }).detail).toMatch(/active/i);
      }
      expect(await snapshot(lab.id)).toBe(state);
      expect(await f.count("lab_instances WHERE id = $i AND status = $s", { i: instance, s: status })).toBe(1);
      expect(await f.count("course_labs WHERE lab_id = $id", { id: lab.id })).toBe(1);
    },
  );

  it("a lab whose instances have all finished is deleted with its history", async () => {
    const course = await f.course("teacher");
    await f.assign(course, ids.student, ids.student2);
    const lab = await approvedLab("teacher");
    await f.attach(course, lab.id);
    await f.instance(lab.id, course, ids.student, "stopped");
    await f.instance(lab.id, course, ids.student2, "failed");
    await f.instance(lab.id, course, ids.student, "expired");
    expect((await api("DELETE", `/labs/${lab.id}`, { as: "teacher" })).status).toBe(204);
    expect(await f.count("lab_instances WHERE lab_id = $id", { id: lab.id })).toBe(0);
  });
});

describe("who sees which lab", () => {
  /**
   * teacher: draft D, pending P, rejected R, approved A (attached to course C, student assigned) and
   * draft DC (attached to C); teacher2: approved A2 (attached nowhere) and draft D2.
   */
  async function world() {
    const C = await f.course("teacher");
    await f.assign(C, ids.student);
    const D = await draftLab("teacher");
    const P = await pendingLab("teacher");
    const R = await rejectedLab("teacher");
    const A = await approvedLab("teacher");
    const DC = await draftLab("teacher");
    const A2 = await approvedLab("teacher2");
    const D2 = await draftLab("teacher2");
    await f.attach(C, A.id);
    await f.attach(C, DC.id);
    return { C, D, P, R, A, DC, A2, D2 };
  }

  it("GET /labs/{id}: admin all; teacher own and approved; student only approved labs of assigned courses", async () => {
    const w = await world();
    const visible: Record<string, Lab[]> = {
      admin: [w.D, w.P, w.R, w.A, w.DC, w.A2, w.D2],
      teacher: [w.D, w.P, w.R, w.A, w.DC, w.A2],
      teacher2: [w.A, w.A2, w.D2],
      student: [w.A],
      student2: [],
    };
    const all = [w.D, w.P, w.R, w.A, w.DC, w.A2, w.D2];
    for (const [as, seen] of Object.entries(visible)) {
      for (const lab of all) {
        const res = await api("GET", `/labs/${lab.id}`, { as });
        const expected = seen.includes(lab) ? 200 : 404;
        if (res.status !== expected)
          throw new Error(`${as} GET lab ${lab.name} (${lab.status}): ${res.status}, expected ${expected}`);
        if (expected === 200) expect(Object.keys(res.body as object).sort()).toEqual(LAB_KEYS);
      }
    }
    // A missing lab reads exactly like an invisible one.
    const invisible = await api("GET", `/labs/${w.D2.id}`, { as: "teacher" });
    const missing = await api("GET", "/labs/2000000000", { as: "teacher" });
    expect(invisible.body).toEqual(missing.body);
  });

  it("a teacher sees another teacher's draft once it is attached to one of their courses", async () => {
    const mine = await f.course("teacher2");
    const theirs = await draftLab("teacher");
    expect((await api("GET", `/labs/${theirs.id}`, { as: "teacher2" })).status).toBe(404);
    await f.attach(mine, theirs.id); // only an admin can do this for a lab teacher2 cannot see
    expect((await api("GET", `/labs/${theirs.id}`, { as: "teacher2" })).status).toBe(200);
    // Seeing is not managing.
    expect((await api("PUT", `/labs/${theirs.id}`, { as: "teacher2", body: { name: "x" } })).status).toBe(403);
  });

  it("GET /labs lists exactly what each role may see (compared with the database)", async () => {
    await world();
    const listIds = async (as: string, query = "") => {
      const out: number[] = [];
      let total = -1;
      for (let offset = 0; total < 0 || offset < total; offset += 100) {
        const res = await api("GET", `/labs?limit=100&offset=${offset}${query}`, { as });
        expect(res.status).toBe(200);
        const page = res.body as Page<Lab>;
        total = page.total;
        out.push(...page.items.map((l) => l.id));
        if (page.items.length === 0) break;
      }
      expect(out).toHaveLength(total);
      return out.sort((a, b) => a - b);
    };
    const dbIds = async (where: string, bind: Record<string, unknown> = {}) => {
      const [rows] = await p.sequelize.query(`SELECT l.id FROM labs l ${where} ORDER BY l.id`, { bind });
      return (rows as { id: number }[]).map((r) => r.id);
    };
    const reach = (who: string) =>
      `EXISTS (SELECT 1 FROM course_labs cl JOIN courses c ON c.id = cl.course_id WHERE cl.lab_id = l.id AND ${who})`;

    expect(await listIds("admin")).toEqual(await dbIds(""));
    for (const t of ["teacher", "teacher2"] as const) {
      expect(await listIds(t)).toEqual(
        await dbIds(`WHERE l.created_by = $me OR l.status = 'approved' OR ${reach("c.owner_id = $me")}`, {
          me: ids[t],
        }),
      );
    }
    for (const s of ["student", "student2"] as const) {
      const expected = await dbIds(
        `WHERE l.status = 'approved' AND ${reach("EXISTS (SELECT 1 FROM course_students cs WHERE cs.course_id = c.id AND cs.student_id = $me)")}`,
        { me: ids[s] },
      );
      expect(await listIds(s)).toEqual(expected);
    }
    expect(await listIds("student2")).toEqual([]);
  });

  it("filters (status, course_id) narrow within the caller's scope", async () => {
    const w = await world();
    const get = async (as: string, q: string) => {
      const res = await api("GET", `/labs?limit=100${q}`, { as });
      expect(res.status).toBe(200);
      return res.body as Page<Lab>;
    };
    const ofCourse = await get("teacher", `&course_id=${w.C}`);
    expect(ofCourse.items.map((l) => l.id).sort()).toEqual([w.A.id, w.DC.id].sort());
    expect(ofCourse.total).toBe(2);
    expect((await get("student", `&course_id=${w.C}`)).items.map((l) => l.id)).toEqual([w.A.id]);
    expect((await get("student2", `&course_id=${w.C}`)).total).toBe(0);
    // Filtering by another teacher's course tells nothing about what it holds.
    expect((await get("teacher2", `&course_id=${w.C}`)).total).toBe(0);
    expect((await get("student", `&course_id=${w.C}&status=draft`)).total).toBe(0);

    const drafts = await get("teacher2", "&status=draft");
    expect(drafts.items.every((l) => l.status === "draft")).toBe(true);
    expect(drafts.items.map((l) => l.id)).toContain(w.D2.id);
    // teacher's drafts stay hidden from teacher2 (unless attached to a course of theirs: not these).
    expect(drafts.items.map((l) => l.id)).not.toContain(w.D.id);
    expect(drafts.items.map((l) => l.id)).not.toContain(w.DC.id);
    expect((await get("student", "&status=draft")).total).toBe(0);
    const pending = await get("admin", "&status=pending_approval");
    expect(pending.items.every((l) => l.status === "pending_approval")).toBe(true);
    expect(pending.items.map((l) => l.id)).toContain(w.P.id);
  });

  it("paging and sorting: stable pages, total of the whole set, allowed sort fields only", async () => {
    await world();
    const all = (await api("GET", "/labs?sort=id&limit=100", { as: "admin" })).body as Page<Lab>;
    expect(all.items.map((l) => l.id)).toEqual([...all.items.map((l) => l.id)].sort((a, b) => a - b));
    const first = (await api("GET", "/labs?sort=id&limit=3", { as: "admin" })).body as Page<Lab>;
    const second = (await api("GET", "/labs?sort=id&limit=3&offset=3", { as: "admin" })).body as Page<Lab>;
    expect(first).toMatchObject({ total: all.total, offset: 0, limit: 3 });
    expect(second).toMatchObject({ total: all.total, offset: 3, limit: 3 });
    expect([...first.items, ...second.items].map((l) => l.id)).toEqual(all.items.slice(0, 6).map((l) => l.id));
    const byDefault = (await api("GET", "/labs?limit=100", { as: "admin" })).body as Page<Lab>;
    const created = byDefault.items.map((l) => new Date(l.created_at).getTime());
    expect(created).toEqual([...created].sort((a, b) => b - a));
    const byName = (await api("GET", "/labs?sort=-name&limit=100", { as: "admin" })).body as Page<Lab>;
    // The database's collation decides the order of names.
    const [rows] = await p.sequelize.query("SELECT id FROM labs ORDER BY name DESC, id DESC LIMIT 100");
    expect(byName.items.map((l) => l.id)).toEqual((rows as { id: number }[]).map((r) => r.id));
    for (const sort of ["created_by", "docker_image", "resources"]) {
      const res = await api("GET", `/labs?sort=${sort}`, { as: "admin" });
      expect(res.status).toBe(422);
      expect(locs(res)).toEqual(["query.sort"]);
    }
    expect((await api("GET", "/labs?limit=101", { as: "admin" })).status).toBe(422);
  });
});
