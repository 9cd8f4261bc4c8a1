/**
 * Each table is written by exactly one service. The writes are derived from the SQL in each service's folder
 * (every string and template literal: INSERT INTO / UPDATE / DELETE FROM <table>); a write to a table the
 * service does not own fails. A service that needs another's table changed calls the owner: an action, or
 * the owner's repository function taking the caller's transaction (through the owner's contract).
 * Reads across tables are allowed where a join is the point.
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
});
