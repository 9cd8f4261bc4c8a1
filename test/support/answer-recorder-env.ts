/** Where a jest run's recorded API answers go (set by jest-global-setup.ts, read by answer-recorder.ts). */
export const ANSWERS_DIR_ENV = "AUTOLABS_ANSWERS_DIR";

/**
 * A request with this header is a test's "is the gateway routing yet?" poll, not a use of the API: its answers
 * (404 before a new gateway has generated its aliases) are not recorded for the conformance test.
 */
export const PROBE_HEADER = "x-test-readiness-probe";
export const PROBE_HEADERS: Record<string, string> = { [PROBE_HEADER]: "1" };
