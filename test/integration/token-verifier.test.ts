/**
 * Token verification against the real embedded IdP (child process, over HTTP): real tokens pass,
 * every forgery fails with 401 UNAUTHORIZED, an unreachable IdP gives 503.
 *
 * Forgeries that need a valid signature are signed with the provider's own private key (read from
 * its data dir), and a control case proves such a forged-but-correct token does verify — so each
 * rejection is caused by the one thing the case changes.
 */
import { spawn } from "node:child_process";
import { createHmac, createPublicKey, generateKeyPairSync } from "node:crypto";
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { decodeJwt, importJWK, SignJWT, type JWTPayload } from "jose";
import { claimsToIdentity } from "../../services/auth/auth.rules";
import { DEV_CLIENT_SECRET } from "../../services/auth/auth.contract";
import { runCodeFlow } from "../../dev/oidc-code-flow";
import { createTokenVerifier, type TokenVerifier, type TokenVerifierOptions } from "../../services/auth/token-verifier";
import { startIdp, type TestIdp } from "../support/idp";
import { ifAssigned } from "../support/cleanup";

const ROLES_CLAIM = "urn:zitadel:iam:org:project:roles";
// Zitadel-style project id: not a URI, so it also exercises the provider's resource-indicator mapping.
const AUDIENCE = "271234567890123456";
const TEACHER_SUB = "310000000000000002";

const b64json = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url");
const now = () => Math.floor(Date.now() / 1000);

let idp: TestIdp;
let verifier: TokenVerifier;

const verifierFor = (over: Partial<TokenVerifierOptions> = {}) =>
  createTokenVerifier({
    issuer: idp.issuer,
    audience: AUDIENCE,
    algorithms: ["RS256", "ES256"],
    clockToleranceS: 30,
    ...over,
  });

async function expectUnauthorized(token: string, v: TokenVerifier = verifier): Promise<Error> {
  const err = await v.verify(token).then(
    () => undefined,
    (e: unknown) => e as Error,
  );
  if (!err) throw new Error("token was accepted but should have been rejected");
  expect(err).toMatchObject({ code: 401, type: "UNAUTHORIZED" });
  // Short and non-leaky: no token content, no library internals.
  expect(err.message.length).toBeLessThan(60);
  expect(err.message).not.toMatch(/JWS|JWK|jose|ERR_|eyJ/);
  return err;
}

function validClaims(over: JWTPayload = {}): JWTPayload {
  return {
    sub: TEACHER_SUB,
    iss: idp.issuer,
    aud: AUDIENCE,
    iat: now(),
    exp: now() + 600,
    [ROLES_CLAIM]: { teacher: { "300000000000000001": "autolabs.local" } },
    ...over,
  };
}

/** Signs with the provider's real private key and kid. */
async function signWithProviderKey(payload: JWTPayload): Promise<string> {
  const jwk = idp.privateJwks().keys.at(0);
  if (!jwk) throw new Error("provider has no key");
  const key = await importJWK(jwk, "RS256");
  return new SignJWT(payload).setProtectedHeader({ alg: "RS256", kid: jwk.kid, typ: "at+jwt" }).sign(key);
}

beforeAll(async () => {
  idp = await startIdp({ env: { OIDC_AUDIENCE: AUDIENCE } });
  verifier = verifierFor();
});

afterAll(async () => {
  await ifAssigned(idp)?.stop();
});

describe("real tokens from the embedded IdP", () => {
  it("an access token is an RS256 JWT that verifies, with role and claims", async () => {
    const { accessToken, expiresIn } = await idp.getToken("teacher");
    const header = JSON.parse(Buffer.from(accessToken.split(".")[0] ?? "", "base64url").toString()) as {
      alg: string;
      kid?: string;
    };
    expect(header.alg).toBe("RS256");
    expect(header.kid).toBe(idp.privateJwks().keys[0]?.kid);
    expect(expiresIn).toBe(3600);

    const payload = await verifier.verify(accessToken);
    expect(payload).toMatchObject({
      sub: TEACHER_SUB,
      iss: idp.issuer,
      aud: AUDIENCE,
      email: "teacher@autolabs.local",
      name: "Demo Teacher",
      [ROLES_CLAIM]: { teacher: { "300000000000000001": "autolabs.local" } },
    });
    expect(claimsToIdentity(payload, ROLES_CLAIM, [])).toEqual({
      externalId: TEACHER_SUB,
      email: "teacher@autolabs.local",
      name: "Demo Teacher",
      role: "teacher",
    });
  });

  it.each([
    ["admin", "admin"],
    ["student", "student"],
    ["student2", "student"],
  ])("account %s maps to role %s with its own sub", async (account, role) => {
    const { accessToken } = await idp.getToken(account);
    const identity = claimsToIdentity(await verifier.verify(accessToken), ROLES_CLAIM, []);
    expect(identity.role).toBe(role);
    expect(identity.email).toBe(`${account}@autolabs.local`);
    expect(identity.externalId).not.toBe(TEACHER_SUB);
  });

  it("the ID token carries the roles claim, email and name (and is no access token for the API)", async () => {
    const { idToken } = await idp.getToken("teacher");
    const payload = await verifierFor({ audience: "autolabs-cli" }).verify(idToken);
    expect(payload).toMatchObject({
      sub: TEACHER_SUB,
      email: "teacher@autolabs.local",
      name: "Demo Teacher",
      [ROLES_CLAIM]: { teacher: { "300000000000000001": "autolabs.local" } },
    });
    await expectUnauthorized(idToken);
  });

  it("the backend client (confidential, PKCE) gets the same kind of access token", async () => {
    const tokens = await runCodeFlow({
      issuer: idp.issuer,
      account: "admin",
      clientId: "autolabs-backend",
      clientSecret: DEV_CLIENT_SECRET,
      redirectUri: "http://localhost:8000/api/v1/auth/callback",
    });
    expect(claimsToIdentity(await verifier.verify(tokens.accessToken), ROLES_CLAIM, []).role).toBe("admin");
    expect(decodeJwt(tokens.idToken).aud).toBe("autolabs-backend");
    await expect(
      runCodeFlow({
        issuer: idp.issuer,
        account: "admin",
        clientId: "autolabs-backend",
        clientSecret: "wrong-secret",
        redirectUri: "http://localhost:8000/api/v1/auth/callback",
      }),
    ).rejects.toThrow(/invalid_client/);
  });

  it("refuses a wrong password and an unknown account", async () => {
    await expect(idp.getToken("teacher", "wrong")).rejects.toMatchObject({ kind: "LOGIN_REJECTED" });
    await expect(idp.getToken("nobody")).rejects.toMatchObject({ kind: "LOGIN_REJECTED" });
  });
});

describe("forged and tampered tokens are rejected with 401", () => {
  it("control: a token signed with the provider key and valid claims verifies", async () => {
    await expect(verifier.verify(await signWithProviderKey(validClaims()))).resolves.toMatchObject({
      sub: TEACHER_SUB,
    });
  });

  it('alg "none"', async () => {
    const { accessToken } = await idp.getToken("student");
    const [, payload] = accessToken.split(".");
    const upgraded = { ...decodeJwt(accessToken), [ROLES_CLAIM]: { admin: { "1": "x" } } };
    await expectUnauthorized(`${b64json({ alg: "none", typ: "JWT" })}.${payload}.`);
    await expectUnauthorized(`${b64json({ alg: "none" })}.${b64json(upgraded)}.`);
  });

  it("HS256 signed with the provider's PUBLIC key as HMAC secret", async () => {
    const jwk = idp.privateJwks().keys.at(0);
    if (!jwk) throw new Error("no key");
    const publicPem = createPublicKey({ key: { kty: "RSA", n: jwk.n, e: jwk.e }, format: "jwk" }).export({
      type: "spki",
      format: "pem",
    });
    const signingInput = `${b64json({ alg: "HS256", typ: "JWT", kid: jwk.kid })}.${b64json(validClaims())}`;
    for (const secret of [publicPem, JSON.stringify({ kty: "RSA", n: jwk.n, e: jwk.e })]) {
      const sig = createHmac("sha256", secret).update(signingInput).digest("base64url");
      await expectUnauthorized(`${signingInput}.${sig}`);
    }
  });

  it("wrong issuer", async () => {
    const err = await expectUnauthorized(await signWithProviderKey(validClaims({ iss: "http://evil.example" })));
    expect(err.message).toBe("Token not issued for this service");
  });

  it("wrong audience (including a real token of another audience)", async () => {
    await expectUnauthorized(await signWithProviderKey(validClaims({ aud: "some-other-api" })));
    const { accessToken } = await idp.getToken("teacher");
    await expectUnauthorized(accessToken, verifierFor({ audience: "another-project" }));
  });

  it("expired (beyond the 30 s clock tolerance)", async () => {
    const err = await expectUnauthorized(
      await signWithProviderKey(validClaims({ iat: now() - 3600, exp: now() - 120 })),
    );
    expect(err.message).toBe("Token expired");
    // Within the tolerance it still passes.
    await expect(verifier.verify(await signWithProviderKey(validClaims({ exp: now() - 5 })))).resolves.toBeDefined();
  });

  it("not yet valid (nbf in the future)", async () => {
    const err = await expectUnauthorized(await signWithProviderKey(validClaims({ nbf: now() + 300 })));
    expect(err.message).toBe("Token not yet valid");
  });

  it("issued in the future (iat beyond the 30 s clock tolerance)", async () => {
    const err = await expectUnauthorized(await signWithProviderKey(validClaims({ iat: now() + 300 })));
    expect(err.message).toBe("Token issued in the future");
    // Within the tolerance (a clock a few seconds ahead) it still passes.
    await expect(verifier.verify(await signWithProviderKey(validClaims({ iat: now() + 5 })))).resolves.toBeDefined();
  });

  it("nbf within the clock tolerance passes; iat, nbf and exp that are not numbers are refused", async () => {
    await expect(verifier.verify(await signWithProviderKey(validClaims({ nbf: now() + 5 })))).resolves.toBeDefined();
    const notNumbers: JWTPayload[] = [
      { iat: String(now()) as unknown as number },
      { nbf: String(now() - 60) as unknown as number },
      { exp: String(now() + 600) as unknown as number },
    ];
    for (const over of notNumbers) await expectUnauthorized(await signWithProviderKey(validClaims(over)));
  });

  it("an algorithm outside the allow-list is refused even when the provider's own key verifies it", async () => {
    const jwk = idp.privateJwks().keys.at(0);
    if (!jwk) throw new Error("provider has no key");
    // PS256 uses the same RSA key: the signature is genuine, only the algorithm is not allowed.
    const ps256 = await new SignJWT(validClaims())
      .setProtectedHeader({ alg: "PS256", kid: jwk.kid })
      .sign(await importJWK(jwk, "PS256"));
    await expectUnauthorized(ps256);
    await expectUnauthorized(ps256, verifierFor({ algorithms: ["ES256"] }));
    // And a verifier allowing only ES256 refuses the provider's genuine RS256 tokens.
    await expectUnauthorized(await signWithProviderKey(validClaims()), verifierFor({ algorithms: ["ES256"] }));
  });

  it("without exp", async () => {
    const claims = validClaims();
    delete claims.exp;
    await expectUnauthorized(await signWithProviderKey(claims));
  });

  it("unknown kid (signed with a fresh key)", async () => {
    const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const token = await new SignJWT(validClaims())
      .setProtectedHeader({ alg: "RS256", kid: "not-a-provider-kid" })
      .sign(privateKey);
    await expectUnauthorized(token);
    // A fresh verifier (cold cache) fetches the JWKS, still finds no such kid: 401, not 503.
    await expectUnauthorized(token, verifierFor());
  });

  it("fresh key claiming the provider's kid", async () => {
    const { privateKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const kid = idp.privateJwks().keys[0]?.kid ?? "";
    await expectUnauthorized(
      await new SignJWT(validClaims()).setProtectedHeader({ alg: "RS256", kid }).sign(privateKey),
    );
  });

  it("ES256 header with the provider's RSA kid", async () => {
    const { privateKey } = generateKeyPairSync("ec", { namedCurve: "P-256" });
    const kid = idp.privateJwks().keys[0]?.kid ?? "";
    await expectUnauthorized(
      await new SignJWT(validClaims()).setProtectedHeader({ alg: "ES256", kid }).sign(privateKey),
    );
  });

  it("payload tampered, original signature kept", async () => {
    const { accessToken } = await idp.getToken("student");
    const [header, payload, signature] = accessToken.split(".");
    const claims = JSON.parse(Buffer.from(payload, "base64url").toString()) as JWTPayload;
    const escalated = { ...claims, [ROLES_CLAIM]: { admin: { "300000000000000001": "autolabs.local" } } };
    await expectUnauthorized(`${header}.${b64json(escalated)}.${signature}`);
    await expectUnauthorized(`${header}.${b64json({ ...claims, sub: TEACHER_SUB })}.${signature}`);
    // Sanity: the untouched token is fine.
    await expect(verifier.verify(accessToken)).resolves.toBeDefined();
  });

  it.each([[""], ["garbage"], ["a.b.c"], ["eyJhbGciOiJSUzI1NiJ9.e30"], ["x".repeat(20_000)]])(
    "malformed token %#",
    async (token) => {
      await expectUnauthorized(token);
    },
  );
});

describe("IdP availability", () => {
  it("unreachable IdP with a cold cache gives 503, not 401", async () => {
    const token = await signWithProviderKey(validClaims());
    const down = createTokenVerifier({
      issuer: "http://127.0.0.1:9", // discard port: nothing listens
      audience: AUDIENCE,
      algorithms: ["RS256"],
      clockToleranceS: 30,
      httpTimeoutMs: 2000,
    });
    await expect(down.verify(token)).rejects.toMatchObject({ code: 503, type: "SERVICE_UNAVAILABLE" });
    const downJwks = verifierFor({ jwksUri: "http://127.0.0.1:9/jwks", httpTimeoutMs: 2000 });
    await expect(downJwks.verify(token)).rejects.toMatchObject({ code: 503, type: "SERVICE_UNAVAILABLE" });
    await expect(downJwks.warmUp()).rejects.toMatchObject({ code: 503 });
  });

  it("a discovery document naming another issuer is not trusted (503)", async () => {
    // Same server under another name: its document says http://localhost:<port>, not 127.0.0.1.
    const alias = idp.issuer.replace("localhost", "127.0.0.1");
    const token = await signWithProviderKey(validClaims({ iss: alias }));
    await expect(verifierFor({ issuer: alias }).verify(token)).rejects.toMatchObject({ code: 503 });
  });
});

describe("lifetimes and restarts", () => {
  it("the TTL knob shortens access tokens, which then expire", async () => {
    const shortIdp = await startIdp({ accessTokenTtlS: 2, env: { OIDC_AUDIENCE: AUDIENCE } });
    try {
      const { accessToken, expiresIn } = await shortIdp.getToken("teacher");
      expect(expiresIn).toBe(2);
      const strict = createTokenVerifier({
        issuer: shortIdp.issuer,
        audience: AUDIENCE,
        algorithms: ["RS256"],
        clockToleranceS: 0,
      });
      await expect(strict.verify(accessToken)).resolves.toMatchObject({ sub: TEACHER_SUB });
      await new Promise((r) => setTimeout(r, 3100));
      const err = await expectUnauthorized(accessToken, strict);
      expect(err.message).toBe("Token expired");
    } finally {
      await shortIdp.stop();
    }
  });

  it("keys persist in the data dir: tokens survive an IdP restart; stale keys bridge an outage", async () => {
    const dataDir = mkdtempSync(join(tmpdir(), "autolabs-idp-restart-"));
    const first = await startIdp({ env: { OIDC_AUDIENCE: AUDIENCE }, dataDir });
    const { port, issuer } = first;
    let second: TestIdp | undefined;
    try {
      const { accessToken } = await first.getToken("student");
      // Re-fetches keys on every verify (max age 0), so an outage is felt immediately.
      const v = createTokenVerifier({
        issuer,
        audience: AUDIENCE,
        algorithms: ["RS256"],
        clockToleranceS: 30,
        jwksMaxAgeMs: 0,
      });
      await expect(v.verify(accessToken)).resolves.toBeDefined();
      const kid = first.privateJwks().keys[0]?.kid;

      // The data dir is ours, so stop() keeps it.
      await first.stop();
      await expect(v.verify(accessToken)).resolves.toMatchObject({ sub: "310000000000000003" });

      second = await startIdp({ env: { OIDC_AUDIENCE: AUDIENCE }, dataDir, port });
      expect(second.issuer).toBe(issuer);
      expect(second.privateJwks().keys[0]?.kid).toBe(kid);
      await expect(
        createTokenVerifier({ issuer, audience: AUDIENCE, algorithms: ["RS256"], clockToleranceS: 30 }).verify(
          accessToken,
        ),
      ).resolves.toBeDefined();
    } finally {
      await first.stop();
      await second?.stop();
      rmSync(dataDir, { recursive: true, force: true });
    }
  });
});

describe("token CLI", () => {
  const CLI = resolve(__dirname, "../../dist/dev/token-cli.js");
  const runCli = (args: string[], env: Record<string, string>) =>
    new Promise<{ code: number | null; stdout: string; stderr: string }>((res) => {
      const child = spawn(process.execPath, [CLI, ...args], { env: { PATH: process.env.PATH ?? "", ...env } });
      let stdout = "";
      let stderr = "";
      child.stdout.on("data", (d: Buffer) => (stdout += d.toString()));
      child.stderr.on("data", (d: Buffer) => (stderr += d.toString()));
      child.on("close", (code) => res({ code, stdout, stderr }));
    });

  it("prints only the access token on stdout", async () => {
    const r = await runCli(["teacher"], { EMBEDDED_IDP_PORT: String(idp.port) });
    expect(r.code).toBe(0);
    expect(r.stdout).toMatch(/^[\w-]+\.[\w-]+\.[\w-]+\n$/);
    expect(await verifier.verify(r.stdout.trim())).toMatchObject({ sub: TEACHER_SUB });
  });

  it("uses OIDC_ISSUER when set", async () => {
    const r = await runCli(["--", "student"], { OIDC_ISSUER: idp.issuer, EMBEDDED_IDP_PORT: "9" });
    expect(r.code).toBe(0);
    expect(decodeJwt(r.stdout.trim()).email).toBe("student@autolabs.local");
  });

  it("fails clearly for an unknown account", async () => {
    const r = await runCli(["nobody"], { EMBEDDED_IDP_PORT: String(idp.port) });
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(/unknown account "nobody"/);
  });

  it("fails clearly when the provider is not reachable", async () => {
    const r = await runCli(["teacher"], { EMBEDDED_IDP_PORT: "9" });
    expect(r.code).toBe(1);
    expect(r.stdout).toBe("");
    expect(r.stderr).toMatch(/not reachable/);
  });

  it("prints usage without an account", async () => {
    const r = await runCli([], {});
    expect(r.code).toBe(1);
    expect(r.stderr).toMatch(/usage/);
  });
});
