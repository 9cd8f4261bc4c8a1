/**
 * Once per jest run: a fresh directory for the answers the test files record (answer-recorder.ts), checked by
 * the run's last file, openapi-conformance.test.ts. Per run and per worktree: parallel runs never mix.
 */
import { mkdirSync } from "node:fs";
import { join, resolve } from "node:path";
import { ANSWERS_DIR_ENV } from "./answer-recorder-env";

export default function globalSetup(): void {
  const dir = join(resolve(__dirname, "../.."), ".test-output", `answers-${process.pid}`);
  mkdirSync(dir, { recursive: true });
  process.env[ANSWERS_DIR_ENV] = dir;
}
