/**
 * Read-modify-write races (issue 8 §1): every write path that decides from a row it read writes only if that
 * row is still what it read (a conditional UPDATE or a row lock in one transaction); the loser answers 409.
 *
 * Two kinds of proof, through real HTTP to a real node on a real PostgreSQL:
 * - storms: N ≥ 10 parallel conflicting requests, repeated over several rounds, then the invariant
 *   (every answer well-formed, 2xx/404/409 and never 5xx; the rows as the rules allow);
 * - interleavings: the test holds the row lock, lets the request read, waits until its write is queued
 *   behind the lock (pg_locks), commits a concurrent change, and checks the request did not overwrite it.
 *   This is the exact lost-update window, made deterministic instead of hoped for.
 */
import { Client } from "pg";
import { startTestPlatform, type ApiResponse, type TestPlatform } from "../support/platform";
import { checkedApi, fixtures, RESOURCES, uniqueName, type Api, type Fixtures, type Ids } from "../support/http-api";

let p: TestPlatform;
let api: Api;
let f: Fixtures;
let ids: Ids;

const SERVICES = "api-gateway,auth,courses,labs,lab-instances,access";
/** Parallel requests per storm. */
const N = 12;
/** Storm rounds: the old labs code lost the race in most rounds; several make the proof reliable. */
const ROUNDS = 6;

beforeAll(async () => {
  p = await startTestPlatform({
    SERVICES,
    MAX_ACTIVE_INSTANCES_PER_STUDENT: "3",
    LAB_SWEEP_INTERVAL_MS: "3600000",
    // Room for every request of a storm to hold a connection at once: the races are between statements.
    DATABASE_POOL_MAX: String(2 * N),
  });
  api = checkedApi(p);
  f = await fixtures(p, api);
  ids = f.ids;
});
afterAll(async () => {
  await p?.stop();
});

interface Lab {
  id: number;
  name: string;
  docker_image: string;
  resources: { cpu: string; memory: string; storage: string };
  network_isolated: boolean;
  status: string;
  approved_by: number | null;
}

const IMAGE_A = "registry.autolabs.local/labs/python:3.12";
const IMAGE_B = "registry.autolabs.local/labs/unreviewed:6.6.6";

/** Answers of a storm: each well-formed (checkedApi), none a 5xx, each one of `allowed`. */
function expectStatuses(responses: ApiResponse[], allowed: number[]): void {
  const seen = responses.map((r) => r.status);
  for (const s of seen) expect(allowed).toContain(s);
}
const count = (responses: ApiResponse[], status: number) => responses.filter((r) => r.status === status).length;

async function labRow(id: number): Promise<Lab & { updated_at: Date }> {
  return (await f.row("labs", id)) as unknown as Lab & { updated_at: Date };
}

/**
 * Runs `request` while the test holds `FOR UPDATE` on `table` row `id`: once the request waits for that lock
 * (it has read and wants to write), `meanwhile` runs in the locking transaction and commits. The request then
 * writes over a row that changed after it read it.
 */
async function interleave(
  table: "labs" | "courses" | "access_requests",
  id: number,
  request: () => Promise<ApiResponse>,
  meanwhile: (sql: Client) => Promise<unknown>,
): Promise<ApiResponse> {
  const sql = new Client({ connectionString: p.db.url });
  await sql.connect();
  try {
    await sql.query("BEGIN");
    await sql.query(`SELECT id FROM ${table} WHERE id = $1 FOR UPDATE`, [id]);
    const pending = request();
    // The request blocked on our row lock: it read before and now writes (or locks to write).
    let waiting = false;
    for (let i = 0; i < 2000 && !waiting; i++) {
      const r = await sql.query(
        `SELECT count(*)::int AS n FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid
          WHERE NOT l.granted AND a.datname = current_database() AND a.pid <> pg_backend_pid()`,
      );
      waiting = r.rows[0].n > 0;
      if (!waiting) await new Promise((resolve) => setTimeout(resolve, 10));
    }
    if (!waiting) {
      await sql.query("ROLLBACK");
      throw new Error(`the request never waited for the lock on ${table} ${id}`);
    }
    await meanwhile(sql);
    await sql.query("COMMIT");
    return await pending;
  } finally {
    await sql.end();
  }
}

/* ───────────────────────────── labs ───────────────────────────── */

describe("labs", () => {
  async function approvedLab(): Promise<Lab> {
    return (await f.approvedLab("teacher", { docker_image: IMAGE_A })) as unknown as Lab;
  }

  const changes = [
    { field: "docker_image", body: { docker_image: IMAGE_B } },
    { field: "resources", body: { resources: { ...RESOURCES, memory: "8Gi" } } },
    { field: "network_isolated", body: { network_isolated: true } },
  ] as const;

  it("PUT storm: one change of what runs among name-only edits never leaves an unreviewed approved lab", async () => {
    for (let round = 0; round < ROUNDS; round++) {
      const lab = await approvedLab();
      const change = changes[round % changes.length];
      const responses = await Promise.all(
        Array.from({ length: N }, (_, i) =>
          api("PUT", `/labs/${lab.id}`, { as: "teacher", body: i === N >> 1 ? change.body : { name: uniqueName(`Edit ${i}`) } }),
        ),
      );
      expectStatuses(responses, [200, 409]);
      // Name-only edits change nothing the approval depends on: the one change of what runs always lands.
      const changing = responses[N >> 1];
      expect(changing.status).toBe(200);
      expect((changing.body as Lab).status).toBe("pending_approval");
      const now = await labRow(lab.id);
      // The invariant: approved means exactly what the admin approved.
      expect({ round, field: change.field, status: now.status, approved_by: now.approved_by }).toEqual({
        round,
        field: change.field,
        status: "pending_approval",
        approved_by: null,
      });
      if (now.status === "approved") {
        expect([now.docker_image, now.resources, now.network_isolated]).toEqual([IMAGE_A, RESOURCES, false]);
      }
    }
  });

  it("PUT: a name edit that read an approved lab does not write approval over an image changed meanwhile: 409", async () => {
    const lab = await approvedLab();
    const res = await interleave(
      "labs",
      lab.id,
      () => api("PUT", `/labs/${lab.id}`, { as: "teacher", body: { name: "renamed" } }),
      (sql) =>
        sql.query("UPDATE labs SET docker_image = $2, status = 'pending_approval', approved_by = NULL WHERE id = $1", [lab.id, IMAGE_B]),
    );
    expect(res.status).toBe(409);
    expect(res.body).toEqual({ detail: expect.any(String) });
    const now = await labRow(lab.id);
    expect([now.status, now.approved_by, now.docker_image, now.name]).toEqual(["pending_approval", null, IMAGE_B, lab.name]);
  });

  it("approve: an image changed between the admin's read and the write is not approved: 409", async () => {
    const lab = (await f.lab("teacher", { docker_image: IMAGE_A })) as unknown as Lab;
    expect((await api("POST", `/labs/${lab.id}/submit`, { as: "teacher" })).status).toBe(200);
    const res = await interleave(
      "labs",
      lab.id,
      () => api("POST", `/labs/${lab.id}/approve`, { as: "admin" }),
      // What a teacher's PUT of a pending lab does: it stays pending with the new image.
      (sql) => sql.query("UPDATE labs SET docker_image = $2 WHERE id = $1", [lab.id, IMAGE_B]),
    );
    expect(res.status).toBe(409);
    const now = await labRow(lab.id);
    expect([now.status, now.approved_by, now.docker_image]).toEqual(["pending_approval", null, IMAGE_B]);
  });

  it("approve/reject storm: exactly one decision wins, the others are 409", async () => {
    for (let round = 0; round < ROUNDS; round++) {
      const lab = (await f.lab("teacher")) as unknown as Lab;
      expect((await api("POST", `/labs/${lab.id}/submit`, { as: "teacher" })).status).toBe(200);
      const responses = await Promise.all(
        Array.from({ length: N }, (_, i) =>
          i % 2 === 0
            ? api("POST", `/labs/${lab.id}/approve`, { as: "admin" })
            : api("POST", `/labs/${lab.id}/reject`, { as: "admin", body: { reason: `no ${i}` } }),
        ),
      );
      expectStatuses(responses, [200, 409]);
      expect(count(responses, 200)).toBe(1);
      const winner = responses.find((r) => r.status === 200)!.body as Lab;
      const now = await labRow(lab.id);
      expect([now.status, now.approved_by]).toEqual([winner.status, winner.approved_by]);
    }
  });
});
