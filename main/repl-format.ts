/**
 * What the operator REPL (main/repl.ts) prints: plain text from plain data, no broker. Unit-tested.
 */
import type { UserRow } from "../services/auth/auth.contract";
import type { UserCourse } from "../services/courses/courses.contract";
import type { InspectedInstance, SweepReport } from "../services/lab-instances/lab-instances.contract";
import type { OutboxEntry, TasksHealth } from "../services/tasks/tasks.contract";

/** Left-aligned columns separated by two spaces; a header line and a rule. */
export function formatTable(header: readonly string[], rows: readonly (readonly string[])[]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? "").length)));
  const line = (cells: readonly string[]) =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i])))
      .join("  ")
      .trimEnd();
  return [line(header), line(widths.map((w) => "-".repeat(w))), ...rows.map(line)].join("\n");
}

/** 42 → "42s", 125 → "2m05s", 7384 → "2h03m", 200000 → "2d07h". */
export function humanAge(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  if (s < 60) return `${s}s`;
  const two = (n: number) => String(n).padStart(2, "0");
  if (s < 3600) return `${Math.floor(s / 60)}m${two(s % 60)}s`;
  if (s < 86_400) return `${Math.floor(s / 3600)}h${two(Math.floor((s % 3600) / 60))}m`;
  return `${Math.floor(s / 86_400)}d${two(Math.floor((s % 86_400) / 3600))}h`;
}

/** One line, at most `max` characters (errors can be multi-line stack dumps from a worker). */
export function clip(text: string | null | undefined, max = 60): string {
  if (!text) return "";
  const one = text.replace(/\s+/g, " ").trim();
  return one.length <= max ? one : `${one.slice(0, max - 1)}…`;
}

const iso = (d: Date | string | null | undefined): string =>
  d ? new Date(d).toISOString().replace(/\.\d{3}Z$/, "Z") : "-";

export function formatWhois(
  user: UserRow,
  courses: readonly UserCourse[],
  active: readonly InspectedInstance[],
): string {
  const out = [
    `user ${user.id}  ${user.email ?? "(no e-mail)"}  ${user.name ?? ""}`.trimEnd(),
    `role ${user.role}, created ${iso(user.created_at)}, last login ${iso(user.last_login_at)}`,
    "",
    courses.length
      ? formatTable(
          ["course", "name", "as"],
          courses.map((c) => [String(c.id), clip(c.name, 50), c.relation]),
        )
      : "courses: none",
    "",
    active.length ? formatInstances(active) : "active instances: none",
  ];
  return out.join("\n");
}

export function formatInstances(rows: readonly InspectedInstance[]): string {
  if (rows.length === 0) return "no instances";
  return formatTable(
    ["instance", "student", "course", "lab", "status", "for", "task", "error"],
    rows.map((r) => [
      String(r.id),
      String(r.student_id),
      String(r.course_id),
      String(r.lab_id),
      r.status,
      humanAge(r.status_age_s),
      r.celery_task_id ?? "-",
      clip(r.error, 40),
    ]),
  );
}

/** Where a row is: waiting to be sent (due now or later), sent and awaiting its result, or done. */
export function outboxState(row: OutboxEntry, now: Date): string {
  if (!row.published_at) {
    const wait = (new Date(row.next_attempt_at).getTime() - now.getTime()) / 1000;
    return wait >= 1 ? `unsent, retry in ${humanAge(wait)}` : "unsent, due";
  }
  if (!row.result_status) return "sent, awaiting result";
  return `done: ${row.result_status}`;
}

export function formatOutbox(rows: readonly OutboxEntry[], now: Date): string {
  if (rows.length === 0) return "outbox: no rows";
  return formatTable(
    ["id", "task", "instance", "age", "attempts", "state", "last error"],
    rows.map((r) => [
      r.id,
      r.task_name,
      r.lab_instance_id === null ? "-" : String(r.lab_instance_id),
      humanAge(r.age_s),
      String(r.attempts),
      outboxState(r, now),
      clip(r.last_error ?? r.result_error, 50),
    ]),
  );
}

export function formatSweep(report: SweepReport): string {
  if (!report.swept) return "another node holds the sweep lock and is sweeping now: nothing done here";
  const ids = (xs: readonly number[]) => (xs.length ? xs.join(", ") : "none");
  return `swept: timed out (failed) ${ids(report.timed_out)}; expired ${ids(report.expired)}`;
}

export function formatRelay(nodes: readonly { node: string; health: TasksHealth | { error: string } }[]): string {
  if (nodes.length === 0) return "no node runs the tasks service";
  return formatTable(
    ["node", "broker", "confirmed", "failed", "backlog", "oldest unsent", "awaiting result", "results", "last error"],
    nodes.map(({ node, health: h }) =>
      "error" in h
        ? [node, "?", "", "", "", "", "", "", clip(h.error, 50)]
        : [
            node,
            h.broker,
            String(h.relay.published),
            String(h.relay.failed),
            h.outbox ? String(h.outbox.unpublished) : "?",
            h.outbox ? humanAge(h.outbox.oldest_unpublished_s) : "?",
            h.outbox ? String(h.outbox.awaiting_result) : "?",
            h.result_backend,
            clip(h.broker_error, 50),
          ],
    ),
  );
}

/** One counter value of Moleculer's `$node.metrics` answer. */
export interface MetricSnapshot {
  name: string;
  values: { labels: Record<string, string | number | undefined>; value: number }[];
}

/** Cache counters per node and scope, from each node's metrics (names contain cache.hits/misses/dropped). */
export function formatCacheStats(nodes: readonly { node: string; metrics: readonly MetricSnapshot[] }[]): string {
  const rows: string[][] = [];
  for (const { node, metrics } of nodes) {
    const byScope = new Map<string, { hits: number; misses: number; dropped: number }>();
    for (const m of metrics) {
      const kind = /cache[._](hits|misses|dropped)/.exec(m.name)?.[1] as "hits" | "misses" | "dropped" | undefined;
      if (!kind) continue;
      for (const v of m.values) {
        const scope = String(v.labels.scope ?? "-");
        const c = byScope.get(scope) ?? { hits: 0, misses: 0, dropped: 0 };
        c[kind] += v.value;
        byScope.set(scope, c);
      }
    }
    for (const [scope, c] of [...byScope].sort(([a], [b]) => a.localeCompare(b))) {
      const total = c.hits + c.misses;
      const ratio = total ? `${Math.round((100 * c.hits) / total)}%` : "-";
      rows.push([node, scope, String(c.hits), String(c.misses), ratio, String(c.dropped)]);
    }
  }
  if (rows.length === 0) return "no cache counters yet (nothing cached has been read)";
  return formatTable(["node", "scope", "hits", "misses", "hit ratio", "dropped fills"], rows);
}

const SECRET_NAME = /SECRET|PASSWORD|PASSWD|TOKEN|COOKIE|CREDENTIAL|PRIVATE|API_?KEY|_KEYS?$/i;

/** A value with its URL passwords hidden; `;`- or `,`-separated lists of URLs included. */
function maskUrls(value: string): string {
  return value.replace(/([a-z][a-z0-9+.-]*:\/\/[^:/@\s;,]*:)([^@\s;,]+)@/gi, "$1***@");
}

/** The environment as `env` may show it: secret-named variables replaced, passwords in URLs hidden. */
export function maskEnv(env: Readonly<Record<string, string | undefined>>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [name, value] of Object.entries(env)) {
    if (value === undefined) continue;
    out[name] = SECRET_NAME.test(name) && value !== "" ? "***" : maskUrls(value);
  }
  return out;
}

/** An error as one line for the operator (no stack: the REPL is not where a service's bug is debugged). */
export function briefError(err: unknown): string {
  if (!(err instanceof Error)) return String(err);
  const e = err as Error & { code?: unknown; type?: unknown; data?: unknown };
  const code = typeof e.code === "number" || typeof e.code === "string" ? ` (${String(e.code)})` : "";
  let detail = "";
  // Moleculer's validation errors carry the failed rules; the message alone says only "Parameters validation error!".
  if (Array.isArray(e.data)) {
    detail = `: ${e.data
      .map((d: unknown) => (d && typeof d === "object" && "message" in d ? String(d.message) : ""))
      .filter(Boolean)
      .join("; ")}`;
  }
  return `${e.name}${code}: ${e.message}${detail}`;
}
