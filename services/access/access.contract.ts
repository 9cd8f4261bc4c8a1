/**
 * What other services may use of `access`: the permission check the access gate asks (`access.check`,
 * its query and answer live in lib/permission.rules.ts, pure, because the gate in platform/ needs them).
 */
export { ACCESS_CHECK_ACTION, type PermissionAnswer, type PermissionQuery } from "../../lib/permission.rules";
