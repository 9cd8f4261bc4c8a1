/**
 * Bearer authentication through HTTP (GET /api/v1/courses, GET /api/v1/auth/me): what the gateway does with
 * missing, malformed, tampered and valid tokens, the users upsert, role mapping, and that a client cannot
 * smuggle a principal in through params. The verifier's own cases live in token-verifier.test.ts; here
 * each case is checked end to end (status, body, nothing written).
 *
 * Forged tokens are signed with the embedded IdP's real private key; the control case proves such a token
 * is accepted, so each 401 below is caused by the one thing its case changes.
 */
import { createHmac, createPublicKey, generateKeyPairSync, randomUUID } from "node:crypto";
import { decodeJwt, exportJWK, SignJWT, type JWTPayload } from "jose";
import { startTestPlatform, type TestPlatform } from "../support/platform";
import { checkedApi, now, ROLES_CLAIM, rolesClaim, signWithIdpKey, validClaims, type Api } from "../support/http-api";
import { ifAssigned } from "../support/cleanup";

let p: TestPlatform;
let api: Api;

beforeAll(async () => {
  p = await startTestPlatform({ SERVICES: "api-gateway,auth,courses,labs" });
  api = checkedApi(p);
});
afterAll(async () => {
  await ifAssigned(p)?.stop();
});

const b64json = (o: object) => Buffer.from(JSON.stringify(o)).toString("base64url");

let subSeq = 0;
/** A fresh sub per case, so user rows of different cases never mix. */
const freshSub = () => `3900000000000${String(++subSeq).padStart(5, "0")}`;

function claimsOf(roles: string[] | null, over: JWTPayload = {}): JWTPayload {
  const sub = freshSub();
  return validClaims(p, {
    sub,
    email: `u${sub}@autolabs.local`,
    name: `User ${sub}`,
    ...(roles === null ? {} : { [ROLES_CLAIM]: rolesClaim(roles) }),
    ...over,
  });
}

async function userCount(): Promise<number> {
  const [rows] = await p.sequelize.query("SELECT count(*)::int AS n FROM users");
  return (rows as { n: number }[])[0].n;
}

async function userBySub(sub: string): Promise<Record<string, unknown> | undefined> {
  const [rows] = await p.sequelize.query("SELECT * FROM users WHERE external_id = $sub", { bind: { sub } });
  return (rows as Record<string, unknown>[])[0];
}

const bearer = (token: string) => ({ authorization: `Bearer ${token}` });

/** GET /courses with these headers must be 401 {detail}, and no users row appears. */
async function expect401(headers: Record<string, string>): Promise<string> {
  const before = await userCount();
  const res = await api("GET", "/courses", { headers });
  expect(res.status).toBe(401);
  const detail = (res.body as { detail: string }).detail;
  expect(typeof detail).toBe("string");
  expect(detail).not.toMatch(/eyJ|jose|JWS|JWK|ERR_/);
  expect(await userCount()).toBe(before);
  return detail;
}

describe("no or malformed credentials", () => {
  it("no token → 401", async () => {
    await expect401({});
    expect((await api("GET", "/auth/me")).status).toBe(401);
    expect((await api("POST", "/courses", { body: { name: "anon" } })).status).toBe(401);
  });

  it.each([
    ["empty", ""],
    ["Basic scheme", "Basic YWRtaW46YWRtaW4="],
    ["scheme only", "Bearer"],
    ["scheme and space", "Bearer "],
    ["not a JWT", "Bearer abcdefghijklmnop"],
    ["two parts", "Bearer aaa.bbb"],
    ["four parts", "Bearer aaa.bbb.ccc.ddd"],
    ["garbage base64", "Bearer !!!.@@@.###"],
    ["three dots of junk", "Bearer aaaa.bbbb.cccc"],
    ["two tokens", "Bearer aaa.bbb.ccc aaa.bbb.ccc"],
    ["token without scheme", "eyJhbGciOiJSUzI1NiJ9.eyJzdWIiOiIxIn0.c2ln"],
  ])("malformed Authorization (%s) → 401", async (_name, value) => {
    await expect401({ authorization: value });
  });

  it("a token in the query string is not a credential", async () => {
    const token = await p.token("admin");
    const res = await api("GET", `/courses?access_token=${token}&token=${token}`);
    expect(res.status).toBe(401);
  });

  it("the auth scheme is case-insensitive (RFC 7235): 'bearer' works like 'Bearer'", async () => {
    const token = await p.token("teacher");
    for (const scheme of ["bearer", "BEARER", "Bearer"]) {
      const res = await api("GET", "/courses", { headers: { authorization: `${scheme} ${token}` } });
      expect(res.status).toBe(200);
    }
  });
});

describe("tampered tokens → 401, nothing written", () => {
  it("control: a token signed with the IdP key and valid claims is accepted (and creates its user)", async () => {
    const claims = claimsOf(["teacher"]);
    const res = await api("GET", "/courses", { headers: bearer(await signWithIdpKey(p, claims)) });
    expect(res.status).toBe(200);
    expect(await userBySub(String(claims.sub))).toMatchObject({ role: "teacher", email: claims.email });
  });

  it('alg "none" (empty signature, with the original payload and with an upgraded one)', async () => {
    const real = await p.token("student");
    const [, payload] = real.split(".");
    await expect401(bearer(`${b64json({ alg: "none", typ: "JWT" })}.${payload}.`));
    const upgraded = { ...decodeJwt(real), [ROLES_CLAIM]: rolesClaim(["admin"]) };
    await expect401(bearer(`${b64json({ alg: "none" })}.${b64json(upgraded)}.`));
    await expect401(bearer(`${b64json({ alg: "None" })}.${b64json(claimsOf(["admin"]))}.`));
  });

  it("HS256 signed with the IdP's public key as HMAC secret", async () => {
    const jwk = p.idp.privateJwks().keys[0];
    const publicPem = createPublicKey({ key: { kty: "RSA", n: jwk.n, e: jwk.e }, format: "jwk" }).export({
      type: "spki",
      format: "pem",
    });
    const input = `${b64json({ alg: "HS256", typ: "JWT", kid: jwk.kid })}.${b64json(claimsOf(["admin"]))}`;
    for (const secret of [publicPem, JSON.stringify({ kty: "RSA", n: jwk.n, e: jwk.e }), jwk.n as string]) {
      const sig = createHmac("sha256", secret).update(input).digest("base64url");
      await expect401(bearer(`${input}.${sig}`));
    }
  });

  it("wrong issuer", async () => {
    await expect401(bearer(await signWithIdpKey(p, claimsOf(["admin"], { iss: "http://evil.example" }))));
    await expect401(bearer(await signWithIdpKey(p, claimsOf(["admin"], { iss: `${p.idp.issuer}/other` }))));
  });

  it("wrong audience (or none)", async () => {
    await expect401(bearer(await signWithIdpKey(p, claimsOf(["admin"], { aud: "another-api" }))));
    await expect401(bearer(await signWithIdpKey(p, claimsOf(["admin"], { aud: ["another-api", "third"] }))));
    const noAud = claimsOf(["admin"]);
    delete noAud.aud;
    await expect401(bearer(await signWithIdpKey(p, noAud)));
  });

  it("expired (beyond the clock tolerance), and without exp", async () => {
    await expect401(bearer(await signWithIdpKey(p, claimsOf(["admin"], { iat: now() - 7200, exp: now() - 3600 }))));
    await expect401(bearer(await signWithIdpKey(p, claimsOf(["admin"], { iat: now() - 600, exp: now() - 120 }))));
    const noExp = claimsOf(["admin"]);
    delete noExp.exp;
    await expect401(bearer(await signWithIdpKey(p, noExp)));
  });

  it("nbf in the future", async () => {
    await expect401(bearer(await signWithIdpKey(p, claimsOf(["admin"], { nbf: now() + 600 }))));
  });

  it("no sub", async () => {
    const noSub = claimsOf(["admin"]);
    delete noSub.sub;
    await expect401(bearer(await signWithIdpKey(p, noSub)));
  });

  it("unknown kid (a key of our own, and the IdP's key under another kid)", async () => {
    const { privateKey, publicKey } = generateKeyPairSync("rsa", { modulusLength: 2048 });
    const own = await new SignJWT(claimsOf(["admin"]))
      .setProtectedHeader({ alg: "RS256", kid: "attacker-key" })
      .sign(privateKey);
    await expect401(bearer(own));
    // Our own key with the IdP's kid: the signature does not match the IdP's public key.
    const kid = p.idp.privateJwks().keys[0].kid;
    const spoofedKid = await new SignJWT(claimsOf(["admin"]))
      .setProtectedHeader({ alg: "RS256", kid })
      .sign(privateKey);
    await expect401(bearer(spoofedKid));
    await expect401(bearer(await signWithIdpKey(p, claimsOf(["admin"]), { kid: `unknown-${randomUUID()}` })));
    // A key embedded in the header (jwk) is never trusted.
    const embedded = await new SignJWT(claimsOf(["admin"]))
      .setProtectedHeader({ alg: "RS256", jwk: await exportJWK(publicKey) })
      .sign(privateKey);
    await expect401(bearer(embedded));
  });

  it("a modified payload with the original signature", async () => {
    const real = await p.token("student");
    const [header, payload, signature] = real.split(".");
    const claims = JSON.parse(Buffer.from(payload, "base64url").toString()) as JWTPayload;
    for (const change of [
      { [ROLES_CLAIM]: rolesClaim(["admin"]) },
      { sub: "310000000000000001" },
      { exp: now() + 10 * 86400 },
      { email: "admin@autolabs.local" },
    ]) {
      await expect401(bearer(`${header}.${b64json({ ...claims, ...change })}.${signature}`));
    }
    // The header changed instead (typ), the signature kept.
    await expect401(
      bearer(
        `${b64json({ ...JSON.parse(Buffer.from(header, "base64url").toString()), typ: "JWT" })}.${payload}.${signature}`,
      ),
    );
    // A flipped signature byte.
    const flipped = signature.slice(0, -2) + (signature.endsWith("AA") ? "AB" : "AA");
    await expect401(bearer(`${header}.${payload}.${flipped}`));
    // And the untouched token still works: the 401s come from the changes.
    expect((await api("GET", "/courses", { headers: bearer(real) })).status).toBe(200);
  });
});

describe("valid tokens", () => {
  it.each([
    ["admin", "admin", "Demo Admin"],
    ["teacher", "teacher", "Demo Teacher"],
    ["student", "student", "Demo Student"],
    ["student2", "student", "Demo Student Two"],
  ])("a real %s token works, and GET /auth/me shows the upserted user", async (account, role, name) => {
    const courses = await api("GET", "/courses", { as: account });
    expect(courses.status).toBe(200);
    const me = await api("GET", "/auth/me", { as: account });
    expect(me.status).toBe(200);
    expect(me.body).toMatchObject({ id: expect.any(Number), email: `${account}@autolabs.local`, name, role });
    // No secrets or internals on the principal's view of itself.
    expect(Object.keys(me.body as object).sort()).toEqual([
      "created_at",
      "email",
      "id",
      "last_login_at",
      "name",
      "role",
      "updated_at",
    ]);
    const row = await userBySub(String(decodeJwt(await p.token(account)).sub));
    expect(row).toMatchObject({ id: (me.body as { id: number }).id, email: `${account}@autolabs.local`, name, role });
    expect(row?.last_login_at).not.toBeNull();
  });

  it("the same account twice is one users row", async () => {
    const claims = claimsOf(["student"]);
    const token = await signWithIdpKey(p, claims);
    const a = await api("GET", "/auth/me", { headers: bearer(token) });
    const b = await api("GET", "/auth/me", { headers: bearer(await signWithIdpKey(p, { ...claims, iat: now() + 1 })) });
    expect((a.body as { id: number }).id).toBe((b.body as { id: number }).id);
    const [rows] = await p.sequelize.query("SELECT count(*)::int AS n FROM users WHERE external_id = $sub", {
      bind: { sub: claims.sub },
    });
    expect((rows as { n: number }[])[0].n).toBe(1);
  });

  it("a changed name, email or role at the IdP is written to the users row", async () => {
    const claims = claimsOf(["student"]);
    const first = await api("GET", "/auth/me", { headers: bearer(await signWithIdpKey(p, claims)) });
    expect(first.body).toMatchObject({ role: "student", name: claims.name });
    const changed = {
      ...claims,
      name: "Renamed Person",
      email: "renamed@autolabs.local",
      [ROLES_CLAIM]: rolesClaim(["teacher"]),
    };
    const second = await api("GET", "/auth/me", { headers: bearer(await signWithIdpKey(p, changed)) });
    expect(second.body).toMatchObject({
      id: (first.body as { id: number }).id,
      role: "teacher",
      name: "Renamed Person",
      email: "renamed@autolabs.local",
    });
    // The new role takes effect at once: a teacher may create a course.
    const created = await api("POST", "/courses", {
      headers: bearer(await signWithIdpKey(p, changed)),
      body: { name: "Promoted" },
    });
    expect(created.status).toBe(201);
  });

  it("a token without email and name (a Zitadel access token) leaves the stored ones alone", async () => {
    const claims = claimsOf(["student"]);
    const first = await api("GET", "/auth/me", { headers: bearer(await signWithIdpKey(p, claims)) });
    expect(first.body).toMatchObject({ email: claims.email, name: claims.name });
    const bare: JWTPayload = { ...claims, iat: now() + 1 };
    delete bare.email;
    delete bare.name;
    const second = await api("GET", "/auth/me", { headers: bearer(await signWithIdpKey(p, bare)) });
    expect(second.status).toBe(200);
    expect(second.body).toMatchObject({
      id: (first.body as { id: number }).id,
      email: claims.email,
      name: claims.name,
    });
    expect(await userBySub(String(claims.sub))).toMatchObject({ email: claims.email, name: claims.name });
    // Unusable values say nothing either; the role still syncs from such a token.
    const junk = { ...bare, email: "not-an-address", name: "   ", [ROLES_CLAIM]: rolesClaim(["teacher"]) };
    const third = await api("GET", "/auth/me", { headers: bearer(await signWithIdpKey(p, junk)) });
    expect(third.body).toMatchObject({ email: claims.email, name: claims.name, role: "teacher" });
    expect(await userBySub(String(claims.sub))).toMatchObject({
      email: claims.email,
      name: claims.name,
      role: "teacher",
    });
  });

  it("parallel first sign-ins of one user: all succeed, one row, and the cached user is what is stored", async () => {
    const claims = claimsOf(["student"]);
    // Twenty tokens of one new user, some without email/name, roles and names differing between them.
    const variants = Array.from({ length: 20 }, (_, i) => {
      const v: JWTPayload = {
        ...claims,
        iat: now() - i,
        name: `Name ${i % 3}`,
        [ROLES_CLAIM]: rolesClaim([i % 2 ? "teacher" : "student"]),
      };
      if (i % 4 === 1) {
        delete v.email;
        delete v.name;
      }
      return v;
    });
    const tokens = await Promise.all(variants.map((v) => signWithIdpKey(p, v)));
    const answers = await Promise.all(tokens.map((t) => api("GET", "/auth/me", { headers: bearer(t) })));
    expect(answers.map((a) => a.status)).toEqual(tokens.map(() => 200));
    expect(new Set(answers.map((a) => (a.body as { id: number }).id)).size).toBe(1);
    const [rows] = await p.sequelize.query("SELECT count(*)::int AS n FROM users WHERE external_id = $sub", {
      bind: { sub: claims.sub },
    });
    expect((rows as { n: number }[])[0].n).toBe(1);
    // /auth/me reads the user through the users cache: it agrees with the row, no stale copy survived.
    const again = await api("GET", "/auth/me", { headers: bearer(tokens[1]) });
    const row = await userBySub(String(claims.sub));
    expect(again.body).toMatchObject({ email: row?.email, name: row?.name, role: row?.role });
    // Never wiped by a token that carried no email or name.
    expect(row).toMatchObject({ email: claims.email, name: expect.stringMatching(/^Name [012]$/) });
  });

  it.each([
    [["student", "teacher"], "teacher"],
    [["teacher", "student"], "teacher"],
    [["student", "admin"], "admin"],
    [["admin", "teacher", "student"], "admin"],
    [["student", "unknown-role"], "student"],
    [["Teacher"], "teacher"],
  ])("several roles %j → the highest wins (%s)", async (roles, expected) => {
    const res = await api("GET", "/auth/me", { headers: bearer(await signWithIdpKey(p, claimsOf(roles))) });
    expect(res.status).toBe(200);
    expect((res.body as { role: string }).role).toBe(expected);
  });

  it("several roles act with the highest: student+admin sees every course, student+teacher may create one", async () => {
    const seed = await api("POST", "/courses", { as: "teacher", body: { name: "Visible to admins" } });
    expect(seed.status).toBe(201);
    const asAdmin = await api("GET", "/courses", {
      headers: bearer(await signWithIdpKey(p, claimsOf(["student", "admin"]))),
    });
    expect((asAdmin.body as { items: { id: number }[] }).items.map((c) => c.id)).toContain(
      (seed.body as { id: number }).id,
    );
    const asTeacher = await api("POST", "/courses", {
      headers: bearer(await signWithIdpKey(p, claimsOf(["student", "teacher"]))),
      body: { name: "Mixed roles" },
    });
    expect(asTeacher.status).toBe(201);
  });

  it("a valid token with no platform role → 403 on every endpoint, and no users row", async () => {
    for (const claims of [
      claimsOf(null),
      claimsOf([]),
      claimsOf(["observer", "guest"]),
      claimsOf(null, { [ROLES_CLAIM]: { teacher: {} } }), // a role key without any granting organisation
      claimsOf(null, { [ROLES_CLAIM]: ["admin"] }), // not Zitadel's shape
      claimsOf(null, { [ROLES_CLAIM]: "admin" }),
      claimsOf(null, { roles: ["admin"], role: "admin" }), // other claim names mean nothing
    ]) {
      const before = await userCount();
      const token = await signWithIdpKey(p, claims);
      for (const [method, path] of [
        ["GET", "/courses"],
        ["GET", "/auth/me"],
        ["GET", "/labs"],
      ]) {
        const res = await api(method, path, { headers: bearer(token) });
        expect(res.status).toBe(403);
      }
      expect(await userCount()).toBe(before);
      expect(await userBySub(String(claims.sub))).toBeUndefined();
    }
  });
});

describe("a client cannot inject a principal", () => {
  async function coursesOf(rows: string): Promise<number> {
    const [r] = await p.sequelize.query(`SELECT count(*)::int AS n FROM courses ${rows}`);
    return (r as { n: number }[])[0].n;
  }

  it("principal-looking params without a token are still anonymous (401)", async () => {
    const adminId = await p.userId("admin");
    for (const path of [
      `/courses?user[kind]=system&user[reason]=x`,
      `/courses?user[kind]=user&user[id]=${adminId}&user[role]=admin`,
      `/courses?meta[user][kind]=system&meta[user][reason]=x`,
      `/courses?$user=admin&principal=admin`,
    ]) {
      expect((await api("GET", path)).status).toBe(401);
    }
    const before = await coursesOf("");
    for (const body of [
      { name: "inj", user: { kind: "system", reason: "x" } },
      { name: "inj", meta: { user: { kind: "user", id: adminId, role: "admin" } } },
      { name: "inj", $user: { kind: "system", reason: "x" }, ctx: { meta: { user: { kind: "system" } } } },
    ]) {
      expect((await api("POST", "/courses", { body })).status).toBe(401);
    }
    for (const header of ["x-user", "x-forwarded-user", "x-principal", "x-auth-request-user", "remote-user"]) {
      expect((await api("GET", "/courses", { headers: { [header]: "admin" } })).status).toBe(401);
      expect(
        (
          await api("POST", "/courses", {
            headers: { [header]: '{"kind":"system","reason":"x"}' },
            body: { name: "h" },
          })
        ).status,
      ).toBe(401);
    }
    expect(await coursesOf("")).toBe(before);
  });

  it("a student's principal-looking params change neither the role nor the scope", async () => {
    const adminId = await p.userId("admin");
    const teacherId = await p.userId("teacher");
    const studentId = await p.userId("student");
    const hidden = await api("POST", "/courses", { as: "teacher", body: { name: "Not assigned to student" } });
    expect(hidden.status).toBe(201);
    const hiddenId = (hidden.body as { id: number }).id;

    const before = await coursesOf("");
    for (const body of [
      { name: "inj", user: { kind: "system", reason: "x" } },
      { name: "inj", meta: { user: { kind: "user", id: adminId, role: "admin" } } },
      { name: "inj", role: "admin", owner_id: teacherId },
      { name: "inj", $statusCode: 201, user: { kind: "user", id: teacherId, role: "teacher" } },
    ]) {
      expect((await api("POST", "/courses", { as: "student", body })).status).toBe(403);
    }
    expect(await coursesOf("")).toBe(before);

    const list = await api("GET", `/courses?user[kind]=system&user[reason]=x&user[role]=admin&role=admin`, {
      as: "student",
    });
    expect(list.status).toBe(200);
    const ids = (list.body as { items: { id: number }[] }).items.map((c) => c.id);
    expect(ids).not.toContain(hiddenId);
    const [assigned] = await p.sequelize.query("SELECT count(*)::int AS n FROM course_students WHERE student_id = $s", {
      bind: { s: studentId },
    });
    expect((list.body as { total: number }).total).toBe((assigned as { n: number }[])[0].n);

    expect((await api("GET", `/courses/${hiddenId}?user[kind]=system&user[reason]=x`, { as: "student" })).status).toBe(
      404,
    );
    const put = await api("PUT", `/courses/${hiddenId}`, {
      as: "student",
      body: { name: "pwned", user: { kind: "system", reason: "x" } },
    });
    expect(put.status).toBe(403);
    const me = await api("GET", `/auth/me?user[id]=${adminId}&user[role]=admin`, {
      as: "student",
      headers: { "x-user": String(adminId) },
    });
    expect(me.body).toMatchObject({ id: studentId, role: "student" });
    const [[course]] = (await p.sequelize.query("SELECT name FROM courses WHERE id = $id", {
      bind: { id: hiddenId },
    })) as [{ name: string }[], unknown];
    expect(course.name).toBe("Not assigned to student");
  });
});
