/** The run's recorded answers are checked by then (openapi-conformance.test.ts): their directory goes. */
import { rmSync } from "node:fs";
import { ANSWERS_DIR_ENV } from "./answer-recorder-env";

export default function globalTeardown(): void {
  const dir = process.env[ANSWERS_DIR_ENV];
  if (dir) rmSync(dir, { recursive: true, force: true });
}
