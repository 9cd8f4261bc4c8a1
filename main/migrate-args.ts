/** The migrate CLI's usage and argument parsing, apart from the CLI (which runs on load) so it is unit-testable. */

export const USAGE = `Usage: npm run migrate -- <command>

Commands:
  up                   apply every pending migration
  down                 revert the last applied migration
  down --to <name>     revert down to and including migration <name>
  down --to 0          revert every migration (drops the whole schema)
  status               list applied and pending migrations
  wait [--timeout <s>] wait until every migration of this build is applied (read-only; default 600 s);
                       a Kubernetes init container runs it while the migration Job migrates

Database: DATABASE_URL, or the embedded database in DATA_DIR (default .data) when DATABASE_URL is unset.`;

export type MigrateCommand =
  { kind: "up" } | { kind: "status" } | { kind: "down"; to?: string | 0 } | { kind: "wait"; timeoutS: number };

/** How long `wait` waits by default, and how often it looks. */
const WAIT_TIMEOUT_S = 600;

/** Parses argv (after the script name); undefined means bad usage. */
export function parseMigrateArgs(args: readonly string[]): MigrateCommand | undefined {
  const [cmd, ...rest] = args;
  if (cmd === "up" && rest.length === 0) return { kind: "up" };
  if (cmd === "status" && rest.length === 0) return { kind: "status" };
  if (cmd === "wait") {
    if (rest.length === 0) return { kind: "wait", timeoutS: WAIT_TIMEOUT_S };
    const raw = rest.length === 2 && rest[0] === "--timeout" ? rest[1] : undefined;
    if (raw === undefined || !/^\d{1,6}$/.test(raw) || Number(raw) === 0) return undefined;
    return { kind: "wait", timeoutS: Number(raw) };
  }
  if (cmd === "down") {
    if (rest.length === 0) return { kind: "down" };
    let to: string | undefined;
    if (rest.length === 2 && rest[0] === "--to") to = rest[1];
    else if (rest.length === 1 && rest[0].startsWith("--to=")) to = rest[0].slice("--to=".length);
    if (to === undefined || to === "") return undefined;
    return { kind: "down", to: to === "0" ? 0 : to };
  }
  return undefined;
}
