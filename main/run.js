#!/usr/bin/env node
/**
 * Launcher of the npm scripts (`start`, `repl`, `migrate`, `token`): `node main/run.js <entry> [args…]` runs
 * `dist/<entry>.js`. In a development tree (TypeScript installed, NODE_ENV not production) it compiles first, so
 * `npm ci && npm start` on a fresh clone works and edits are picked up; in a production tree (`npm ci --omit=dev`
 * + `dist/`, the image) nothing compiles and no compiler is needed. Plain JavaScript on purpose: it must run
 * before anything is compiled.
 */
"use strict";
const fs = require("node:fs");
const path = require("node:path");
const { spawnSync } = require("node:child_process");

const root = path.resolve(__dirname, "..");
const [entry, ...args] = process.argv.slice(2);
if (!entry || !/^(main|dev)\/[\w-]+$/.test(entry)) {
  console.error("usage: node main/run.js <main/start|main/repl|main/migrate-cli|dev/token-cli> [args…]");
  process.exit(2);
}

function compiler() {
  if (process.env.NODE_ENV === "production" || !fs.existsSync(path.join(root, "tsconfig.json"))) return null;
  try {
    return require.resolve("typescript/bin/tsc", { paths: [root] });
  } catch {
    return null; // dependencies installed without dev ones: a production tree
  }
}

const tsc = compiler();
if (tsc) {
  const r = spawnSync(process.execPath, [tsc, "-p", path.join(root, "tsconfig.json")], { stdio: "inherit" });
  if (r.status !== 0) process.exit(r.status ?? 1);
}

const target = path.join(root, "dist", `${entry}.js`);
if (!fs.existsSync(target)) {
  console.error(
    entry.startsWith("dev/")
      ? `${entry} is a development tool (it needs the embedded stand-ins); this tree does not have it.`
      : `${path.relative(root, target)} is not built and TypeScript is not installed: run \`npm ci && npm run build\`.`,
  );
  process.exit(2);
}
// In this process (no second node): signals reach the entry point's own handlers, as with `exec node dist/…`.
// So an entry point must run on load: `require.main === module` is false here.
process.argv = [process.argv[0], target, ...args];
require(target);
