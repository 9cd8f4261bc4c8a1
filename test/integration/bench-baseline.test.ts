/**
 * The benchmarks' raw baseline (bench/baseline-server.js) must run the platform's statements and answer its
 * bodies: `node bench/check-baseline.js` puts one embedded platform node and the baseline on identically seeded
 * databases and compares every benchmarked route as the same student. A service whose SQL or answer changes
 * without the baseline following fails here, not in a benchmark run that compares unlike work.
 *
 * The check finds PostgreSQL through TEST_PG_ADMIN_URL (bench/lib.js reads test/support/servers.ts from dist/),
 * so it inherits this process's environment; it runs the built platform (dist/main/start.js), which `npm test`
 * compiles first.
 */
import { spawn } from "node:child_process";
import { resolve } from "node:path";

const ROOT = resolve(__dirname, "../..");

jest.setTimeout(180_000);

/** Runs the check to its end; its stdout and stderr interleaved, as a developer would see them. */
function runCheck(): Promise<{ code: number | null; signal: NodeJS.Signals | null; output: string }> {
  return new Promise((done, fail) => {
    const child = spawn(process.execPath, ["bench/check-baseline.js"], {
      cwd: ROOT,
      env: process.env,
      stdio: ["ignore", "pipe", "pipe"],
    });
    let output = "";
    child.stdout.on("data", (c: Buffer) => (output += c.toString()));
    child.stderr.on("data", (c: Buffer) => (output += c.toString()));
    child.once("error", fail);
    child.once("close", (code, signal) => done({ code, signal, output }));
  });
}

test("the bench baseline answers every benchmarked route as the platform does", async () => {
  const run = await runCheck();
  // One assertion over all of it: a failure prints the check's own report (which route, both bodies).
  expect(run).toMatchObject({ code: 0, signal: null, output: expect.stringMatching(/routes compared, 0 different$/m) });
  const routes = run.output.split("\n").filter((line) => /: platform \d+, baseline \d+: /.test(line));
  expect(routes.length).toBeGreaterThan(0);
  expect(routes.filter((line) => !line.endsWith(": same"))).toEqual([]);
  expect(run.output).toContain(`baseline check: ${routes.length} routes compared, 0 different`);
});
