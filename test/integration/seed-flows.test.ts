/**
 * The seed's flows, in the seed's order (its API list: "POST /courses Create course", "POST /labs Create lab
 * (admin)", "POST /labs/{id}/approve Approve lab (admin)", a student asking to join a course, "POST
 * /lab-instances Start lab (student)", "connection details (URL, port)"), end to end through HTTP with the
 * real Celery worker (Debian python3-celery, test/celery_worker) over the real RabbitMQ and Redis:
 * an admin's course → create → approve → catalog → access request → approve → start → running.
 */
import { randomBytes } from "node:crypto";
import { startCeleryWorker, type CeleryWorker } from "../support/celery-worker";
import { openStream, statusOf, until, type Instance } from "../support/lab-instances";
import { AMQP_URL, startTestPlatform, type ApiResponse, type TestPlatform } from "../support/platform";
import { redisUrl } from "../support/servers";

const queue = `seed-flows-${randomBytes(4).toString("hex")}`;
const RESULTS = redisUrl(9);

let p: TestPlatform;
let worker: CeleryWorker;

beforeAll(async () => {
  p = await startTestPlatform({ CELERY_BROKER_URL: AMQP_URL, CELERY_RESULT_BACKEND: RESULTS, CELERY_QUEUE: queue });
  worker = await startCeleryWorker({ queue, brokerUrl: AMQP_URL, resultBackend: RESULTS });
}, 120_000);

afterAll(async () => {
  await worker.stop();
  await p.stop();
});

function must(what: string, res: ApiResponse, status: number): ApiResponse {
  if (res.status !== status)
    throw new Error(`${what}: expected ${status}, got ${res.status} ${JSON.stringify(res.body)}`);
  return res;
}

it("admin course; create → approve; catalog → access request → approve → start → running", async () => {
  const admin = await p.userId("admin");
  const student = await p.userId("student");

  // "POST /courses": the admin creates a course without naming an owner, and lists it in the catalog.
  const course = must(
    "create course",
    await p.api("POST", "/courses", {
      as: "admin",
      body: { name: "Python Basics", description: "The seed's course", listed: true },
    }),
    201,
  ).json<{ id: number; owner_id: number; listed: boolean }>();
  expect(course).toMatchObject({ owner_id: admin, listed: true });

  // "POST /labs" then "POST /labs/{id}/approve" (admin): straight from draft.
  const lab = must(
    "create lab",
    await p.api("POST", "/labs", {
      as: "admin",
      body: {
        name: "Python Basic Lab",
        docker_image: "registry.gitlab.com/autolabs/labs/python-basic:v1.0.0",
        resources: { cpu: "500m", memory: "512Mi", storage: "1Gi" },
      },
    }),
    201,
  ).json<{ id: number; status: string }>();
  expect(lab.status).toBe("draft");
  const approved = must("approve", await p.api("POST", `/labs/${lab.id}/approve`, { as: "admin" }), 200).json<{
    status: string;
    approved_by: number;
  }>();
  expect(approved).toMatchObject({ status: "approved", approved_by: admin });
  must("attach", await p.api("POST", `/courses/${course.id}/labs`, { as: "admin", body: { lab_id: lab.id } }), 201);

  // A student finds the course in the catalog and asks to join.
  type Catalog = { items: { id: number; name: string; owner_name: string | null; membership: string }[] };
  const catalog = async () =>
    must("catalog", await p.api("GET", "/courses/catalog", { as: "student" }), 200)
      .json<Catalog>()
      .items.find((c) => c.id === course.id);
  expect(await catalog()).toMatchObject({ name: "Python Basics", membership: "none" });
  expect((await catalog())?.owner_name).toEqual(expect.any(String));
  const request = must(
    "access request",
    await p.api("POST", "/access-requests", { as: "student", body: { course_id: course.id, message: "May I join?" } }),
    201,
  ).json<{ id: number; status: string; course_name: string }>();
  expect(request).toMatchObject({ status: "pending", course_name: "Python Basics" });
  expect((await catalog())?.membership).toBe("request_pending");

  // The owner (the admin) approves: the student is in.
  must("approve request", await p.api("POST", `/access-requests/${request.id}/approve`, { as: "admin" }), 200);
  expect((await catalog())?.membership).toBe("member");
  const labs = must("course labs", await p.api("GET", `/courses/${course.id}/labs`, { as: "student" }), 200).json<{
    items: { id: number }[];
  }>();
  expect(labs.items.map((l) => l.id)).toEqual([lab.id]);

  // Start: 202 pending; the real worker takes it to running; the caller's stream shows it.
  const stream = await openStream(p, "/lab-instances/events", await p.token("student"));
  const instance = must(
    "start",
    await p.api("POST", "/lab-instances", { as: "student", body: { lab_id: lab.id, course_id: course.id } }),
    202,
  ).json<Instance>();
  expect(instance).toMatchObject({ status: "pending", student_id: student, lab_name: "Python Basic Lab" });
  try {
    await until(
      "running on the stream",
      () => Promise.resolve(stream.events.some((e) => statusOf(e) === "running")),
      20_000,
    );
    expect(stream.events.map(statusOf)).toEqual(["pending", "running"]);
  } finally {
    stream.close();
  }
  const connection = must(
    "connection",
    await p.api("GET", `/lab-instances/${instance.id}/connection`, { as: "student" }),
    200,
  ).json<{ connection_url: string; port: number }>();
  // What labs_worker.py returned; no port from it, so the https default.
  expect(connection).toMatchObject({ connection_url: `https://labs.example.test/i/${instance.id}`, port: 443 });
  const mine = must("list", await p.api("GET", "/lab-instances", { as: "student" }), 200).json<{ items: Instance[] }>();
  expect(mine.items.find((i) => i.id === instance.id)).toMatchObject({
    status: "running",
    lab_name: "Python Basic Lab",
    course_name: "Python Basics",
  });

  must("stop", await p.api("POST", `/lab-instances/${instance.id}/stop`, { as: "student" }), 202);
  await until("stopped", async () => {
    const i = must("get", await p.api("GET", `/lab-instances/${instance.id}`, { as: "student" }), 200).json<Instance>();
    return i.status === "stopped";
  });
}, 90_000);
