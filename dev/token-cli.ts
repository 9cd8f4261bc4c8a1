/**
 * `npm run -s token -- <account>`: prints ONLY a Bearer access token of a demo account on stdout,
 * so `TOKEN=$(npm run -s token -- teacher)` works. Errors go to stderr with exit code 1.
 *
 * Provider: OIDC_ISSUER when set (it must offer the embedded demo login, e.g. the embedded IdP run on
 * its own in a dev cluster), else the embedded provider of the running platform at
 * http://localhost:<EMBEDDED_IDP_PORT, default PORT+1>. Same env as the platform.
 */
import { loadConfig } from "../platform/config";
import { CodeFlowError, runCodeFlow } from "./oidc-code-flow";

const USAGE = "usage: npm run -s token -- <account>   (demo accounts: admin, teacher, student, student2)";

async function main(argv: readonly string[]): Promise<number> {
  const args = argv.filter((a) => a !== "--");
  if (args.length !== 1 || !args[0] || args[0].startsWith("-")) {
    process.stderr.write(`${USAGE}\n`);
    return 1;
  }
  const account = args[0];
  const config = loadConfig();
  const issuer = config.oidc.issuer ?? `http://localhost:${config.oidc.embeddedPort}`;
  try {
    const { accessToken } = await runCodeFlow({ issuer, account });
    process.stdout.write(`${accessToken}\n`);
    return 0;
  } catch (err) {
    if (err instanceof CodeFlowError) {
      const hint =
        err.kind === "UNREACHABLE"
          ? `the identity provider at ${issuer} is not reachable — is the platform running (npm start)?`
          : err.kind === "LOGIN_REJECTED"
            ? `unknown account "${account}" (demo accounts: admin, teacher, student, student2)`
            : `the provider at ${issuer} did not complete the demo login (it must be the embedded IdP)`;
      process.stderr.write(`token: ${hint}\n  (${err.message})\n`);
      return 1;
    }
    throw err;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.stderr.write(`token: ${err instanceof Error ? err.message : String(err)}\n`);
    process.exitCode = 1;
  },
);
