/**
 * Rows of the tables the courses service owns (schema: platform/migrations/; queried with SQL, no ORM models),
 * declared once as JSON Schema: the TypeScript type and the OpenAPI document's component both come from here.
 */
import { s, type Infer } from "../../lib/schema";
import { ROLES } from "../../lib/principal";

const id = s.integer({ minimum: 1 });

export const Course = s.object(
  {
    id,
    name: s.string({ minLength: 1, maxLength: 200 }),
    description: s.nullable(s.string({ maxLength: 5000, description: "null: cleared" })),
    owner_id: s.integer({ minimum: 1, description: "The teacher (or admin) who runs the course" }),
    listed: s.boolean({
      description: "Shown in the catalog (GET /courses/catalog) to every signed-in user; set by the owner or an admin",
    }),
    created_at: s.dateTime(),
    updated_at: s.dateTime(),
  },
  { title: "Course" },
);
export type CourseRow = Infer<typeof Course>;

/** A student of a course (GET /courses/{id}/students). */
export const CourseStudent = s.object(
  {
    id,
    email: s.nullable(s.string()),
    name: s.nullable(s.string()),
    role: s.enum(ROLES),
    assigned_at: s.dateTime(),
  },
  { title: "CourseStudent" },
);

/** The answer of POST /courses/{id}/students. */
export const StudentsAssigned = s.object(
  {
    course_id: id,
    added: s.array(id, { description: "Newly assigned, in id order" }),
    already_assigned: s.array(id, { description: "Asked for but assigned before" }),
  },
  { title: "StudentsAssigned" },
);

/** The answer of POST /courses/{id}/labs: the link. */
export const CourseLabLink = s.object({ course_id: id, lab_id: id }, { title: "CourseLabLink" });

/** The caller's own standing with a catalog course. */
export const CATALOG_MEMBERSHIPS = ["member", "request_pending", "none"] as const;
export type CatalogMembership = (typeof CATALOG_MEMBERSHIPS)[number];

/** An item of `GET /courses/catalog`: a listed course, its owner's name and the caller's standing with it. */
export const CatalogCourse = s.object(
  {
    id,
    name: s.string({ minLength: 1, maxLength: 200 }),
    description: s.nullable(s.string({ maxLength: 5000 })),
    owner_id: id,
    owner_name: s.nullable(s.string()),
    created_at: s.dateTime(),
    membership: s.enum(CATALOG_MEMBERSHIPS, {
      description:
        "member: the caller is assigned to it (student) or owns it; request_pending: the caller has a pending " +
        "access request for it; none: neither (they may ask to join with POST /access-requests)",
    }),
  },
  { title: "CatalogCourse" },
);
export type CatalogCourseRow = Infer<typeof CatalogCourse>;
