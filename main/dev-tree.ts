/**
 * dev/ (embedded PostgreSQL, the embedded IdP, demo data) is not shipped in the production image (Dockerfile):
 * a node there that lacks an external part says which variable to set instead of failing on a missing module.
 */
import { existsSync } from "node:fs";
import path from "node:path";
import { ConfigError } from "../platform/config";

export function requireDevTree(unsetVariable: string): void {
  if (!existsSync(path.join(__dirname, "../dev"))) {
    throw new ConfigError(
      unsetVariable,
      "is not set, and this build has no embedded stand-in for it (the production image ships no dev/)",
    );
  }
}
