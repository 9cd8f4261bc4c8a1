/**
 * Each table is written by exactly one service. The writes are derived from the SQL in each service's folder
 * (every string and template literal: INSERT INTO / UPDATE / DELETE FROM <table>); a write to a table the
 * service does not own fails. A service that needs another's table changed calls the owner: an action, or
 * the owner's repository function taking the caller's transaction (through the owner's contract).
 * Reads across tables are allowed where a join is the point, and named: each table of another service that a
 * service reads (FROM / JOIN <table>) is listed, with its owner and why, in the service's header comment
 * ("- <tables> (<owner>): why"), and nothing is listed that it does not read.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import ts from "typescript";

const ROOT = path.resolve(__dirname, "../..");

const OWNER: Record<string, string> = {
  users: "auth",
  courses: "courses",
  course_students: "courses",
  course_labs: "courses",
  labs: "labs",
  lab_instances: "lab-instances",
  access_requests: "access",
  task_outbox: "tasks",
};

function filesUnder(dir: string): string[] {
  return readdirSync(path.join(ROOT, dir)).flatMap((name) => {
    const rel = path.join(dir, name);
    if (statSync(path.join(ROOT, rel)).isDirectory()) return filesUnder(rel);
    return rel.endsWith(".ts") ? [rel] : [];
  });
}

/** The text of every string and template literal (template spans joined as they are written). */
function literalsOf(file: string): string[] {
  const text = readFileSync(path.join(ROOT, file), "utf8");
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.ES2022, true);
  const out: string[] = [];
  const visit = (node: ts.Node): void => {
    if (ts.isStringLiteral(node) || ts.isNoSubstitutionTemplateLiteral(node)) out.push(node.text);
    else if (ts.isTemplateExpression(node)) {
      out.push(node.getText(source));
      return;
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return out;
}

/** SQL keywords are upper case in this code base and table names lower case ("FOR UPDATE SKIP" is no write). */
const WRITE = /\b(?:INSERT\s+INTO|UPDATE|DELETE\s+FROM)\s+([a-z_]+)\b/g;

export function writesOf(service: string): Map<string, string[]> {
  const writes = new Map<string, string[]>();
  for (const file of filesUnder(path.join("services", service))) {
    for (const literal of literalsOf(file)) {
      for (const m of literal.matchAll(WRITE)) writes.set(m[1], [...(writes.get(m[1]) ?? []), file]);
    }
  }
  return writes;
}

const READ = /\b(?:FROM|JOIN)\s+([a-z_]+)\b/g;

/** Tables of other services that `service` reads in its SQL. */
function foreignReadsOf(service: string): string[] {
  const tables = new Set<string>();
  for (const file of filesUnder(path.join("services", service))) {
    for (const literal of literalsOf(file)) {
      for (const m of literal.matchAll(READ)) if (m[1] in OWNER && OWNER[m[1]] !== service) tables.add(m[1]);
    }
  }
  return [...tables].sort();
}

/** The "- a, b (owner), c (owner): why" lines of the service file's header comment, as `table (owner)`. */
function namedReadsOf(service: string): string[] {
  const text = readFileSync(path.join(ROOT, "services", service, `${service}.service.ts`), "utf8");
  const header = text.slice(0, text.indexOf("*/"));
  const named: string[] = [];
  for (const line of header.matchAll(/^ \* - ([^:]+):/gm)) {
    // "a, b (owner), c (owner2)": each table takes the owner named after it.
    for (const group of line[1].matchAll(/([a-z_, ]+?)\s*\(([a-z-]+)\)/g)) {
      for (const table of group[1]
        .split(",")
        .map((t) => t.trim())
        .filter(Boolean))
        named.push(`${table} (${group[2]})`);
    }
  }
  return named.sort();
}

const SERVICES = readdirSync(path.join(ROOT, "services")).filter((n) =>
  statSync(path.join(ROOT, "services", n)).isDirectory(),
);

describe("table ownership", () => {
  it("every table the migrations create has one owner, a service", () => {
    const created = filesUnder(path.join("platform", "migrations"))
      .flatMap((f) => [...readFileSync(path.join(ROOT, f), "utf8").matchAll(/CREATE TABLE ([a-z_]+)/g)])
      .map((m) => m[1])
      .sort();
    expect(created.length).toBeGreaterThan(0);
    expect(Object.keys(OWNER).sort()).toEqual(created);
    for (const owner of Object.values(OWNER)) expect(SERVICES).toContain(owner);
  });

  it("derives the writes from the SQL (the parser sees the owners' own writes)", () => {
    expect([...writesOf("courses").keys()].sort()).toEqual(["course_labs", "course_students", "courses"]);
    expect([...writesOf("lab-instances").keys()]).toEqual(["lab_instances"]);
  });

  it("no service writes a table it does not own", () => {
    const foreign = SERVICES.flatMap((service) =>
      [...writesOf(service)]
        .filter(([table]) => OWNER[table] !== service)
        .map(([table, files]) => `${service} writes ${table} (${files.join(", ")})`),
    );
    expect(foreign).toEqual([]);
  });

  it("every read of another service's table is named, with its owner, in the reader's header", () => {
    expect(foreignReadsOf("courses")).toContain("users");
    for (const service of SERVICES) {
      const reads = foreignReadsOf(service).map((table) => `${table} (${OWNER[table]})`);
      expect({ service, named: namedReadsOf(service) }).toEqual({ service, named: reads });
    }
  });
});
