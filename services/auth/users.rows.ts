/** Row types of the users table (schema: platform/migrations/; queried with SQL, no ORM models). Rows mirror the IdP's accounts. */
import type { Role } from "../../lib/principal";

export interface UserRow {
  id: number;
  /** The IdP's `sub`; never sent to clients (selected explicitly where needed). */
  external_id?: string;
  email: string | null;
  name: string | null;
  role: Role;
  created_at: Date;
  updated_at: Date;
  last_login_at: Date | null;
}
