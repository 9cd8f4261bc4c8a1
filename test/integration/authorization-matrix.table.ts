/**
 * The authorization matrix of /api/v1: for every route the gateway serves, the exact status each kind of
 * caller gets, with the ids it is tried with spelled out. Data only; authorization-matrix.test.ts runs it
 * and fails for a route without a row here (and for a row whose route the gateway does not have).
 *
 * Reviewed against DESIGN.md "Access rules" and "HTTP API":
 *  - no credentials → 401 on everything but the public routes (health, the browser-login routes);
 *  - a role that may never call an action → 403, before any lookup (it learns nothing about ids);
 *  - an object the caller may not see → 404 (no existence leak); seen but not theirs to change → 403;
 *  - admin: everything; teacher: own courses (owner_of_course), own labs (created_lab), the approved labs
 *    (the catalogue); student: assigned courses, their approved attached labs, own instances and requests;
 *  - list answers are checked against the caller's scope (`scope`), so ids in the query leak nothing.
 *
 * The world (built by the test, ids resolved from the `{placeholders}`):
 *   ownerTeacher  (T1, the demo `teacher`)    owns courseA; created labApprovedA (approved, attached to A) and
 *                                              labDraftT1 (draft, also attached to A)
 *   otherTeacher  (T2, a token signed for a second teacher) owns courseB; created labApprovedB (attached to
 *                                              B) and labPendingT2 (pending approval, attached nowhere)
 *   assignedStudent   (S1, demo `student`)  assigned to courseA; running instance instS1A (labApprovedA in A);
 *                                              pending request reqS1B to join courseB
 *   unassignedStudent (S2, demo `student2`) NOT assigned to courseA, assigned to courseB; running instance
 *                                              instS2B (labApprovedB in B); pending request reqS2A to join A
 *   admin (demo `admin`), anonymous (no credentials)
 * So on courseA's objects, otherTeacher tries another teacher's course and unassignedStudent another student's
 * objects; the rows on courseB's objects turn it around.
 *
 * `fresh`: the call needs objects of its own (it changes or deletes them): the test creates a new set before
 * EACH caller's call, named {fresh.course}, {fresh.lab}, {fresh.instance}, {fresh.request}:
 *   course        a course of T1 with S1 assigned (no labs)
 *   courseWithLab the same, with labApprovedA attached
 *   draftLab | pendingLab | approvedLab   a lab of T1 in that status, attached nowhere
 *   labInA        an approved lab of T1 attached to courseA;   labInB: an approved lab of T2 attached to courseB
 *   instanceS1A   a running instance of S1 in courseA (on a labInA);  instanceS2B: of S2 in courseB
 *   requestS2     a course of T1 with S1 assigned, and S2's pending request to join it ({fresh.request})
 */

export const CALLERS = [
  "anonymous",
  "admin",
  "ownerTeacher",
  "otherTeacher",
  "assignedStudent",
  "unassignedStudent",
] as const;
export type Caller = (typeof CALLERS)[number];

/** Expected statuses in CALLERS order: anonymous, admin, ownerTeacher, otherTeacher, assignedStudent, unassignedStudent. */
export type Statuses = readonly [number, number, number, number, number, number];

export type FreshKind =
  | "course"
  | "courseWithLab"
  | "draftLab"
  | "pendingLab"
  | "approvedLab"
  | "labInA"
  | "labInB"
  | "instanceS1A"
  | "instanceS2B"
  | "requestS2";

/** Which DESIGN visibility rule a 2xx list answer is checked against (exactly the visible rows, no others). */
export type Scope = "users" | "courses" | "courseStudents" | "courseLabs" | "labs" | "instances" | "requests";

export interface MatrixCase {
  /** What is tried and whose ids it uses. */
  what: string;
  /** Path under /api/v1 with {placeholders} (path and query). */
  path: string;
  /** JSON body; a string "{name}" is replaced by that id (a number). */
  body?: Record<string, unknown>;
  fresh?: FreshKind;
  expect: Statuses;
  scope?: Scope;
  /** An event stream: only the status and content type are read. */
  stream?: true;
  /** A 2xx write that changes nothing in the database (sessions, logins). */
  writesNothing?: true;
}

export interface MatrixRow {
  /** "METHOD /path/:param" exactly as the gateway's alias list names it (under /api/v1). */
  route: string;
  cases: readonly MatrixCase[];
}

const LAB_BODY = {
  name: "Matrix lab",
  docker_image: "registry.autolabs.local/labs/matrix:1.0",
  resources: { cpu: "500m", memory: "512Mi", storage: "1Gi" },
};

/* prettier-ignore */
export const MATRIX: readonly MatrixRow[] = [
  //                                                                                               anon admin  T1   T2   S1   S2
  // ───────────── gateway ─────────────
  { route: "GET /health", cases: [
    { what: "health (public)", path: "/health", expect: [200, 200, 200, 200, 200, 200] },
  ] },
  { route: "GET /openapi.json", cases: [
    { what: "the API description (public)", path: "/openapi.json", expect: [200, 200, 200, 200, 200, 200] },
  ] },

  // ───────────── auth: browser login (public), who am I ─────────────
  { route: "GET /auth/login", cases: [
    { what: "start a login (public: 302 to the IdP)", path: "/auth/login", expect: [302, 302, 302, 302, 302, 302] },
  ] },
  { route: "POST /auth/login", cases: [
    { what: "start a login by form post (public)", path: "/auth/login", writesNothing: true, expect: [302, 302, 302, 302, 302, 302] },
  ] },
  { route: "GET /auth/callback", cases: [
    { what: "callback without state (public; refused as malformed for anyone)", path: "/auth/callback", expect: [400, 400, 400, 400, 400, 400] },
  ] },
  { route: "POST /auth/logout", cases: [
    { what: "logout without a session cookie (public, idempotent)", path: "/auth/logout", writesNothing: true, expect: [204, 204, 204, 204, 204, 204] },
  ] },
  { route: "GET /auth/me", cases: [
    { what: "own profile", path: "/auth/me", expect: [401, 200, 200, 200, 200, 200] },
  ] },

  // ───────────── users ─────────────
  { route: "GET /users", cases: [
    { what: "list (admin all; a teacher only students)", path: "/users?limit=100", scope: "users", expect: [401, 200, 200, 200, 403, 403] },
    { what: "?role=teacher (a teacher still sees no teacher)", path: "/users?role=teacher&limit=100", scope: "users", expect: [401, 200, 200, 200, 403, 403] },
  ] },
  { route: "GET /users/:id", cases: [
    { what: "S1 (a student of T1's courseA)", path: "/users/{assignedStudent}", expect: [401, 200, 200, 404, 200, 404] },
    { what: "S2 (a student of T2's courseB)", path: "/users/{unassignedStudent}", expect: [401, 200, 404, 200, 404, 200] },
    { what: "T1 (a teacher)", path: "/users/{ownerTeacher}", expect: [401, 200, 200, 404, 404, 404] },
    { what: "the admin", path: "/users/{admin}", expect: [401, 200, 404, 404, 404, 404] },
  ] },

  // ───────────── courses ─────────────
  { route: "GET /courses", cases: [
    { what: "list (admin all, teacher own, student assigned)", path: "/courses?limit=100", scope: "courses", expect: [401, 200, 200, 200, 200, 200] },
    { what: "?owner_id=T1 (T2 and S2 must get nothing of T1's)", path: "/courses?owner_id={ownerTeacher}&limit=100", scope: "courses", expect: [401, 200, 200, 200, 200, 200] },
  ] },
  { route: "POST /courses", cases: [
    { what: "body owner_id=T1 (T2 may not create a course for T1)", path: "/courses", body: { name: "Matrix course", owner_id: "{ownerTeacher}" }, expect: [401, 201, 201, 422, 403, 403] },
    { what: "no owner_id (the caller owns it: teacher or admin)", path: "/courses", body: { name: "Matrix course" }, expect: [401, 201, 201, 201, 403, 403] },
  ] },
  { route: "GET /courses/catalog", cases: [
    { what: "listed courses, to every signed-in user (none of the matrix's courses is listed)", path: "/courses/catalog?limit=100", expect: [401, 200, 200, 200, 200, 200] },
  ] },
  { route: "GET /courses/:id", cases: [
    { what: "courseA (T1's, S1 assigned)", path: "/courses/{courseA}", expect: [401, 200, 200, 404, 200, 404] },
    { what: "courseB (T2's, S2 assigned)", path: "/courses/{courseB}", expect: [401, 200, 404, 200, 404, 200] },
  ] },
  { route: "PUT /courses/:id", cases: [
    { what: "rename a fresh course of T1", path: "/courses/{fresh.course}", fresh: "course", body: { name: "Renamed" }, expect: [401, 200, 200, 404, 403, 403] },
    { what: "body owner_id=T2 on a fresh course of T1 (only an admin hands a course over)", path: "/courses/{fresh.course}", fresh: "course", body: { owner_id: "{otherTeacher}" }, expect: [401, 200, 422, 404, 403, 403] },
  ] },
  { route: "DELETE /courses/:id", cases: [
    { what: "a fresh course of T1", path: "/courses/{fresh.course}", fresh: "course", expect: [401, 204, 204, 404, 403, 403] },
  ] },
  { route: "GET /courses/:id/students", cases: [
    { what: "students of courseA (managing them is the owner's)", path: "/courses/{courseA}/students?limit=100", scope: "courseStudents", expect: [401, 200, 200, 404, 403, 404] },
    { what: "students of courseB", path: "/courses/{courseB}/students?limit=100", scope: "courseStudents", expect: [401, 200, 404, 200, 404, 403] },
  ] },
  { route: "POST /courses/:id/students", cases: [
    { what: "assign S2 to a fresh course of T1", path: "/courses/{fresh.course}/students", fresh: "course", body: { student_ids: ["{unassignedStudent}"] }, expect: [401, 200, 200, 404, 403, 403] },
  ] },
  { route: "DELETE /courses/:id/students/:student_id", cases: [
    { what: "remove S1 from a fresh course of T1", path: "/courses/{fresh.course}/students/{assignedStudent}", fresh: "course", expect: [401, 204, 204, 404, 403, 403] },
  ] },
  { route: "GET /courses/:id/labs", cases: [
    { what: "labs of courseA (a student sees only the approved one)", path: "/courses/{courseA}/labs?limit=100", scope: "courseLabs", expect: [401, 200, 200, 404, 200, 404] },
    { what: "labs of courseB", path: "/courses/{courseB}/labs?limit=100", scope: "courseLabs", expect: [401, 200, 404, 200, 404, 200] },
  ] },
  { route: "POST /courses/:id/labs", cases: [
    { what: "attach labApprovedB (catalogue) to a fresh course of T1", path: "/courses/{fresh.course}/labs", fresh: "course", body: { lab_id: "{labApprovedB}" }, expect: [401, 201, 201, 404, 403, 403] },
    { what: "attach T1's own draft labDraftT1 to a fresh course of T1", path: "/courses/{fresh.course}/labs", fresh: "course", body: { lab_id: "{labDraftT1}" }, expect: [401, 201, 201, 404, 403, 403] },
    { what: "body lab_id = labPendingT2 (T2's unapproved lab: T1 may not see it)", path: "/courses/{fresh.course}/labs", fresh: "course", body: { lab_id: "{labPendingT2}" }, expect: [401, 201, 404, 404, 403, 403] },
  ] },
  { route: "DELETE /courses/:id/labs/:lab_id", cases: [
    { what: "detach labApprovedA from a fresh course of T1", path: "/courses/{fresh.course}/labs/{labApprovedA}", fresh: "courseWithLab", expect: [401, 204, 204, 404, 403, 403] },
  ] },

  // ───────────── labs ─────────────
  { route: "GET /labs", cases: [
    { what: "list (teacher: own, approved, attached to own courses; student: approved of assigned courses)", path: "/labs?limit=100", scope: "labs", expect: [401, 200, 200, 200, 200, 200] },
    { what: "?course_id=courseB (T1 and S1 may not learn what T2's course holds)", path: "/labs?course_id={courseB}&limit=100", scope: "labs", expect: [401, 200, 200, 200, 200, 200] },
    { what: "?course_id=courseA", path: "/labs?course_id={courseA}&limit=100", scope: "labs", expect: [401, 200, 200, 200, 200, 200] },
    { what: "?status=pending_approval (T1 must not see T2's)", path: "/labs?status=pending_approval&limit=100", scope: "labs", expect: [401, 200, 200, 200, 200, 200] },
  ] },
  { route: "POST /labs", cases: [
    { what: "create a draft", path: "/labs", body: LAB_BODY, expect: [401, 201, 201, 201, 403, 403] },
  ] },
  { route: "GET /labs/:id", cases: [
    { what: "labDraftT1 (T1's draft, attached to courseA)", path: "/labs/{labDraftT1}", expect: [401, 200, 200, 404, 404, 404] },
    { what: "labApprovedA (approved, attached to courseA)", path: "/labs/{labApprovedA}", expect: [401, 200, 200, 200, 200, 404] },
    { what: "labPendingT2 (T2's, pending approval)", path: "/labs/{labPendingT2}", expect: [401, 200, 404, 200, 404, 404] },
    { what: "labApprovedB (approved, attached to courseB)", path: "/labs/{labApprovedB}", expect: [401, 200, 200, 200, 404, 200] },
  ] },
  { route: "PUT /labs/:id", cases: [
    { what: "edit a fresh draft of T1", path: "/labs/{fresh.lab}", fresh: "draftLab", body: { description: "edited" }, expect: [401, 200, 200, 404, 403, 403] },
    { what: "edit a fresh approved lab of T1 (T2 sees it in the catalogue, may not change it)", path: "/labs/{fresh.lab}", fresh: "approvedLab", body: { name: "Renamed lab" }, expect: [401, 200, 200, 403, 403, 403] },
    { what: "status pending_approval on a fresh draft of T1 (a submit)", path: "/labs/{fresh.lab}", fresh: "draftLab", body: { status: "pending_approval" }, expect: [401, 200, 200, 404, 403, 403] },
  ] },
  { route: "DELETE /labs/:id", cases: [
    { what: "a fresh draft of T1", path: "/labs/{fresh.lab}", fresh: "draftLab", expect: [401, 204, 204, 404, 403, 403] },
    { what: "a fresh approved lab of T1", path: "/labs/{fresh.lab}", fresh: "approvedLab", expect: [401, 204, 204, 403, 403, 403] },
  ] },
  { route: "POST /labs/:id/submit", cases: [
    { what: "submit a fresh draft of T1", path: "/labs/{fresh.lab}/submit", fresh: "draftLab", expect: [401, 200, 200, 404, 403, 403] },
  ] },
  { route: "POST /labs/:id/approve", cases: [
    { what: "approve a fresh pending lab of T1 (admin only, even for its creator)", path: "/labs/{fresh.lab}/approve", fresh: "pendingLab", expect: [401, 200, 403, 403, 403, 403] },
    { what: "approve a fresh draft of T1 straight away (the seed's create → approve)", path: "/labs/{fresh.lab}/approve", fresh: "draftLab", expect: [401, 200, 403, 403, 403, 403] },
  ] },
  { route: "POST /labs/:id/reject", cases: [
    { what: "reject a fresh pending lab of T1 (admin only)", path: "/labs/{fresh.lab}/reject", fresh: "pendingLab", body: { reason: "Image too large" }, expect: [401, 200, 403, 403, 403, 403] },
  ] },

  // ───────────── lab instances ─────────────
  { route: "GET /lab-instances", cases: [
    { what: "list (student own, teacher in own courses, admin all)", path: "/lab-instances?limit=100", scope: "instances", expect: [401, 200, 200, 200, 200, 200] },
    { what: "?course_id=courseA (T2 and S2 must get nothing of it)", path: "/lab-instances?course_id={courseA}&limit=100", scope: "instances", expect: [401, 200, 200, 200, 200, 200] },
    { what: "?student_id=S1 (another student's instances)", path: "/lab-instances?student_id={assignedStudent}&limit=100", scope: "instances", expect: [401, 200, 200, 200, 200, 200] },
  ] },
  { route: "POST /lab-instances", cases: [
    { what: "start a fresh approved lab of courseA in courseA", path: "/lab-instances", fresh: "labInA", body: { lab_id: "{fresh.lab}", course_id: "{courseA}" }, expect: [401, 403, 403, 403, 202, 404] },
    { what: "body course_id=courseB (S2's course) with a fresh lab of courseB", path: "/lab-instances", fresh: "labInB", body: { lab_id: "{fresh.lab}", course_id: "{courseB}" }, expect: [401, 403, 403, 403, 404, 202] },
    { what: "body lab_id of courseB's lab with course_id=courseA (lab not attached there)", path: "/lab-instances", body: { lab_id: "{labApprovedB}", course_id: "{courseA}" }, expect: [401, 403, 403, 403, 404, 404] },
    { what: "body lab_id of courseA's draft (attached, not approved)", path: "/lab-instances", body: { lab_id: "{labDraftT1}", course_id: "{courseA}" }, expect: [401, 403, 403, 403, 409, 404] },
  ] },
  { route: "GET /lab-instances/:id", cases: [
    { what: "instS1A (S1's, in courseA)", path: "/lab-instances/{instS1A}", expect: [401, 200, 200, 404, 200, 404] },
    { what: "instS2B (S2's, in courseB)", path: "/lab-instances/{instS2B}", expect: [401, 200, 404, 200, 404, 200] },
  ] },
  { route: "POST /lab-instances/:id/stop", cases: [
    { what: "stop a fresh running instance of S1 in courseA", path: "/lab-instances/{fresh.instance}/stop", fresh: "instanceS1A", expect: [401, 202, 202, 404, 202, 404] },
    { what: "stop a fresh running instance of S2 in courseB", path: "/lab-instances/{fresh.instance}/stop", fresh: "instanceS2B", expect: [401, 202, 404, 202, 404, 202] },
  ] },
  { route: "GET /lab-instances/:id/connection", cases: [
    { what: "instS1A (running)", path: "/lab-instances/{instS1A}/connection", expect: [401, 200, 200, 404, 200, 404] },
    { what: "instS2B (running)", path: "/lab-instances/{instS2B}/connection", expect: [401, 200, 404, 200, 404, 200] },
  ] },
  { route: "GET /lab-instances/events", cases: [
    { what: "the caller's stream of every instance they may see (which ones: user-events.test.ts)", path: "/lab-instances/events", stream: true, expect: [401, 200, 200, 200, 200, 200] },
  ] },
  { route: "GET /lab-instances/:id/events", cases: [
    { what: "event stream of instS1A", path: "/lab-instances/{instS1A}/events", stream: true, expect: [401, 200, 200, 404, 200, 404] },
    { what: "event stream of instS2B", path: "/lab-instances/{instS2B}/events", stream: true, expect: [401, 200, 404, 200, 404, 200] },
  ] },

  // ───────────── access requests ─────────────
  { route: "GET /access-requests", cases: [
    { what: "list (student own, teacher for own courses, admin all)", path: "/access-requests?limit=100", scope: "requests", expect: [401, 200, 200, 200, 200, 200] },
    { what: "?course_id=courseB (T1 must get nothing of T2's course)", path: "/access-requests?course_id={courseB}&limit=100", scope: "requests", expect: [401, 200, 200, 200, 200, 200] },
    { what: "?student_id=S2 (S1 must get nothing of S2's)", path: "/access-requests?student_id={unassignedStudent}&limit=100", scope: "requests", expect: [401, 200, 200, 200, 200, 200] },
  ] },
  { route: "POST /access-requests", cases: [
    { what: "ask to join a fresh course of T1 (S1 is already in it)", path: "/access-requests", fresh: "course", body: { course_id: "{fresh.course}", message: "please" }, expect: [401, 403, 403, 403, 409, 201] },
    { what: "body course_id=courseB (S1 asked already, S2 is in it)", path: "/access-requests", body: { course_id: "{courseB}" }, expect: [401, 403, 403, 403, 409, 409] },
  ] },
  { route: "GET /access-requests/:id", cases: [
    { what: "reqS2A (S2 asks to join T1's courseA)", path: "/access-requests/{reqS2A}", expect: [401, 200, 200, 404, 404, 200] },
    { what: "reqS1B (S1 asks to join T2's courseB)", path: "/access-requests/{reqS1B}", expect: [401, 200, 404, 200, 200, 404] },
  ] },
  { route: "POST /access-requests/:id/approve", cases: [
    { what: "S2's fresh request to join a fresh course of T1", path: "/access-requests/{fresh.request}/approve", fresh: "requestS2", expect: [401, 200, 200, 404, 403, 403] },
  ] },
  { route: "POST /access-requests/:id/reject", cases: [
    { what: "S2's fresh request to join a fresh course of T1", path: "/access-requests/{fresh.request}/reject", fresh: "requestS2", body: { reason: "course is full" }, expect: [401, 200, 200, 404, 403, 403] },
  ] },
  { route: "POST /access-requests/:id/cancel", cases: [
    { what: "S2's fresh request (only the requester cancels)", path: "/access-requests/{fresh.request}/cancel", fresh: "requestS2", expect: [401, 403, 403, 403, 404, 200] },
  ] },
];
