/** Row types of the tables the courses service owns (schema: platform/migrations/; queried with SQL, no ORM models). */

export interface CourseRow {
  id: number;
  name: string;
  description: string;
  owner_id: number;
  created_at: Date;
  updated_at: Date;
}
