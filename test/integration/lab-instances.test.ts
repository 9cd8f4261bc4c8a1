/**
 * Lab instances through HTTP (DESIGN "Lab instance lifecycle", "Access rules", "HTTP API: lab-instances"):
 * start rules and the race-free one-active-per-lab and per-student cap, visibility, stop, worker results
 * applied through the broker (as the tasks service does), connection details, removal from a course, the
 * sweeper's timeouts, the SSE stream, and (with the tasks service's simulated runner) start → running
 * end to end.
 *
 * Most blocks run without the tasks service, so outbox rows stay where the transaction put them and every
 * status change is the test's own doing.
 */
import { startNode, startTestPlatform, type TestPlatform } from "../support/platform";
import { systemPrincipal } from "../../lib/principal";
import type { SweepReport } from "../../services/lab-instances/lab-instances.contract";
import type { ApplyTaskResultParams } from "../../services/lab-instances/lab-instances.contract";
import {
  RESOURCES,
  STATUS_KEYS,
  WITHOUT_TASKS,
  detail,
  must,
  openStream,
  startOk,
  statusOf,
  teacher2Token,
  until,
  world,
  type Instance,
  type Page,
  type World,
} from "../support/lab-instances";
import { ifAssigned } from "../support/cleanup";

/* ───────────────────────────── main platform ───────────────────────────── */

describe("lab instances (no task runner)", () => {
  let p: TestPlatform;
  let w: World;

  beforeAll(async () => {
    p = await startTestPlatform({
      SERVICES: WITHOUT_TASKS,
      MAX_ACTIVE_INSTANCES_PER_STUDENT: "3",
    });
    w = await world(p, 4);
  });
  afterAll(async () => {
    await ifAssigned(p)?.stop();
  });
  beforeEach(async () => {
    await w.reset();
  });

  it("a path id beyond PostgreSQL's integer range is a 422 naming it, never a 500", async () => {
    for (const path of [
      "/lab-instances/99999999999",
      "/lab-instances/2147483648/connection",
      "/access-requests/99999999999",
    ]) {
      const res = await p.api("GET", path, { as: "admin" });
      expect(res.status).toBe(422);
      expect(res.body).toMatchObject({ detail: [{ loc: ["path", "id"] }] });
    }
  });

  describe("POST /lab-instances", () => {
    it("starts: 202, Location, the pending instance, its start_lab outbox row in the same transaction", async () => {
      const res = must("start", await w.start(w.labs[0]), 202);
      const inst = res.json<Instance>();
      expect(Object.keys(inst).sort()).toEqual(STATUS_KEYS);
      expect(inst).toMatchObject({
        lab_id: w.labs[0],
        course_id: w.course,
        student_id: w.ids.student,
        status: "pending",
        lab_name: "Lab 1",
        course_name: "Networks",
      });
      expect(inst.connection_url).toBeNull();
      // The same names on the single get and on every list item (joined in the list's one statement).
      expect((await w.get(inst.id)).lab_name).toBe("Lab 1");
      const listed = must("list", await p.api("GET", "/lab-instances?limit=100", { as: "teacher" }), 200).json<
        Page<Instance>
      >();
      for (const item of listed.items) {
        expect(Object.keys(item).sort()).toEqual(STATUS_KEYS);
        expect(item.course_name).toBe("Networks");
        expect(item.lab_name).toMatch(/^Lab \d+$/);
      }
      expect(res.headers.get("location")).toBe(`/api/v1/lab-instances/${inst.id}`);
      const rows = await w.outbox(inst.id);
      expect(rows).toEqual([
        {
          id: inst.celery_task_id,
          task_name: "start_lab",
          kwargs: { lab_instance_id: inst.id, lab_id: w.labs[0], student_id: w.ids.student },
          queue: p.config.celeryQueue,
          lab_instance_id: inst.id,
        },
      ]);
    });

    it("a second start of the same lab: 409 naming the active instance", async () => {
      const first = must("start", await w.start(w.labs[0]), 202).json<Instance>();
      const again = must("again", await w.start(w.labs[0]), 409);
      expect(detail(again)).toContain(`lab instance ${first.id}`);
      // The same lab in another student's hands is no conflict.
      must("student2", await w.start(w.labs[0], "student2"), 202);
    });

    it("50 concurrent starts of one lab by one student: exactly one 202, 49 × 409, one row, one outbox row", async () => {
      const t0 = Date.now();
      const answers = await Promise.all(Array.from({ length: 50 }, () => w.start(w.labs[1])));
      const ms = Date.now() - t0;
      const codes = answers.map((a) => a.status);
      expect(codes.filter((c) => c === 202)).toHaveLength(1);
      expect(codes.filter((c) => c === 409)).toHaveLength(49);
      const winner = answers.find((a) => a.status === 202)!.json<Instance>();
      for (const a of answers.filter((x) => x.status === 409)) expect(detail(a)).toContain(`lab instance ${winner.id}`);
      const [rows] = await p.sequelize.query(
        "SELECT count(*)::int AS n FROM lab_instances WHERE student_id = $s AND lab_id = $l AND status = 'pending'",
        { bind: { s: w.ids.student, l: w.labs[1] } },
      );
      expect((rows as { n: number }[])[0].n).toBe(1);
      const [out] = await p.sequelize.query(
        "SELECT count(*)::int AS n FROM task_outbox t JOIN lab_instances i ON i.id = t.lab_instance_id WHERE i.student_id = $s AND i.lab_id = $l AND i.status = 'pending'",
        { bind: { s: w.ids.student, l: w.labs[1] } },
      );
      expect((out as { n: number }[])[0].n).toBe(1);
      // Reported by the suite's log for the figures.
      console.log(`50 concurrent starts of one lab: ${ms} ms`);
    });

    it("caps active instances per student across labs (MAX_ACTIVE_INSTANCES_PER_STUDENT = 3)", async () => {
      const started = [];
      for (const lab of w.labs.slice(0, 3)) started.push(must("start", await w.start(lab), 202).json<Instance>());
      const fourth = must("fourth", await w.start(w.labs[3]), 409);
      expect(detail(fourth)).toContain("At most 3");
      // Concurrent attempts at the cap cannot sneak past it either.
      await w.reset();
      const answers = await Promise.all(w.labs.map((lab) => w.start(lab)));
      expect(answers.filter((a) => a.status === 202)).toHaveLength(3);
      expect(answers.filter((a) => a.status === 409)).toHaveLength(1);
      // A stopping instance still counts (its pod is still there).
      await w.reset();
      const a = must("a", await w.start(w.labs[0]), 202).json<Instance>();
      must("b", await w.start(w.labs[1]), 202);
      must("c", await w.start(w.labs[2]), 202);
      must("stop", await p.api("POST", `/lab-instances/${a.id}/stop`, { as: "student" }), 202);
      must("still capped", await w.start(w.labs[3]), 409);
    });

    it("refuses what the rules refuse: wrong role 403, foreign course 404, unattached lab 404, unapproved lab 409, bad body 422", async () => {
      must("teacher", await w.start(w.labs[0], "teacher"), 403);
      must("admin", await w.start(w.labs[0], "admin"), 403);
      must(
        "anonymous",
        await p.api("POST", "/lab-instances", { body: { lab_id: w.labs[0], course_id: w.course } }),
        401,
      );

      const other = must(
        "course",
        await p.api("POST", "/courses", { as: "teacher", body: { name: "Other" } }),
        201,
      ).json<{ id: number }>().id;
      must(
        "attach",
        await p.api("POST", `/courses/${other}/labs`, { as: "teacher", body: { lab_id: w.labs[0] } }),
        201,
      );
      const notAssigned = must("not assigned", await w.start(w.labs[0], "student", other), 404);
      expect(detail(notAssigned)).toBe("Course not found");
      must("no such course", await w.start(w.labs[0], "student", 999_999), 404);

      const loose = await w.approvedLab();
      expect(detail(must("not attached", await w.start(loose), 404))).toBe("Lab not found");
      must("no such lab", await w.start(999_999), 404);

      const draft = must(
        "draft",
        await p.api("POST", "/labs", {
          as: "teacher",
          body: { name: "Draft", docker_image: "registry.autolabs.local/labs/x:1", resources: RESOURCES },
        }),
        201,
      ).json<{ id: number }>().id;
      must(
        "attach draft",
        await p.api("POST", `/courses/${w.course}/labs`, { as: "teacher", body: { lab_id: draft } }),
        201,
      );
      const unapproved = must("unapproved", await w.start(draft), 409);
      expect(detail(unapproved)).toContain("not approved");

      const bad = must("bad", await p.api("POST", "/lab-instances", { as: "student", body: { lab_id: "x" } }), 422);
      expect(bad.json<{ detail: { loc: string[] }[] }>().detail.map((d) => d.loc.join("."))).toEqual(
        expect.arrayContaining(["body.lab_id", "body.course_id"]),
      );
      const [rows] = await p.sequelize.query("SELECT count(*)::int AS n FROM lab_instances WHERE lab_id IN ($a, $b)", {
        bind: { a: loose, b: draft },
      });
      expect((rows as { n: number }[])[0].n).toBe(0);
    });
  });

  describe("visibility", () => {
    it("owner, course-owning teacher and admin see an instance; student2 and another teacher get 404", async () => {
      const inst = must("start", await w.start(w.labs[0]), 202).json<Instance>();
      for (const as of ["student", "teacher", "admin"])
        must(as, await p.api("GET", `/lab-instances/${inst.id}`, { as }), 200);
      must("student2", await p.api("GET", `/lab-instances/${inst.id}`, { as: "student2" }), 404);
      must("student2 stop", await p.api("POST", `/lab-instances/${inst.id}/stop`, { as: "student2" }), 404);
      must("student2 connection", await p.api("GET", `/lab-instances/${inst.id}/connection`, { as: "student2" }), 404);
      must("anonymous", await p.api("GET", `/lab-instances/${inst.id}`), 401);
      must("missing", await p.api("GET", "/lab-instances/999999", { as: "admin" }), 404);
      must("bad id", await p.api("GET", "/lab-instances/abc", { as: "admin" }), 422);

      const t2 = await teacher2Token(p);
      const other = { authorization: `Bearer ${t2}` };
      must("teacher2 me", await p.api("GET", "/auth/me", { headers: other }), 200);
      must(
        "teacher2 own course",
        await p.api("POST", "/courses", { headers: other, body: { name: "T2 course" } }),
        201,
      );
      must("teacher2", await p.api("GET", `/lab-instances/${inst.id}`, { headers: other }), 404);
      must("teacher2 stop", await p.api("POST", `/lab-instances/${inst.id}/stop`, { headers: other }), 404);
      const t2list = must("teacher2 list", await p.api("GET", "/lab-instances", { headers: other }), 200).json<
        Page<Instance>
      >();
      expect(t2list.total).toBe(0);
      expect((await w.get(inst.id)).status).toBe("pending");
    });

    it("lists: student own, teacher own courses, admin all; filters, paging, sort allow-list", async () => {
      const mine = must("start", await w.start(w.labs[0]), 202).json<Instance>();
      const theirs = must("start2", await w.start(w.labs[1], "student2"), 202).json<Instance>();
      const studentList = must("student", await p.api("GET", "/lab-instances?limit=100", { as: "student" }), 200).json<
        Page<Instance>
      >();
      expect(studentList.items.every((i) => i.student_id === w.ids.student)).toBe(true);
      expect(studentList.items.map((i) => i.id)).toContain(mine.id);
      expect(studentList.items.map((i) => i.id)).not.toContain(theirs.id);

      const teacherList = must(
        "teacher",
        await p.api("GET", `/lab-instances?status=pending&course_id=${w.course}`, { as: "teacher" }),
        200,
      ).json<Page<Instance>>();
      expect(teacherList.items.map((i) => i.id).sort()).toEqual([mine.id, theirs.id].sort());

      const byLab = must(
        "lab filter",
        await p.api("GET", `/lab-instances?lab_id=${w.labs[1]}&status=pending`, { as: "admin" }),
        200,
      ).json<Page<Instance>>();
      expect(byLab.items.map((i) => i.id)).toEqual([theirs.id]);

      const page = must(
        "page",
        await p.api("GET", "/lab-instances?limit=1&offset=0&sort=id", { as: "admin" }),
        200,
      ).json<Page<Instance>>();
      expect(page.items).toHaveLength(1);
      expect(page.limit).toBe(1);
      expect(page.total).toBeGreaterThanOrEqual(2);

      must("bad sort", await p.api("GET", "/lab-instances?sort=connection_url", { as: "admin" }), 422);
      must("bad status", await p.api("GET", "/lab-instances?status=dancing", { as: "admin" }), 422);
      must("bad limit", await p.api("GET", "/lab-instances?limit=1000", { as: "admin" }), 422);
    });
  });

  describe("stop", () => {
    it("202 stopping + stop_lab; repeat is idempotent; stop_lab SUCCESS → stopped; stopped stays 202; failed is 409", async () => {
      const inst = must("start", await w.start(w.labs[0]), 202).json<Instance>();
      const stopped = must(
        "stop",
        await p.api("POST", `/lab-instances/${inst.id}/stop`, { as: "student" }),
        202,
      ).json<Instance>();
      expect(stopped.status).toBe("stopping");
      let rows = await w.outbox(inst.id);
      expect(rows.map((r) => r.task_name)).toEqual(["start_lab", "stop_lab"]);
      expect(rows[1].kwargs).toEqual({ lab_instance_id: inst.id });

      const again = must(
        "again",
        await p.api("POST", `/lab-instances/${inst.id}/stop`, { as: "teacher" }),
        202,
      ).json<Instance>();
      expect(again.status).toBe("stopping");
      expect(await w.outbox(inst.id)).toHaveLength(2);

      const stopTask = rows[1].id;
      expect(
        await w.apply({
          task_id: stopTask,
          task_name: "stop_lab",
          lab_instance_id: inst.id,
          status: "SUCCESS",
          result: { status: "stopped" },
        }),
      ).toEqual({
        applied: true,
        status: "stopped",
      });
      const done = await w.get(inst.id);
      expect(done.status).toBe("stopped");
      expect(done.stopped_at).not.toBeNull();
      const after = must(
        "after",
        await p.api("POST", `/lab-instances/${inst.id}/stop`, { as: "student" }),
        202,
      ).json<Instance>();
      expect(after.status).toBe("stopped");
      rows = await w.outbox(inst.id);
      expect(rows).toHaveLength(2);

      // The same lab may start again once the old instance is no longer active.
      const next = must("restart", await w.start(w.labs[0]), 202).json<Instance>();
      await w.apply({
        task_id: next.celery_task_id!,
        task_name: "start_lab",
        lab_instance_id: next.id,
        status: "FAILURE",
        error: "RuntimeError: no node",
      });
      const failed = must("failed stop", await p.api("POST", `/lab-instances/${next.id}/stop`, { as: "admin" }), 409);
      expect(detail(failed)).toContain("already ended (failed)");
    });
  });

  describe("worker results (lab-instances.applyTaskResult)", () => {
    it("start SUCCESS → running with pod, url, started_at, expires_at = started_at + the lab's lifetime; duplicates change nothing", async () => {
      const inst = must("start", await w.start(w.labs[0]), 202).json<Instance>();
      const params: ApplyTaskResultParams = {
        task_id: inst.celery_task_id!,
        task_name: "start_lab",
        lab_instance_id: inst.id,
        status: "SUCCESS",
        result: startOk,
      };
      expect(await w.apply(params)).toEqual({ applied: true, status: "running" });
      const running = await w.get(inst.id);
      expect(running).toMatchObject({
        status: "running",
        k8s_pod_name: "lab-pod-1",
        connection_url: "https://labs.example.test/i/1",
      });
      // labs[0] has max_lifetime_s = 3600.
      expect(Date.parse(running.expires_at!) - Date.parse(running.started_at!)).toBe(3600_000);

      const dup = await w.apply(params);
      expect(dup).toMatchObject({ applied: false, status: "running" });
      const late = await w.apply({ ...params, status: "FAILURE", error: "RuntimeError: late" });
      expect(late).toMatchObject({ applied: false, status: "running" });
      const foreign = await w.apply({
        ...params,
        task_id: "00000000-0000-4000-8000-000000000000",
        result: { ...startOk, k8s_pod_name: "other" },
      });
      expect(foreign.applied).toBe(false);
      expect(await w.get(inst.id)).toEqual(running);

      // The default lifetime (LAB_MAX_LIFETIME_S) for a lab without its own.
      const other = must("start other", await w.start(w.labs[1]), 202).json<Instance>();
      await w.apply({
        task_id: other.celery_task_id!,
        task_name: "start_lab",
        lab_instance_id: other.id,
        status: "SUCCESS",
        result: startOk,
      });
      const o = await w.get(other.id);
      expect(Date.parse(o.expires_at!) - Date.parse(o.started_at!)).toBe(p.config.labMaxLifetimeS * 1000);
    });

    it("start FAILURE → failed with the worker's message and a cleanup_lab", async () => {
      const inst = must("start", await w.start(w.labs[0]), 202).json<Instance>();
      const r = await w.apply({
        task_id: inst.celery_task_id!,
        task_name: "start_lab",
        lab_instance_id: inst.id,
        status: "FAILURE",
        error: "RuntimeError: simulated failure: lab cannot be scheduled",
      });
      expect(r).toEqual({ applied: true, status: "failed" });
      const failed = await w.get(inst.id);
      expect(failed.error).toBe("RuntimeError: simulated failure: lab cannot be scheduled");
      expect((await w.outbox(inst.id)).map((x) => x.task_name).sort()).toEqual(["cleanup_lab", "start_lab"]);
      // cleanup SUCCESS records the pod gone but keeps why the instance ended.
      await w.apply({
        task_id: "c1",
        task_name: "cleanup_lab",
        lab_instance_id: inst.id,
        status: "SUCCESS",
        result: { status: "stopped" },
      });
      const cleaned = await w.get(inst.id);
      expect(cleaned.status).toBe("failed");
      expect(cleaned.stopped_at).not.toBeNull();
    });

    it("an unusable SUCCESS (unsafe URL) counts as a failed start", async () => {
      const inst = must("start", await w.start(w.labs[0]), 202).json<Instance>();
      await w.apply({
        task_id: inst.celery_task_id!,
        task_name: "start_lab",
        lab_instance_id: inst.id,
        status: "SUCCESS",
        result: { status: "running", k8s_pod_name: "p", connection_url: "javascript:alert(1)" },
      });
      const failed = await w.get(inst.id);
      expect(failed.status).toBe("failed");
      expect(failed.connection_url).toBeNull();
      expect(failed.error).toMatch(/^InvalidResult: /);
    });

    it("late start SUCCESS after stop: never backwards, cleanup_lab scheduled", async () => {
      const inst = must("start", await w.start(w.labs[0]), 202).json<Instance>();
      must("stop", await p.api("POST", `/lab-instances/${inst.id}/stop`, { as: "student" }), 202);
      const start: ApplyTaskResultParams = {
        task_id: inst.celery_task_id!,
        task_name: "start_lab",
        lab_instance_id: inst.id,
        status: "SUCCESS",
        result: startOk,
      };
      // While stopping: the pod may have come up after stop_lab looked; clean it up, stay stopping.
      expect(await w.apply(start)).toMatchObject({ applied: true, status: "stopping" });
      const stopTask = (await w.outbox(inst.id)).find((r) => r.task_name === "stop_lab")!.id;
      expect(
        await w.apply({ task_id: stopTask, task_name: "stop_lab", lab_instance_id: inst.id, status: "SUCCESS" }),
      ).toMatchObject({
        status: "stopped",
      });
      // After stopped: again only a cleanup.
      expect(await w.apply(start)).toMatchObject({ applied: true, status: "stopped" });
      const final = await w.get(inst.id);
      expect(final).toMatchObject({ status: "stopped", k8s_pod_name: null, connection_url: null, started_at: null });
      expect((await w.outbox(inst.id)).map((r) => r.task_name).sort()).toEqual([
        "cleanup_lab",
        "cleanup_lab",
        "start_lab",
        "stop_lab",
      ]);
      // A stop FAILURE after the fact changes nothing either.
      expect(
        await w.apply({
          task_id: stopTask,
          task_name: "stop_lab",
          lab_instance_id: inst.id,
          status: "FAILURE",
          error: "X: y",
        }),
      ).toMatchObject({
        applied: false,
        status: "stopped",
      });
    });

    it("stop FAILURE → failed + cleanup_lab; results for a missing instance are ignored; params are validated", async () => {
      const inst = must("start", await w.start(w.labs[0]), 202).json<Instance>();
      await w.apply({
        task_id: inst.celery_task_id!,
        task_name: "start_lab",
        lab_instance_id: inst.id,
        status: "SUCCESS",
        result: startOk,
      });
      must("stop", await p.api("POST", `/lab-instances/${inst.id}/stop`, { as: "student" }), 202);
      const r = await w.apply({
        task_id: "s",
        task_name: "stop_lab",
        lab_instance_id: inst.id,
        status: "FAILURE",
        error: "ApiException: 500",
      });
      expect(r).toEqual({ applied: true, status: "failed" });
      expect((await w.get(inst.id)).error).toBe("ApiException: 500");
      expect((await w.outbox(inst.id)).filter((x) => x.task_name === "cleanup_lab")).toHaveLength(1);

      expect(
        await w.apply({ task_id: "x", task_name: "stop_lab", lab_instance_id: 999_999, status: "SUCCESS" }),
      ).toEqual({
        applied: false,
        status: null,
        note: "lab instance not found",
      });
      await expect(
        p.broker.call(
          "lab-instances.applyTaskResult",
          { task_id: "x", task_name: "rm_rf", lab_instance_id: 1, status: "SUCCESS" },
          {
            meta: { user: systemPrincipal("test") },
          },
        ),
      ).rejects.toMatchObject({ code: 422 });
    });

    it("is for the system only: not routed over HTTP, refused to users", async () => {
      const inst = must("start", await w.start(w.labs[0]), 202).json<Instance>();
      await expect(
        p.broker.call(
          "lab-instances.applyTaskResult",
          {
            task_id: inst.celery_task_id,
            task_name: "start_lab",
            lab_instance_id: inst.id,
            status: "SUCCESS",
            result: startOk,
          },
          { meta: { user: { kind: "user", id: w.ids.student, role: "admin" } } },
        ),
      ).rejects.toMatchObject({ code: 403 });
      await expect(p.broker.call("lab-instances.sweep", {})).rejects.toMatchObject({ code: 401 });
      expect([404, 405]).toContain(
        (await p.api("POST", "/lab-instances/applyTaskResult", { as: "admin", body: {} })).status,
      );
      expect((await w.get(inst.id)).status).toBe("pending");
    });
  });

  describe("GET /lab-instances/{id}/connection", () => {
    it("409 unless running; the connection details while running", async () => {
      const inst = must("start", await w.start(w.labs[0]), 202).json<Instance>();
      const pending = must(
        "pending",
        await p.api("GET", `/lab-instances/${inst.id}/connection`, { as: "student" }),
        409,
      );
      expect(detail(pending)).toContain("is pending");
      await w.apply({
        task_id: inst.celery_task_id!,
        task_name: "start_lab",
        lab_instance_id: inst.id,
        status: "SUCCESS",
        result: startOk,
      });
      const conn = must(
        "running",
        await p.api("GET", `/lab-instances/${inst.id}/connection`, { as: "student" }),
        200,
      ).json<Record<string, unknown>>();
      expect(conn).toMatchObject({
        id: inst.id,
        status: "running",
        connection_url: startOk.connection_url,
        // No port from the worker, none in the https URL: the scheme's default.
        port: 443,
        k8s_pod_name: startOk.k8s_pod_name,
      });
      expect(conn.expires_at).toEqual(expect.any(String));
      must("teacher", await p.api("GET", `/lab-instances/${inst.id}/connection`, { as: "teacher" }), 200);
      must("stop", await p.api("POST", `/lab-instances/${inst.id}/stop`, { as: "student" }), 202);
      must("stopping", await p.api("GET", `/lab-instances/${inst.id}/connection`, { as: "student" }), 409);
    });

    it("port: the worker's when it sends one, else the URL's explicit port", async () => {
      const ports: [Record<string, unknown>, number][] = [
        [{ connection_url: "ssh://lab.example.test/", port: 2222 }, 2222],
        [{ connection_url: "http://lab.example.test:8080/x" }, 8080],
      ];
      for (const [result, port] of ports) {
        const lab = await w.approvedLab();
        must("attach", await p.api("POST", `/courses/${w.course}/labs`, { as: "teacher", body: { lab_id: lab } }), 201);
        const inst = must("start", await w.start(lab, "student2"), 202).json<Instance>();
        await w.apply({
          task_id: inst.celery_task_id!,
          task_name: "start_lab",
          lab_instance_id: inst.id,
          status: "SUCCESS",
          result: { ...startOk, ...result },
        });
        const conn = must("conn", await p.api("GET", `/lab-instances/${inst.id}/connection`, { as: "student2" }), 200);
        expect(conn.json<{ port: number }>().port).toBe(port);
        must("stop", await p.api("POST", `/lab-instances/${inst.id}/stop`, { as: "student2" }), 202);
        await w.apply({
          task_id: (await w.outbox(inst.id)).find((r) => r.task_name === "stop_lab")!.id,
          task_name: "stop_lab",
          lab_instance_id: inst.id,
          status: "SUCCESS",
          result: { status: "stopped" },
        });
      }
    });
  });

  describe("removing a student from a course", () => {
    it("stops their active instances in that course (and only those)", async () => {
      const mine = must("start", await w.start(w.labs[0]), 202).json<Instance>();
      await w.apply({
        task_id: mine.celery_task_id!,
        task_name: "start_lab",
        lab_instance_id: mine.id,
        status: "SUCCESS",
        result: startOk,
      });
      const pendingToo = must("start 2", await w.start(w.labs[1]), 202).json<Instance>();
      const theirs = must("student2", await w.start(w.labs[0], "student2"), 202).json<Instance>();

      must("remove", await p.api("DELETE", `/courses/${w.course}/students/${w.ids.student}`, { as: "teacher" }), 204);
      await until("instances stopping", async () => {
        const a = await w.get(mine.id);
        const b = await w.get(pendingToo.id);
        return a.status === "stopping" && b.status === "stopping";
      });
      expect((await w.outbox(mine.id)).map((r) => r.task_name)).toContain("stop_lab");
      expect((await w.get(theirs.id)).status).toBe("pending");
      // No longer assigned: a new start is refused.
      must("start after removal", await w.start(w.labs[2]), 404);
      must(
        "re-assign",
        await p.api("POST", `/courses/${w.course}/students`, { as: "teacher", body: { student_ids: [w.ids.student] } }),
        200,
      );
    });
  });

  describe("GET /lab-instances/{id}/events (SSE)", () => {
    it("streams pending → running → stopping → stopped with ids, then closes; resumes from Last-Event-ID; 204 when all seen", async () => {
      const inst = must("start", await w.start(w.labs[0]), 202).json<Instance>();
      const token = await p.token("student");
      const s = await openStream(p, `/lab-instances/${inst.id}/events`, token);
      expect(s.status).toBe(200);
      expect(s.headers.get("content-type")).toMatch(/^text\/event-stream/);
      expect(s.headers.get("x-request-id")).toBeTruthy();
      await s.waitFor(1);
      expect(s.events[0]).toMatchObject({ id: "1", event: "status" });
      expect(statusOf(s.events[0])).toBe("pending");

      await w.apply({
        task_id: inst.celery_task_id!,
        task_name: "start_lab",
        lab_instance_id: inst.id,
        status: "SUCCESS",
        result: startOk,
      });
      await s.waitFor(2);
      expect(s.events[1].id).toBe("2");
      expect(JSON.parse(s.events[1].data!)).toMatchObject({
        id: inst.id,
        status: "running",
        connection_url: startOk.connection_url,
      });

      // A second client joins late with Last-Event-ID 1: it gets only what it has not seen.
      const resumed = await openStream(p, `/lab-instances/${inst.id}/events`, token, { "last-event-id": "1" });
      await resumed.waitFor(1);
      expect(resumed.events.map((e) => [e.id, statusOf(e)])).toEqual([["2", "running"]]);
      // One already up to date gets nothing until something changes.
      const upToDate = await openStream(p, `/lab-instances/${inst.id}/events`, token, { "last-event-id": "2" });
      expect(upToDate.status).toBe(200);

      must("stop", await p.api("POST", `/lab-instances/${inst.id}/stop`, { as: "student" }), 202);
      await s.waitFor(3);
      await upToDate.waitFor(1);
      expect(upToDate.events.map((e) => e.id)).toEqual(["3"]);
      const stopTask = (await w.outbox(inst.id)).find((r) => r.task_name === "stop_lab")!.id;
      await w.apply({ task_id: stopTask, task_name: "stop_lab", lab_instance_id: inst.id, status: "SUCCESS" });
      await s.waitFor(4);
      await Promise.all([s.ended, resumed.ended, upToDate.ended]);
      expect(s.events.map((e) => [e.id, statusOf(e)])).toEqual([
        ["1", "pending"],
        ["2", "running"],
        ["3", "stopping"],
        ["4", "stopped"],
      ]);
      expect(resumed.events.map((e) => e.id)).toEqual(["2", "3", "4"]);
      expect(s.body.startsWith("retry: ")).toBe(true);

      // Reconnecting after the final event: 204 (EventSource stops reconnecting).
      const after = await openStream(p, `/lab-instances/${inst.id}/events`, token, { "last-event-id": "4" });
      expect(after.status).toBe(204);
      // Without Last-Event-ID: the final state once, then the end.
      const fresh = await openStream(p, `/lab-instances/${inst.id}/events`, token);
      await fresh.ended;
      expect(fresh.events.map((e) => [e.id, statusOf(e)])).toEqual([["4", "stopped"]]);
    });

    it("authorizes like GET /lab-instances/{id}: JSON 401/404/422 before any stream", async () => {
      const inst = must("start", await w.start(w.labs[0]), 202).json<Instance>();
      const anonymous = await openStream(p, `/lab-instances/${inst.id}/events`, null);
      expect(anonymous.status).toBe(401);
      expect(anonymous.headers.get("content-type")).toMatch(/application\/json/);
      const other = await openStream(p, `/lab-instances/${inst.id}/events`, await p.token("student2"));
      expect(other.status).toBe(404);
      await other.ended;
      expect(JSON.parse(other.body)).toEqual({ detail: "Lab instance not found" });
      const bad = await openStream(p, "/lab-instances/abc/events", await p.token("admin"));
      expect(bad.status).toBe(422);
      const teacher = await openStream(p, `/lab-instances/${inst.id}/events`, await p.token("teacher"));
      expect(teacher.status).toBe(200);
      await teacher.waitFor(1);
      teacher.close();
    });

    it("outlives the broker's request timeout and the client's disconnect is cleaned up", async () => {
      // The gateway's 30 s request timeout must not end a stream: drive the same broker with a short one.
      const inst = must("start", await w.start(w.labs[0]), 202).json<Instance>();
      const token = await p.token("student");
      const original = p.broker.options.requestTimeout;
      p.broker.options.requestTimeout = 300;
      try {
        const s = await openStream(p, `/lab-instances/${inst.id}/events`, token);
        await s.waitFor(1);
        await new Promise((r) => setTimeout(r, 800));
        await w.apply({
          task_id: inst.celery_task_id!,
          task_name: "start_lab",
          lab_instance_id: inst.id,
          status: "SUCCESS",
          result: startOk,
        });
        await s.waitFor(2);
        expect(s.body).not.toContain("detail");
        s.close();
        await s.ended;
      } finally {
        p.broker.options.requestTimeout = original;
      }
    });
  });
});

/* ───────────────────────────── sweeper ───────────────────────────── */

describe("sweeper (LAB_START_TIMEOUT_S=1, LAB_SWEEP_INTERVAL_MS=200)", () => {
  let p: TestPlatform;
  let w: World;

  beforeAll(async () => {
    p = await startTestPlatform({ SERVICES: WITHOUT_TASKS, LAB_START_TIMEOUT_S: "1", LAB_SWEEP_INTERVAL_MS: "200" });
    w = await world(p, 2);
  });
  afterAll(async () => {
    await ifAssigned(p)?.stop();
  });

  it("pending past the start timeout → failed ('start timed out') + cleanup_lab, by the timer", async () => {
    const inst = must("start", await w.start(w.labs[0]), 202).json<Instance>();
    const failed = await until("failed", async () => {
      const i = await w.get(inst.id);
      return i.status === "failed" ? i : null;
    });
    expect(failed.error).toBe("start timed out after 1 s");
    expect((await w.outbox(inst.id)).map((r) => r.task_name).sort()).toEqual(["cleanup_lab", "start_lab"]);
    // The worker's late start result: still failed, one more cleanup.
    expect(
      await w.apply({
        task_id: inst.celery_task_id!,
        task_name: "start_lab",
        lab_instance_id: inst.id,
        status: "SUCCESS",
        result: startOk,
      }),
    ).toMatchObject({ status: "failed" });
    expect((await w.outbox(inst.id)).filter((r) => r.task_name === "cleanup_lab")).toHaveLength(2);
  });

  it("running past expires_at → expired + cleanup_lab; cleanup SUCCESS keeps expired and records stopped_at", async () => {
    const inst = must("start", await w.start(w.labs[1]), 202).json<Instance>();
    await w.apply({
      task_id: inst.celery_task_id!,
      task_name: "start_lab",
      lab_instance_id: inst.id,
      status: "SUCCESS",
      result: startOk,
    });
    expect((await w.get(inst.id)).status).toBe("running");
    await p.sequelize.query("UPDATE lab_instances SET expires_at = now() - interval '1 second' WHERE id = $id", {
      bind: { id: inst.id },
    });
    const expired = await until("expired", async () => {
      const i = await w.get(inst.id);
      return i.status === "expired" ? i : null;
    });
    expect(expired.stopped_at).toBeNull();
    const cleanup = (await w.outbox(inst.id)).filter((r) => r.task_name === "cleanup_lab");
    expect(cleanup).toHaveLength(1);
    await w.apply({
      task_id: cleanup[0].id,
      task_name: "cleanup_lab",
      lab_instance_id: inst.id,
      status: "SUCCESS",
      result: { status: "stopped" },
    });
    const done = await w.get(inst.id);
    expect(done.status).toBe("expired");
    expect(done.stopped_at).not.toBeNull();
    must("stop expired", await p.api("POST", `/lab-instances/${inst.id}/stop`, { as: "student" }), 409);
  });

  it("two nodes sweeping the same database act on each instance once", async () => {
    const second = await startNode(p.db.url, {
      SERVICES: "lab-instances",
      LAB_START_TIMEOUT_S: "1",
      LAB_SWEEP_INTERVAL_MS: "50",
    });
    try {
      await w.reset();
      // Twenty due instances: 2 students × 10 labs (the partial unique index allows one active per pair).
      const [labs] = await p.sequelize.query(
        `INSERT INTO labs (name, docker_image, status, created_by)
         SELECT 'Sweep ' || g, 'registry.autolabs.local/labs/x:1', 'approved', $teacher FROM generate_series(1, 10) g RETURNING id`,
        { bind: { teacher: w.ids.teacher } },
      );
      const [inserted] = await p.sequelize.query(
        `INSERT INTO lab_instances (lab_id, course_id, student_id, status, created_at)
         SELECT l.id, $course, s.id, 'pending', now() - interval '1 hour'
           FROM unnest($labs::int[]) AS l(id) CROSS JOIN unnest($students::int[]) AS s(id)
         RETURNING id`,
        {
          bind: {
            course: w.course,
            labs: (labs as { id: number }[]).map((l) => l.id),
            students: [w.ids.student, w.ids.student2],
          },
        },
      );
      const ids = (inserted as { id: number }[]).map((r) => r.id);
      expect(ids).toHaveLength(20);
      const reports = await Promise.all([
        p.broker.call<SweepReport, Record<string, never>>(
          "lab-instances.sweep",
          {},
          { meta: { user: systemPrincipal("test") } },
        ),
        second.broker.call<SweepReport, Record<string, never>>(
          "lab-instances.sweep",
          {},
          { meta: { user: systemPrincipal("test") } },
        ),
      ]);
      await until("all failed", async () => {
        const [rows] = await p.sequelize.query(
          "SELECT count(*)::int AS n FROM lab_instances WHERE id = ANY($ids) AND status = 'failed'",
          {
            bind: { ids },
          },
        );
        return (rows as { n: number }[])[0].n === ids.length;
      });
      const [cleanups] = await p.sequelize.query(
        "SELECT lab_instance_id, count(*)::int AS n FROM task_outbox WHERE lab_instance_id = ANY($ids) AND task_name = 'cleanup_lab' GROUP BY 1",
        { bind: { ids } },
      );
      expect((cleanups as { n: number }[]).map((c) => c.n)).toEqual(ids.map(() => 1));
      expect(reports.some((r) => r.swept)).toBe(true);
    } finally {
      await second.stop();
    }
  });
});

/* ───────────────────────────── end to end with the simulated runner ───────────────────────────── */

describe("embedded end to end (tasks service with its simulated runner)", () => {
  let p: TestPlatform;
  let w: World;

  beforeAll(async () => {
    // Every service, no CELERY_* env: the tasks service publishes to its simulated runner.
    p = await startTestPlatform({});
    w = await world(p, 1);
  });
  afterAll(async () => {
    await stopOnce();
  });
  let stopped = false;
  const stopOnce = async () => {
    if (stopped || !ifAssigned(p)) return;
    stopped = true;
    await p.stop();
  };

  it("start → running by itself, connection works, stop → stopped; the SSE stream shows it all", async () => {
    const inst = must("start", await w.start(w.labs[0]), 202).json<Instance>();
    const s = await openStream(p, `/lab-instances/${inst.id}/events`, await p.token("student"));
    const running = await until(
      "running",
      async () => {
        const i = await w.get(inst.id);
        return i.status === "running" ? i : null;
      },
      20_000,
    );
    expect(running.connection_url).toEqual(expect.any(String));
    const conn = must(
      "connection",
      await p.api("GET", `/lab-instances/${inst.id}/connection`, { as: "student" }),
      200,
    ).json<Instance>();
    expect(conn.connection_url).toBe(running.connection_url);
    must("stop", await p.api("POST", `/lab-instances/${inst.id}/stop`, { as: "student" }), 202);
    const stopped = await until(
      "stopped",
      async () => {
        const i = await w.get(inst.id);
        return i.status === "stopped" ? i : null;
      },
      20_000,
    );
    expect(stopped.stopped_at).not.toBeNull();
    await s.ended;
    expect(s.events.map((e) => statusOf(e))).toEqual(["pending", "running", "stopping", "stopped"]);
  });

  it("a graceful stop ends open streams at once instead of waiting for them", async () => {
    const inst = must("start", await w.start(w.labs[0]), 202).json<Instance>();
    const s = await openStream(p, `/lab-instances/${inst.id}/events`, await p.token("student"));
    await s.waitFor(1);
    // An open stream is not a tracked context: the graceful stop's wait for in-flight requests (up to its
    // 10 s timeout) does not wait for it; the gateway ends the stream itself when it stops.
    const tracked = (o: unknown) => (o as { _trackedContexts: unknown[] })._trackedContexts;
    expect(tracked(p.broker.getLocalService("api-gateway"))).toHaveLength(0);
    expect(tracked(p.broker)).toHaveLength(0);
    await stopOnce();
    await s.ended;
  });
});
