/**
 * The course catalog (DESIGN "Course catalog"): `listed` set by the owner or an admin (create and PUT),
 * `GET /courses/catalog` for any signed-in user with the owner's name and the caller's standing, paginated like
 * every list; an access request reveals a course's fields only when it is listed (or the student is in it),
 * so a request for an unlisted course still looks exactly like one for an id that names no course.
 *
 * Accounts: the IdP's demo admin, teacher, student, student2; teacher2 and student3 are forged with the
 * IdP's key (see test/support/http-api.ts).
 */
import { startTestPlatform, type TestPlatform } from "../support/platform";
import { checkedApi, fixtures, locs, uniqueName, type Api, type Fixtures, type Ids } from "../support/http-api";

let p: TestPlatform;
let api: Api;
let f: Fixtures;
let ids: Ids;

beforeAll(async () => {
  p = await startTestPlatform({ SERVICES: "api-gateway,auth,courses,labs,access" });
  api = checkedApi(p);
  f = await fixtures(p, api);
  ids = f.ids;
});
afterAll(async () => {
  await p.stop();
});

interface CatalogItem {
  id: number;
  name: string;
  description: string;
  owner_id: number;
  owner_name: string | null;
  created_at: string;
  membership: "member" | "request_pending" | "none";
}
interface Page<T> {
  items: T[];
  total: number;
  offset: number;
  limit: number;
}

async function catalog(as: string, query = ""): Promise<Page<CatalogItem>> {
  const res = await api("GET", `/courses/catalog?limit=100${query}`, { as });
  expect(res.status).toBe(200);
  return res.body as Page<CatalogItem>;
}

describe("listed", () => {
  it("defaults to false; set by the owner on create and PUT, by an admin on any course; never null", async () => {
    const plain = await api("POST", "/courses", { as: "teacher", body: { name: uniqueName("Plain") } });
    expect(plain.body).toMatchObject({ listed: false });
    const listed = await api("POST", "/courses", { as: "teacher", body: { name: uniqueName("Open"), listed: true } });
    expect(listed.status).toBe(201);
    expect(listed.body).toMatchObject({ listed: true });
    const id = (plain.body as { id: number }).id;
    expect((await api("PUT", `/courses/${id}`, { as: "teacher", body: { listed: true } })).body).toMatchObject({
      listed: true,
    });
    expect(await f.row("courses", id)).toMatchObject({ listed: true });
    expect((await api("PUT", `/courses/${id}`, { as: "admin", body: { listed: false } })).body).toMatchObject({
      listed: false,
    });
    for (const bad of [null, "yes", 1]) {
      const res = await api("PUT", `/courses/${id}`, { as: "teacher", body: { listed: bad } });
      expect(res.status).toBe(422);
      expect(locs(res)).toEqual(["body.listed"]);
    }
    // Not the owner: the same 404 as for any other change of the course.
    expect((await api("PUT", `/courses/${id}`, { as: "teacher2", body: { listed: true } })).status).toBe(404);
    expect(await f.row("courses", id)).toMatchObject({ listed: false });
  });
});

describe("GET /courses/catalog", () => {
  it("lists listed courses only, to every role, with the owner's name and the caller's standing", async () => {
    const name = uniqueName("Catalogued");
    const open = await f.course("teacher", name, { description: "Open to all", listed: true });
    const hidden = await f.course("teacher", uniqueName("Hidden"));
    const assignedTo = await f.course("teacher2", uniqueName("Catalogued assigned"), { listed: true });
    await f.assign(assignedTo, ids.student);

    for (const as of ["admin", "teacher", "teacher2", "student", "student2"]) {
      const page = await catalog(as);
      const seen = page.items.map((c) => c.id);
      expect(seen).toContain(open);
      expect(seen).not.toContain(hidden);
      expect(page.total).toBe(page.items.length);
      const item = page.items.find((c) => c.id === open);
      expect(Object.keys(item ?? {}).sort()).toEqual([
        "created_at",
        "description",
        "id",
        "membership",
        "name",
        "owner_id",
        "owner_name",
      ]);
      expect(item).toMatchObject({ name, description: "Open to all", owner_id: ids.teacher });
      expect(typeof item?.owner_name).toBe("string");
    }
    const standing = async (as: string, id: number) => (await catalog(as)).items.find((c) => c.id === id)?.membership;
    expect(await standing("teacher", open)).toBe("member");
    expect(await standing("teacher2", open)).toBe("none");
    expect(await standing("student", assignedTo)).toBe("member");
    expect(await standing("student2", open)).toBe("none");

    // Ask to join from the catalog: request_pending, then member once the owner approves.
    const req = await api("POST", "/access-requests", { as: "student2", body: { course_id: open } });
    expect(req.status).toBe(201);
    expect(await standing("student2", open)).toBe("request_pending");
    const approved = await api("POST", `/access-requests/${(req.body as { id: number }).id}/approve`, {
      as: "teacher",
    });
    expect(approved.status).toBe(200);
    expect(await standing("student2", open)).toBe("member");
  });

  it("pages, sorts and filters like every list; bad paging is a 422", async () => {
    const prefix = uniqueName("Paged");
    for (const n of ["c", "a", "b"]) await f.course("teacher", `${prefix} ${n}`, { listed: true });
    const q = `&q=${encodeURIComponent(prefix)}`;
    const all = await catalog("student", `${q}&sort=name`);
    expect(all.items.map((c) => c.name)).toEqual([`${prefix} a`, `${prefix} b`, `${prefix} c`]);
    const res = await api("GET", `/courses/catalog?limit=2&offset=1&sort=-name${q}`, { as: "student" });
    expect(res.status).toBe(200);
    const page = res.body as Page<CatalogItem>;
    expect(page).toMatchObject({ total: 3, offset: 1, limit: 2 });
    expect(page.items.map((c) => c.name)).toEqual([`${prefix} b`, `${prefix} a`]);
    for (const bad of ["limit=101", "sort=owner_id", "offset=-1"]) {
      expect((await api("GET", `/courses/catalog?${bad}`, { as: "student" })).status).toBe(422);
    }
    expect((await api("GET", "/courses/catalog")).status).toBe(401);
  });

  it("is its own route: /courses/{id} with a non-numeric id stays a 422", async () => {
    expect((await api("GET", "/courses/catalogue", { as: "student" })).status).toBe(422);
  });
});

describe("access requests and listing", () => {
  it("a request for an unlisted course answers exactly like one for a course that does not exist", async () => {
    const unlisted = await f.course("teacher2", uniqueName("Unlisted"));
    // All but what differs by construction (the request's own id and time, the id asked for).
    const shapeOf = (body: unknown) => {
      const rest = { ...(body as Record<string, unknown>) };
      for (const key of ["id", "course_id", "created_at"]) Reflect.deleteProperty(rest, key);
      return rest;
    };
    const forUnlisted = await api("POST", "/access-requests", { as: "student3", body: { course_id: unlisted } });
    const forNothing = await api("POST", "/access-requests", { as: "student3", body: { course_id: 2_000_000_123 } });
    expect(forUnlisted.status).toBe(201);
    expect(forNothing.status).toBe(201);
    expect(shapeOf(forUnlisted.body)).toEqual(shapeOf(forNothing.body));
    expect(forUnlisted.body).toMatchObject({ course_name: null, course_owner_id: null });
  });

  it("a request for a listed course shows the course, as the catalog does", async () => {
    const name = uniqueName("Listed");
    const listed = await f.course("teacher2", name, { listed: true });
    const res = await api("POST", "/access-requests", { as: "student3", body: { course_id: listed } });
    expect(res.status).toBe(201);
    expect(res.body).toMatchObject({ course_id: listed, course_name: name, course_owner_id: ids.teacher2 });
  });
});
