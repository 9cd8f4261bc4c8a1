/** Who is calling. Small on purpose: it travels in ctx.meta on every call. */
export type Role = "admin" | "teacher" | "student";
export const ROLES: readonly Role[] = ["admin", "teacher", "student"];

export interface UserPrincipal {
  kind: "user";
  id: number;
  role: Role;
}

/** Timers, relays and operators in the REPL act as the system; it passes every access rule. */
export interface SystemPrincipal {
  kind: "system";
  reason: string;
  /** A person acting through the REPL: the serving node logs each of their calls with this name. */
  operator?: string;
}

export type Principal = UserPrincipal | SystemPrincipal;

export const systemPrincipal = (reason: string): SystemPrincipal => ({ kind: "system", reason });

export interface RequestMeta {
  user?: Principal | null;
  requestId?: string;
  /** Set by actions to tell the gateway the HTTP status (201, 202, 204). */
  $statusCode?: number;
  /** Location header of a 201. */
  $location?: string;
  $responseHeaders?: Record<string, string | string[]>;
  /**
   * The browser-login cookies, passed by the gateway only to the auth actions that manage them (login,
   * callback, logout). Secrets: never logged, never forwarded elsewhere.
   */
  authCookies?: { session?: string; login?: string };
}
