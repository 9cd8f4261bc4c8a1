/**
 * Identity rules: turn verified token claims into our identity. Pure (no framework imports) so the
 * gateway, the auth service and the unit tests share one definition.
 */
import type { ScopeSql } from "../../lib/access.rules";
import type { Principal, Role } from "../../lib/principal";

/** Highest privilege first: when a user holds several roles, the first match wins. */
const ROLE_PRECEDENCE: readonly Role[] = ["admin", "teacher", "student"];

/** Limits we store (users.external_id / email / name); longer values are not trusted verbatim. */
const MAX_SUB_LENGTH = 255;
const MAX_EMAIL_LENGTH = 320;
const MAX_NAME_LENGTH = 200;

const isPlainObject = (v: unknown): v is Record<string, unknown> =>
  typeof v === "object" && v !== null && !Array.isArray(v);

/**
 * Maps the Zitadel project roles claim to one platform role.
 * Shape: `{"teacher": {"<orgId>": "<org domain>"}, "admin": {...}}` — keys are role names, each value
 * is the map of organisations that granted it. Several roles → the highest wins; unknown keys are
 * ignored; a key whose value is not a non-empty org map is not a grant we recognise; no role → null
 * (the caller denies: deny by default).
 *
 * `allowedOrgs` (OIDC_ALLOWED_ORGS): a role counts only if one of the organisations that granted it is
 * listed. Zitadel lets a project be granted to other organisations, whose own admins then hand out its
 * roles; without this list any such organisation could make its users our admins. Empty: any organisation.
 */
export function roleFromClaim(claim: unknown, allowedOrgs: readonly string[]): Role | null {
  if (!isPlainObject(claim)) return null;
  const granted = new Set<Role>();
  for (const [key, orgs] of Object.entries(claim)) {
    // Zitadel role keys are case-sensitive, but an org that defines "Teacher" still means teacher.
    const name = key.trim().toLowerCase();
    const role = ROLE_PRECEDENCE.find((r) => r === name);
    if (role === undefined) continue;
    if (!isPlainObject(orgs) || Object.keys(orgs).length === 0) continue;
    // Own keys only: an org id such as "__proto__" or "constructor" is compared as the string it is.
    if (allowedOrgs.length > 0 && !Object.keys(orgs).some((org) => allowedOrgs.includes(org))) continue;
    granted.add(role);
  }
  return ROLE_PRECEDENCE.find((r) => granted.has(r)) ?? null;
}

export interface ClaimsIdentity {
  /** The IdP's `sub`, stored as users.external_id. Opaque string (Zitadel's are 18+ digits: never a number). */
  externalId: string;
  email: string | null;
  name: string | null;
  /** null: the IdP granted no platform role; the caller must refuse access. */
  role: Role | null;
}

/**
 * Thrown for claims we cannot build an identity from. Same shape as the platform's `unauthorized()`
 * (Moleculer errors: numeric `code` = HTTP status, string `type`), without importing Moleculer.
 */
export class InvalidClaimsError extends Error {
  readonly code = 401;
  readonly type = "UNAUTHORIZED";
  constructor(detail: string) {
    super(detail);
    this.name = "InvalidClaimsError";
  }
}

function cleanString(v: unknown, max: number): string | null {
  if (typeof v !== "string") return null;
  const s = v.trim();
  return s.length > 0 && s.length <= max ? s : null;
}

function cleanEmail(v: unknown): string | null {
  const s = cleanString(v, MAX_EMAIL_LENGTH);
  // Deliberately loose: the IdP owns email validation; we only refuse what is clearly not an address.
  return s !== null && /^[^\s@]+@[^\s@]+$/.test(s) ? s : null;
}

function displayName(p: Record<string, unknown>): string | null {
  const full = cleanString(p.name, MAX_NAME_LENGTH);
  if (full) return full;
  const parts = [cleanString(p.given_name, MAX_NAME_LENGTH), cleanString(p.family_name, MAX_NAME_LENGTH)].filter(
    (s): s is string => s !== null,
  );
  if (parts.length > 0) return cleanString(parts.join(" "), MAX_NAME_LENGTH);
  return cleanString(p.preferred_username, MAX_NAME_LENGTH);
}

/**
 * Builds our identity from a VERIFIED token payload (access token or ID token). `sub` is required;
 * email and name are optional because Zitadel leaves them out of access tokens unless the app
 * asserts user info into them.
 */
export function claimsToIdentity(payload: unknown, rolesClaim: string, allowedOrgs: readonly string[]): ClaimsIdentity {
  if (!isPlainObject(payload)) throw new InvalidClaimsError("Invalid token claims");
  const sub = payload.sub;
  if (typeof sub !== "string" || sub.trim() === "" || sub.length > MAX_SUB_LENGTH || sub !== sub.trim()) {
    throw new InvalidClaimsError("Token has no valid subject");
  }
  return {
    externalId: sub,
    email: cleanEmail(payload.email),
    name: displayName(payload),
    role: roleFromClaim(payload[rolesClaim], allowedOrgs),
  };
}

/** What the users table holds of an identity. */
export interface StoredIdentity {
  email: string | null;
  name: string | null;
  role: Role;
}

/**
 * The users row after a sign-in: the role always from the token (synced at every login), email and name
 * from the token when it carries them. An absent (or unusable) email or name keeps the stored one: Zitadel
 * access tokens leave both out unless the app asserts user info into them, and such a token says nothing
 * about them, certainly not that they were erased. `changed`: a new row, or a value that differs (cached
 * copies of the row must then be dropped).
 */
export function identityToStore(
  stored: StoredIdentity | null,
  claims: { email: string | null; name: string | null; role: Role },
): { next: StoredIdentity; changed: boolean } {
  const next: StoredIdentity = {
    email: claims.email ?? stored?.email ?? null,
    name: claims.name ?? stored?.name ?? null,
    role: claims.role,
  };
  const changed =
    stored === null || stored.email !== next.email || stored.name !== next.name || stored.role !== next.role;
  return { next, changed };
}

/**
 * Who appears in the caller's user directory (GET /users): admins and the system see every account; a teacher
 * looks up students (to assign them), nobody else's account; a student has no directory.
 */
export function decideUserListed(p: Principal, user: { role: Role }): boolean {
  if (p.kind === "system" || p.role === "admin") return true;
  return p.role === "teacher" && user.role === "student";
}

/** decideUserListed as SQL over `users u`, checked against it on generated rows (access-scope.test.ts). */
export function userListScopeSql(p: Principal): ScopeSql {
  if (p.kind === "system" || p.role === "admin") return { where: null, bind: {} };
  return { where: p.role === "teacher" ? "u.role = 'student'" : "FALSE", bind: {} };
}
