// Lints an OpenAPI document with redocly's `recommended` ruleset (the rules `redocly lint` applies by default),
// offline: @redocly/openapi-core's built-in rules, no CLI, no telemetry. ESM-only package, hence a child script.
// usage: node lint-openapi.mjs <document.json>  → prints {"errors": [...], "warnings": [...]} as JSON
import { readFileSync } from "node:fs";
import { createConfig, lintFromString } from "@redocly/openapi-core";

const file = process.argv[2];
const config = await createConfig({ extends: ["recommended"] });
const problems = await lintFromString({ source: readFileSync(file, "utf8"), absoluteRef: file, config });
const brief = (p) => ({ rule: p.ruleId, message: p.message, at: p.location?.[0]?.pointer });
process.stdout.write(
  JSON.stringify({
    errors: problems.filter((p) => p.severity === "error").map(brief),
    warnings: problems.filter((p) => p.severity === "warn").map(brief),
  }),
);
