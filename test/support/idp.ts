/**
 * Test helper: the embedded IdP as a real child process (oidc-provider is ESM-only and must not be
 * loaded into jest). Needs `npx tsc -p tsconfig.json` first (npm test does it).
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { runCodeFlow, type CodeFlowTokens } from "../../dev/oidc-code-flow";
import type { PrivateJwks } from "../../dev/embedded-idp";
import { startReadyChild } from "../../platform/child-process";

// Works from test/support (ts-jest) and from dist/test/support (benchmarks run the compiled harness).
const ROOT = resolve(__dirname, __dirname.split(/[\\/]/).includes("dist") ? "../../.." : "../..");
const IDP_SCRIPT = resolve(ROOT, "dist/dev/embedded-idp.js");
const READY = /embedded IdP listening on (http:\/\/\S+)/;

export interface IdpOptions {
  /** Access token lifetime (EMBEDDED_IDP_ACCESS_TOKEN_TTL_S). */
  accessTokenTtlS?: number;
  /** Extra env for the child (e.g. OIDC_AUDIENCE). */
  env?: Record<string, string>;
  /** Fixed port (restart tests); default 0 = any free port, chosen by the child itself (no race). */
  port?: number;
  /** Reuse a data dir (restart tests); by default a fresh temp dir, removed on stop(). */
  dataDir?: string;
  startTimeoutMs?: number;
}

export interface TestIdp {
  issuer: string;
  port: number;
  dataDir: string;
  /** The provider's private signing keys, read from its data dir (to forge near-valid tokens). */
  privateJwks(): PrivateJwks;
  getToken(account: string, password?: string): Promise<CodeFlowTokens>;
  /** Output so far, for diagnosing failures. */
  output(): string;
  stop(): Promise<void>;
}

export async function startIdp(opts: IdpOptions = {}): Promise<TestIdp> {
  if (!existsSync(IDP_SCRIPT)) {
    throw new Error(`${IDP_SCRIPT} missing: run \`npx tsc -p tsconfig.json\` before jest`);
  }
  const ownDir = opts.dataDir === undefined;
  const dataDir = opts.dataDir ?? mkdtempSync(join(tmpdir(), "autolabs-idp-"));
  // A minimal, explicit env: the developer's own OIDC_* settings must not leak into the test.
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? "",
    NODE_ENV: "test",
    ...(opts.accessTokenTtlS !== undefined ? { EMBEDDED_IDP_ACCESS_TOKEN_TTL_S: String(opts.accessTokenTtlS) } : {}),
    ...opts.env,
  };
  const idp = await startReadyChild({
    name: "embedded IdP",
    command: process.execPath,
    args: [IDP_SCRIPT, "--port", String(opts.port ?? 0), "--data-dir", dataDir],
    env,
    ready: READY,
    timeoutMs: opts.startTimeoutMs ?? 20_000,
  });
  const issuer = idp.readyValue;

  return {
    issuer,
    port: Number(new URL(issuer).port),
    dataDir,
    privateJwks: () => JSON.parse(readFileSync(join(dataDir, "idp", "jwks.json"), "utf8")) as PrivateJwks,
    getToken: (account, password) => runCodeFlow({ issuer, account, password }),
    output: () => idp.output(),
    async stop() {
      await idp.stop(5000);
      if (ownDir) rmSync(dataDir, { recursive: true, force: true });
    },
  };
}
