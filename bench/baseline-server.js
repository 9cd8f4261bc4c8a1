/**
 * The raw baseline of the benchmarks: plain node:http + pg (named prepared statements, the platform's pool
 * size) + jose, no framework. For each benchmarked route it runs exactly the SQL the platform's services run
 * for a student (read from services/*), and the same token check as services/auth (discovery → JWKS, RS256
 * verify with issuer, audience and required sub/exp, remembered per token as the platform's verified-token cache
 * does; auth.writeUser's locked users write once per identity per USERS_CACHE_TTL_S). It caches nothing else:
 * every read is a query, which is what the platform is compared with.
 * Instance answers carry lab_name and course_name, from the same joins as the platform's statements.
 *
 * Routes: GET /api/v1/courses, /labs, /lab-instances, /auth/me; POST /api/v1/lab-instances,
 * POST /api/v1/lab-instances/:id/stop. Env: DATABASE_URL, OIDC_ISSUER, DATABASE_POOL_MAX,
 * MAX_ACTIVE_INSTANCES_PER_STUDENT, PORT (0: any).
 */
const http = require("node:http");
const { hash, randomUUID } = require("node:crypto");
const { Pool } = require("pg");
const { createRemoteJWKSet, jwtVerify } = require("jose");

const issuer = process.env.OIDC_ISSUER.replace(/\/+$/, "");
const AUDIENCE = process.env.OIDC_AUDIENCE ?? "autolabs-api";
const ROLES_CLAIM = "urn:zitadel:iam:org:project:roles";
const USERS_TTL_MS = 300_000;
const MAX_ACTIVE = Number(process.env.MAX_ACTIVE_INSTANCES_PER_STUDENT ?? 3);
const pool = new Pool({ connectionString: process.env.DATABASE_URL, max: Number(process.env.DATABASE_POOL_MAX ?? 10) });

// The services' column lists, verbatim (courses.service.ts, labs.service.ts, lab-instances.rows.ts).
const COURSE_COLUMNS = "id, name, description, owner_id, listed, created_at, updated_at";
const LAB_COLUMNS =
  "id, name, description, docker_image, resources, network_isolated, max_lifetime_s, status, rejection_reason, " +
  "created_by, approved_by, created_at, updated_at";
const INSTANCE_COLUMNS = [
  "id",
  "lab_id",
  "course_id",
  "student_id",
  "status",
  "celery_task_id",
  "k8s_pod_name",
  "connection_url",
  "error",
  "created_at",
  "started_at",
  "stopped_at",
  "expires_at",
  "updated_at",
];
const COLUMNS = INSTANCE_COLUMNS.join(", ");
const I_COLUMNS = INSTANCE_COLUMNS.map((c) => `i.${c}`).join(", ");
/** Every instance answer is the row plus the lab's and course's names (LabInstanceView), joined as below. */
const VIEW_COLUMNS = [...INSTANCE_COLUMNS, "lab_name", "course_name"];
const NAME_COLUMNS = "l.name AS lab_name, c.name AS course_name";
const VIEW_JOINS = "JOIN labs l ON l.id = i.lab_id JOIN courses c ON c.id = i.course_id";
const ACTIVE_SQL = "('pending', 'running', 'stopping')";
const QUEUE = "celery";
// services/tasks/outbox.ts enqueueTask; traceparent is null as on an untraced platform node.
const OUTBOX_INSERT =
  "INSERT INTO task_outbox (id, task_name, kwargs, queue, lab_instance_id, traceparent) " +
  "VALUES ($1, $2, $3::jsonb, $4, $5, $6)";

/* ───────────── token check (services/auth/token-verifier.ts + auth.authenticate) ───────────── */

let jwks;
async function keys() {
  if (jwks) return jwks;
  const doc = await (await fetch(`${issuer}/.well-known/openid-configuration`)).json();
  jwks = createRemoteJWKSet(new URL(doc.jwks_uri));
  return jwks;
}

// services/auth/verified-token-cache.ts: a token verified once is remembered under its SHA-256 while inside its
// time claims (LRU, 10,000 entries), so neither side pays the RSA check per request: the platform does not.
const VERIFIED_MAX = 10_000;
const CLOCK_TOLERANCE_S = 30;
const verified = new Map();
const inTime = (p) => {
  const nowS = Math.floor(Date.now() / 1000);
  return p.exp > nowS - CLOCK_TOLERANCE_S && (p.nbf === undefined || p.nbf <= nowS + CLOCK_TOLERANCE_S);
};
async function verifyToken(token) {
  const key = hash("sha256", token, "base64url");
  const hit = verified.get(key);
  if (hit !== undefined) {
    verified.delete(key);
    if (inTime(hit)) {
      verified.set(key, hit);
      return hit;
    }
  }
  const { payload } = await jwtVerify(token, await keys(), {
    issuer,
    audience: AUDIENCE,
    algorithms: ["RS256"],
    clockTolerance: CLOCK_TOLERANCE_S,
    requiredClaims: ["sub", "exp"],
  });
  verified.set(key, Object.freeze(payload));
  if (verified.size > VERIFIED_MAX) verified.delete(verified.keys().next().value);
  return payload;
}

const knownUsers = new Map();
async function authenticate(req) {
  const m = /^Bearer (\S+)$/.exec(req.headers.authorization ?? "");
  if (!m) throw httpError(401, "Not authenticated");
  let payload;
  try {
    payload = await verifyToken(m[1]);
  } catch {
    throw httpError(401, "Invalid token");
  }
  const roles = Object.keys(payload[ROLES_CLAIM] ?? {});
  const role = ["admin", "teacher", "student"].find((r) => roles.includes(r));
  if (!role) throw httpError(403, "Your account has no AutoLabs role");
  const identity = [payload.sub, payload.email ?? null, payload.name ?? null, role];
  const fingerprint = JSON.stringify(identity);
  const known = knownUsers.get(fingerprint);
  if (known && known.until > Date.now()) return known.principal;
  const principal = await writeUser(...identity);
  knownUsers.set(fingerprint, { principal, until: Date.now() + USERS_TTL_MS });
  return principal;
}

/** auth.writeUser: the stored row read under its lock, then an UPDATE, or an INSERT (a second round after a
 * parallel first sign-in won the insert). An absent email or name keeps the stored one (identityToStore). */
async function writeUser(sub, email, name, role) {
  return inTransaction(async (c) => {
    for (let round = 0; round < 2; round++) {
      const stored = (
        await c.query({
          name: "user-by-sub-locked",
          text: "SELECT id, email, name, role FROM users WHERE external_id = $1 FOR UPDATE",
          values: [sub],
        })
      ).rows[0];
      const next = [email ?? stored?.email ?? null, name ?? stored?.name ?? null, role];
      if (stored) {
        await c.query({
          name: "update-user",
          text: "UPDATE users SET email = $1, name = $2, role = $3, last_login_at = now() WHERE id = $4",
          values: [...next, stored.id],
        });
        return { id: stored.id, role };
      }
      const inserted = await c.query({
        name: "insert-user",
        text: `INSERT INTO users (external_id, email, name, role, last_login_at)
               VALUES ($1, $2, $3, $4, now())
               ON CONFLICT (external_id) DO NOTHING RETURNING id, role`,
        values: [sub, ...next],
      });
      if (inserted.rows[0]) return inserted.rows[0];
    }
    throw httpError(409, "Your account changed meanwhile; try again");
  });
}

/* ───────────── helpers ───────────── */

/** lib/permission.rules.ts decideStart: hidden course, hidden lab, or a conflict when not approved. */
function admitStart(labId, assigned, attachedLabStatus) {
  if (!assigned) throw httpError(404, "Course not found");
  if (attachedLabStatus === null) throw httpError(404, "Lab not found");
  if (attachedLabStatus !== "approved") {
    const detail = `Lab ${labId} is not approved (status: ${attachedLabStatus}); it can be started once an administrator approves it`;
    throw httpError(409, detail);
  }
}

/** lab-instances publicInstance: the view's columns, in the view's order. */
const view = (row) => Object.fromEntries(VIEW_COLUMNS.map((c) => [c, row[c]]));

function httpError(status, detail) {
  return Object.assign(new Error(detail), { status, detail });
}

const SORTABLE = {
  courses: ["created_at", "updated_at", "name", "id"],
  labs: ["id", "name", "status", "created_at", "updated_at"],
  "lab-instances": ["created_at", "updated_at", "started_at", "expires_at", "status", "id"],
};

function listQuery(url, resource) {
  const offset = Number(url.searchParams.get("offset") ?? 0);
  const limit = Number(url.searchParams.get("limit") ?? 50);
  const sort = url.searchParams.get("sort") ?? "-created_at";
  const field = sort.replace(/^[-+]/, "");
  const validPage = Number.isInteger(offset) && offset >= 0 && Number.isInteger(limit) && limit >= 1 && limit <= 100;
  if (!validPage || !SORTABLE[resource].includes(field)) {
    throw httpError(422, [{ loc: ["query"], msg: "invalid list query", type: "value_error" }]);
  }
  return { offset, limit, field, direction: sort.startsWith("-") ? "DESC" : "ASC" };
}

/** platform/db.mixin.ts selectPage: one statement with the total as a window count, a count only when empty. */
async function selectPage(name, select, fromWhere, params, q, orderField = q.field) {
  const n = params.length;
  const { rows } = await pool.query({
    name: `${name}-${q.field}-${q.direction}`,
    text: `SELECT ${select}, count(*) OVER () AS __total ${fromWhere}
            ORDER BY ${orderField} ${q.direction}, id ${q.direction} LIMIT $${n + 1} OFFSET $${n + 2}`,
    values: [...params, q.limit, q.offset],
  });
  let total;
  if (rows.length > 0) total = Number(rows[0].__total);
  else {
    const count = { name: `${name}-count`, text: `SELECT count(*) AS n ${fromWhere}`, values: params };
    const counted = await pool.query(count);
    total = Number(counted.rows[0].n);
  }
  const items = rows.map(({ __total, ...rest }) => rest);
  return { items, total, offset: q.offset, limit: q.limit };
}

async function readJson(req) {
  const chunks = [];
  for await (const c of req) chunks.push(c);
  try {
    return JSON.parse(Buffer.concat(chunks).toString() || "{}");
  } catch {
    throw httpError(400, "Invalid JSON");
  }
}

async function inTransaction(fn) {
  const c = await pool.connect();
  try {
    await c.query("BEGIN");
    const out = await fn(c);
    await c.query("COMMIT");
    return out;
  } catch (err) {
    await c.query("ROLLBACK").catch(() => {});
    throw err;
  } finally {
    c.release();
  }
}

/* ───────────── routes (student's view, as in the services) ───────────── */

const routes = {
  // courses.list
  "GET /api/v1/courses": async (me, url) =>
    selectPage(
      "courses-student",
      COURSE_COLUMNS,
      "FROM courses c WHERE EXISTS (SELECT 1 FROM course_students cs WHERE cs.course_id = c.id AND cs.student_id = $1)",
      [me.id],
      listQuery(url, "courses"),
    ),
  // labs.list (labScopeSql for a student)
  "GET /api/v1/labs": async (me, url) =>
    selectPage(
      "labs-student",
      LAB_COLUMNS,
      "FROM labs l WHERE l.status = 'approved' AND EXISTS (SELECT 1 FROM course_labs cl JOIN courses c ON " +
        "c.id = cl.course_id WHERE cl.lab_id = l.id AND EXISTS (SELECT 1 FROM course_students cs " +
        "WHERE cs.course_id = c.id AND cs.student_id = $1))",
      [me.id],
      listQuery(url, "labs"),
    ),
  // lab-instances.list: the rows with their lab's and course's names (the joins are the point: no N+1)
  "GET /api/v1/lab-instances": async (me, url) => {
    const q = listQuery(url, "lab-instances");
    const fromWhere = `FROM lab_instances i ${VIEW_JOINS} WHERE i.student_id = $1`;
    return selectPage("instances-student", `${I_COLUMNS}, ${NAME_COLUMNS}`, fromWhere, [me.id], q, `i.${q.field}`);
  },
  // auth.me (cachedUser)
  "GET /api/v1/auth/me": async (me) => {
    const { rows } = await pool.query({
      name: "user-by-id",
      text: "SELECT id, email, name, role, created_at, updated_at, last_login_at FROM users WHERE id = $1",
      values: [me.id],
    });
    if (!rows[0]) throw httpError(404, "User not found");
    return rows[0];
  },
  // lab-instances.create, behind access.permission (start_lab)
  "POST /api/v1/lab-instances": async (me, url, req, res) => {
    const body = await readJson(req);
    const labId = body.lab_id;
    const courseId = body.course_id;
    if (!Number.isInteger(labId) || !Number.isInteger(courseId) || labId < 1 || courseId < 1) {
      const msg = "lab_id and course_id must be positive integers";
      throw httpError(422, [{ loc: ["body"], msg, type: "value_error" }]);
    }
    const perm = (
      await pool.query({
        name: "permission-facts",
        text: `SELECT c.owner_id,
                  EXISTS (SELECT 1 FROM course_students cs
                           WHERE cs.course_id = c.id AND cs.student_id = $2) AS caller_assigned,
                  (SELECT l.status FROM course_labs cl JOIN labs l ON l.id = cl.lab_id
                    WHERE cl.course_id = c.id AND cl.lab_id = $3) AS lab_status
             FROM courses c WHERE c.id = $1`,
        values: [courseId, me.id, labId],
      })
    ).rows[0];
    // The access check's decision (the platform caches it per student, course and lab; this runs it each time).
    admitStart(labId, Boolean(perm?.caller_assigned), perm ? perm.lab_status : null);
    const created = await inTransaction(async (c) => {
      // One start of this student at a time: the active and cap checks below see every committed instance.
      await c.query({ name: "lock-user", text: "SELECT id FROM users WHERE id = $1 FOR UPDATE", values: [me.id] });
      // Course, then lab, then their links, in the order deletions and (de)attachments take them.
      const course = await c.query({
        name: "course-key-share",
        text: "SELECT name, owner_id FROM courses WHERE id = $1 FOR KEY SHARE",
        values: [courseId],
      });
      const lab = (
        await c.query({
          name: "lab-share",
          text: "SELECT status, name FROM labs WHERE id = $1 FOR SHARE",
          values: [labId],
        })
      ).rows[0];
      const assigned =
        course.rows.length === 0
          ? []
          : (
              await c.query({
                name: "assigned-share",
                text: "SELECT 1 AS ok FROM course_students WHERE course_id = $1 AND student_id = $2 FOR SHARE",
                values: [courseId, me.id],
              })
            ).rows;
      const attached =
        assigned.length === 0
          ? []
          : (
              await c.query({
                name: "attached-share",
                text: "SELECT 1 AS ok FROM course_labs WHERE course_id = $1 AND lab_id = $2 FOR SHARE",
                values: [courseId, labId],
              })
            ).rows;
      admitStart(labId, assigned.length > 0, lab && attached.length > 0 ? lab.status : null);
      const active = (
        await c.query({
          name: "active-of-student",
          text: `SELECT id, lab_id, status FROM lab_instances WHERE student_id = $1 AND status IN ${ACTIVE_SQL} ORDER BY id`,
          values: [me.id],
        })
      ).rows;
      const same = active.find((a) => a.lab_id === labId);
      if (same) {
        const detail = `You already have an active instance of lab ${labId}: lab instance ${same.id} (${same.status})`;
        throw httpError(409, detail);
      }
      if (active.length >= MAX_ACTIVE) {
        const ids = active.map((a) => a.id).join(", ");
        throw httpError(409, `At most ${MAX_ACTIVE} lab instances may be active at once; stop one of ${ids} first`);
      }
      const inserted = await c.query({
        name: "insert-instance",
        text: "INSERT INTO lab_instances (lab_id, course_id, student_id, status) VALUES ($1, $2, $3, 'pending') RETURNING id",
        values: [labId, courseId, me.id],
      });
      const id = inserted.rows[0].id;
      const taskId = randomUUID();
      const kwargs = JSON.stringify({ lab_instance_id: id, lab_id: labId, student_id: me.id });
      await c.query({
        name: "insert-outbox",
        text: OUTBOX_INSERT,
        values: [taskId, "start_lab", kwargs, QUEUE, id, null],
      });
      const updated = await c.query({
        name: "set-task",
        text: `UPDATE lab_instances SET celery_task_id = $1 WHERE id = $2 RETURNING ${COLUMNS}`,
        values: [taskId, id],
      });
      // Both names were read under this transaction's locks, as the platform answers them.
      return { ...updated.rows[0], lab_name: lab?.name ?? "", course_name: course.rows[0]?.name ?? "" };
    });
    res.statusCode = 202;
    res.setHeader("Location", `/api/v1/lab-instances/${created.id}`);
    return view(created);
  },
};

// lab-instances.stop: the access load (instance, names, course owner, port), then transition(): the row locked
// with its names, the UPDATE to stopping conditional on the status, the stop_lab outbox row.
async function stopInstance(me, id, res) {
  const loaded = await pool.query({
    name: "load-instance",
    text: `SELECT ${I_COLUMNS}, ${NAME_COLUMNS}, c.owner_id AS course_owner_id, i.connection_port
             FROM lab_instances i ${VIEW_JOINS}
            WHERE i.id = $1`,
    values: [id],
  });
  const inst = loaded.rows[0];
  if (!inst || inst.student_id !== me.id) throw httpError(404, "Lab instance not found");
  const t = await inTransaction(async (c) => {
    const locked = (
      await c.query({
        name: "lock-instance",
        text: `SELECT ${I_COLUMNS}, ${NAME_COLUMNS}, c.owner_id AS course_owner_id, l.max_lifetime_s AS lab_max_lifetime_s
                 FROM lab_instances i ${VIEW_JOINS}
                WHERE i.id = $1 FOR UPDATE OF i`,
        values: [inst.id],
      })
    ).rows[0];
    if (!locked) return null;
    // Anything but pending|running is ignored by the stop (no write); the platform commits that empty transaction.
    if (locked.status !== "pending" && locked.status !== "running") return { before: locked.status, row: locked };
    const updated = await c.query({
      name: "to-stopping",
      text: `UPDATE lab_instances SET status = $3 WHERE id = $1 AND status = $2 RETURNING ${COLUMNS}`,
      values: [locked.id, locked.status, "stopping"],
    });
    if (!updated.rows[0]) throw httpError(409, `Lab instance ${locked.id} changed meanwhile; try again`);
    await c.query({
      name: "insert-outbox",
      text: OUTBOX_INSERT,
      values: [randomUUID(), "stop_lab", JSON.stringify({ lab_instance_id: locked.id }), QUEUE, locked.id, null],
    });
    // The names do not change with the status: carried over from the locked read.
    const row = { ...updated.rows[0], lab_name: locked.lab_name, course_name: locked.course_name };
    return { before: locked.status, row };
  });
  if (!t) throw httpError(404, "Lab instance not found");
  if (t.before === "failed" || t.before === "expired") {
    throw httpError(409, `Lab instance ${inst.id} has already ended (${t.before}); there is nothing to stop`);
  }
  res.statusCode = 202;
  return view(t.row);
}

const server = http.createServer(async (req, res) => {
  res.setHeader("X-Request-Id", randomUUID());
  try {
    const url = new URL(req.url, "http://localhost");
    const me = await authenticate(req);
    let out;
    const stop = req.method === "POST" && /^\/api\/v1\/lab-instances\/(\d+)\/stop$/.exec(url.pathname);
    if (stop) out = await stopInstance(me, Number(stop[1]), res);
    else {
      const route = routes[`${req.method} ${url.pathname}`];
      if (!route) throw httpError(404, "Not found");
      out = await route(me, url, req, res);
    }
    const body = JSON.stringify(out);
    res.setHeader("Content-Type", "application/json; charset=utf-8");
    res.end(body);
  } catch (err) {
    const status = err.status ?? 500;
    if (status === 500) console.error(err);
    res.statusCode = status;
    res.setHeader("Content-Type", "application/json; charset=utf-8");
    res.end(JSON.stringify({ detail: err.detail ?? "Internal error" }));
  }
});

server.listen(Number(process.env.PORT ?? 0), "127.0.0.1", () => {
  console.log(`baseline listening on http://127.0.0.1:${server.address().port}`);
});
process.on("SIGTERM", () => server.close(() => pool.end().then(() => process.exit(0))));
server.keepAliveTimeout = 65_000;
