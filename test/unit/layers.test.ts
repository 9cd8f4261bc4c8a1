/**
 * The folders are the layers, and imports point one way:
 *   lib/ (pure) → platform/ (broker, config, db, caches, transport) → services/<name>/ → main/ (entry points).
 * dev/ (embedded IdP, PGlite, demo seed, token CLI) stands apart: production code never imports it statically
 * (main may load it with a dynamic import in embedded mode). A service reaches another one only through that
 * service's contract (`services/B/B.contract.ts`). Pure code (lib/, `*.rules.ts`, contracts) imports no framework.
 * Every import of the source tree is parsed, type-only imports included: they are dependencies too.
 */
import { readdirSync, readFileSync, statSync } from "node:fs";
import path from "node:path";
import ts from "typescript";

const ROOT = path.resolve(__dirname, "../..");
const LAYERS = ["lib", "platform", "services", "main"] as const;
const SOURCE_DIRS = [...LAYERS, "dev"];
/** Packages that make code impure: none of them in lib/, rules or contracts (types from moleculer are fine). */
const FRAMEWORKS = ["moleculer", "moleculer-web", "moleculer-db", "sequelize", "pg", "ioredis", "amqplib"];

interface ImportEdge {
  from: string;
  spec: string;
  /** Repository-relative path without extension, for relative imports. */
  target: string | null;
  dynamic: boolean;
  typeOnly: boolean;
}

function sourceFiles(dir: string): string[] {
  const abs = path.join(ROOT, dir);
  return readdirSync(abs).flatMap((name) => {
    const rel = path.join(dir, name);
    if (statSync(path.join(ROOT, rel)).isDirectory()) return sourceFiles(rel);
    return rel.endsWith(".ts") && !rel.endsWith(".d.ts") ? [rel] : [];
  });
}

function importsOf(file: string): ImportEdge[] {
  const text = readFileSync(path.join(ROOT, file), "utf8");
  const source = ts.createSourceFile(file, text, ts.ScriptTarget.ES2022, true);
  const edges: ImportEdge[] = [];
  const add = (spec: string, dynamic: boolean, typeOnly: boolean) => {
    const target = spec.startsWith(".") ? path.normalize(path.join(path.dirname(file), spec)) : null;
    edges.push({ from: file, spec, target, dynamic, typeOnly });
  };
  const visit = (node: ts.Node): void => {
    if (ts.isImportDeclaration(node) && ts.isStringLiteral(node.moduleSpecifier)) {
      add(node.moduleSpecifier.text, false, node.importClause?.phaseModifier === ts.SyntaxKind.TypeKeyword);
    } else if (ts.isExportDeclaration(node) && node.moduleSpecifier && ts.isStringLiteral(node.moduleSpecifier)) {
      add(node.moduleSpecifier.text, false, node.isTypeOnly);
    } else if (
      ts.isCallExpression(node) &&
      node.expression.kind === ts.SyntaxKind.ImportKeyword &&
      node.arguments.length === 1 &&
      ts.isStringLiteralLike(node.arguments[0])
    ) {
      add(node.arguments[0].text, true, false);
    } else if (
      ts.isImportTypeNode(node) &&
      ts.isLiteralTypeNode(node.argument) &&
      ts.isStringLiteral(node.argument.literal)
    ) {
      add(node.argument.literal.text, false, true);
    }
    ts.forEachChild(node, visit);
  };
  visit(source);
  return edges;
}

function top(p: string): string {
  return p.split(path.sep)[0];
}

function layerOf(p: string): number {
  return (LAYERS as readonly string[]).indexOf(top(p));
}

/** services/<name>/... → name */
function serviceOf(p: string): string | null {
  const parts = p.split(path.sep);
  return parts[0] === "services" && parts.length > 2 ? parts[1] : null;
}

function isContract(target: string): boolean {
  const name = serviceOf(target);
  return name !== null && path.basename(target) === `${name}.contract`;
}

function isPure(file: string): boolean {
  return top(file) === "lib" || /\.(rules|contract)\.ts$/.test(file);
}

/** Every rule break in the tree, one line each. */
export function layerViolations(): string[] {
  const problems: string[] = [];
  for (const edge of SOURCE_DIRS.flatMap(sourceFiles).flatMap(importsOf)) {
    const { from, target, spec } = edge;
    const where = `${from} imports ${spec}`;
    if (target === null) {
      const pkg = spec.startsWith("@") ? spec.split("/").slice(0, 2).join("/") : spec.split("/")[0];
      if (isPure(from) && FRAMEWORKS.includes(pkg) && !edge.typeOnly) problems.push(`impure: ${where}`);
      continue;
    }
    if (top(target) === "dev") {
      if (top(from) === "dev") continue;
      // main may load dev/ in embedded mode (dynamic import) and name its types (erased at compile time).
      if (!(top(from) === "main" && (edge.dynamic || edge.typeOnly))) problems.push(`dev loaded statically: ${where}`);
      continue;
    }
    if (top(from) === "dev") {
      if (top(target) === "main") problems.push(`upward: ${where}`);
      else if (top(target) === "services" && !isContract(target)) problems.push(`bypasses contract: ${where}`);
      continue;
    }
    if (layerOf(target) < 0) {
      problems.push(`outside the layers: ${where}`);
      continue;
    }
    if (layerOf(target) > layerOf(from)) problems.push(`upward: ${where}`);
    const a = serviceOf(from);
    const b = serviceOf(target);
    if (a !== null && b !== null && a !== b && !isContract(target)) problems.push(`bypasses contract: ${where}`);
  }
  return problems;
}

describe("layers", () => {
  it("parses the imports of every source file (the walk sees the tree)", () => {
    const files = SOURCE_DIRS.flatMap(sourceFiles);
    const edges = files.flatMap(importsOf);
    expect(files).toContain(path.join("main", "start.ts"));
    expect(files).toContain(path.join("platform", "config.ts"));
    // A dynamic import and a type-only import are both seen.
    expect(edges.some((e) => e.dynamic)).toBe(true);
    expect(edges.some((e) => e.typeOnly)).toBe(true);
  });

  it("has no upward import, no dev code loaded statically and no cross-service import bypassing a contract", () => {
    expect(layerViolations()).toEqual([]);
  });
});
