/**
 * Records every answer of the API (`/api/v1/...`) that a test file receives through fetch (the harness's
 * api(), the login browser, plain fetch calls alike): method, path, status, content type and the JSON body.
 * Loaded for every test file (jest setupFilesAfterEnv); at the end of a file its answers go to a file in
 * the run's directory (ANSWERS_DIR, made by test/support/jest-global-setup.ts), where
 * test/integration/openapi-conformance.test.ts, the run's last file, checks them against the OpenAPI document.
 */
import { mkdirSync, writeFileSync } from "node:fs";
import { join } from "node:path";
import { randomBytes } from "node:crypto";

export interface RecordedAnswer {
  method: string;
  /** The path under /api/v1, without the query. */
  path: string;
  status: number;
  contentType: string;
  /** The parsed JSON body (undefined when the answer is not JSON or has none). */
  body?: unknown;
  /** The test file that received it. */
  file: string;
}

import { ANSWERS_DIR_ENV, PROBE_HEADER } from "./answer-recorder-env";
const API = /^\/api\/v1(\/.*|)$/;

const answers: RecordedAnswer[] = [];
const reading: Promise<void>[] = [];

/** The answers of this test file so far (bodies still being read are awaited). */
export async function answersOfThisFile(): Promise<RecordedAnswer[]> {
  await Promise.all(reading);
  return answers;
}

function record(method: string, url: URL, res: Response): void {
  const m = API.exec(url.pathname);
  if (!m) return;
  const contentType = res.headers.get("content-type") ?? "";
  const entry: RecordedAnswer = {
    method: method.toUpperCase(),
    path: m[1] === "" ? "/" : m[1],
    status: res.status,
    contentType,
    file: expect.getState().testPath ?? "?",
  };
  answers.push(entry);
  // An event stream never ends: only its status and type are checked. A JSON body is read from a clone.
  if (!contentType.startsWith("application/json")) return;
  reading.push(
    res
      .clone()
      .text()
      .then((text) => {
        entry.body = text === "" ? undefined : (JSON.parse(text) as unknown);
      })
      .catch(() => {
        entry.body = "<unreadable>";
      }),
  );
}

const realFetch = globalThis.fetch;
globalThis.fetch = async function recordingFetch(input: string | URL | Request, init?: RequestInit) {
  const res = await realFetch(input, init);
  if (new Headers(init?.headers).has(PROBE_HEADER)) return res;
  try {
    const url = new URL(input instanceof Request ? input.url : String(input));
    record(init?.method ?? (input instanceof Request ? input.method : "GET"), url, res);
  } catch {
    /* not a URL we can read: not an API call */
  }
  return res;
};

afterAll(async () => {
  const dir = process.env[ANSWERS_DIR_ENV];
  if (!dir || answers.length === 0) return;
  await Promise.all(reading);
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, `${randomBytes(6).toString("hex")}.json`), JSON.stringify(answers));
});
