/**
 * What other code may use of `auth`: the OIDC callback path the IdP redirects to, and the backend client's
 * development secret (the embedded IdP in dev/ registers the backend client with both).
 */

/** Backend client secret when OIDC_CLIENT_SECRET is unset. Development only, and public knowledge. */
export const DEV_CLIENT_SECRET = "autolabs-dev-secret";
export const BACKEND_CALLBACK_PATH = "/api/v1/auth/callback";

/** Operator actions (system only): `auth.findUser {query}` (an id or an e-mail) answers the user or 404. */
export const AUTH_ACTIONS = { findUser: "auth.findUser" } as const;
export type { UserRow } from "./users.rows";
