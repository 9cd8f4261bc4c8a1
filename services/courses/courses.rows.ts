/** Row types of the tables the courses service owns (schema: platform/migrations/; queried with SQL, no ORM models). */

export interface CourseRow {
  id: number;
  name: string;
  description: string;
  owner_id: number;
  /** Shown in the catalog (GET /courses/catalog) to every signed-in user; set by the owner or an admin. */
  listed: boolean;
  created_at: Date;
  updated_at: Date;
}

/** The caller's own standing with a catalog course. */
export type CatalogMembership = "member" | "request_pending" | "none";
export const CATALOG_MEMBERSHIPS: readonly CatalogMembership[] = ["member", "request_pending", "none"];

/** An item of `GET /courses/catalog`: a listed course, its owner's name and the caller's standing with it. */
export interface CatalogCourseRow {
  id: number;
  name: string;
  description: string;
  owner_id: number;
  owner_name: string | null;
  created_at: Date;
  /**
   * member: the caller is assigned to it (student) or owns it; request_pending: the caller has a pending
   * access request for it; none: neither (they may ask to join with POST /access-requests).
   */
  membership: CatalogMembership;
}
