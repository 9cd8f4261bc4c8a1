/**
 * Rows of the users table (schema: platform/migrations/; queried with SQL, no ORM models), declared once as
 * JSON Schema (type and OpenAPI component). Rows mirror the IdP's accounts.
 */
import { s, type Infer } from "../../lib/schema";
import { ROLES } from "../../lib/principal";

export const User = s.object(
  {
    id: s.integer({ minimum: 1 }),
    email: s.nullable(s.string()),
    name: s.nullable(s.string()),
    role: s.enum(ROLES),
    created_at: s.dateTime(),
    updated_at: s.dateTime(),
    last_login_at: s.nullable(s.dateTime()),
  },
  { title: "User" },
);

export type UserRow = Infer<typeof User> & {
  /** The IdP's `sub`; never sent to clients (selected explicitly where needed). */
  external_id?: string;
};
