import { claimsToIdentity, identityToStore, InvalidClaimsError, roleFromClaim } from "../../services/auth/auth.rules";

const ROLES_CLAIM = "urn:zitadel:iam:org:project:roles";
const org = (id = "300000000000000001", domain = "autolabs.local") => ({ [id]: domain });
/** OIDC_ALLOWED_ORGS empty: a grant of any organisation counts. */
const ANY_ORG: string[] = [];
const OUR_ORG = "300000000000000001";
const PARTNER_ORG = "300000000000000777";

describe("roleFromClaim", () => {
  it.each([
    [{ admin: org() }, "admin"],
    [{ teacher: org() }, "teacher"],
    [{ student: org() }, "student"],
  ])("maps a single role %j → %s", (claim, role) => {
    expect(roleFromClaim(claim, ANY_ORG)).toBe(role);
  });

  it("picks the highest of several roles, whatever the key order", () => {
    expect(roleFromClaim({ student: org(), teacher: org() }, ANY_ORG)).toBe("teacher");
    expect(roleFromClaim({ teacher: org(), admin: org(), student: org() }, ANY_ORG)).toBe("admin");
    expect(roleFromClaim({ student: org(), admin: org() }, ANY_ORG)).toBe("admin");
  });

  it("accepts a role granted by several organisations", () => {
    expect(roleFromClaim({ teacher: { ...org("1", "a.example"), ...org("2", "b.example") } }, ANY_ORG)).toBe("teacher");
  });

  it("ignores unknown role keys", () => {
    expect(roleFromClaim({ "lab-viewer": org(), superuser: org() }, ANY_ORG)).toBeNull();
    expect(roleFromClaim({ "lab-viewer": org(), student: org() }, ANY_ORG)).toBe("student");
  });

  it("matches role keys case-insensitively", () => {
    expect(roleFromClaim({ Teacher: org() }, ANY_ORG)).toBe("teacher");
  });

  it("returns null when no role is granted", () => {
    expect(roleFromClaim({}, ANY_ORG)).toBeNull();
    expect(roleFromClaim(undefined, ANY_ORG)).toBeNull();
    expect(roleFromClaim(null, ANY_ORG)).toBeNull();
  });

  it("does not count a role whose org map is empty or not an object", () => {
    expect(roleFromClaim({ admin: {} }, ANY_ORG)).toBeNull();
    expect(roleFromClaim({ admin: true, teacher: org() }, ANY_ORG)).toBe("teacher");
    expect(roleFromClaim({ admin: "300000000000000001" }, ANY_ORG)).toBeNull();
    expect(roleFromClaim({ admin: ["x"] }, ANY_ORG)).toBeNull();
    expect(roleFromClaim({ admin: null }, ANY_ORG)).toBeNull();
  });

  it.each([["admin"], [42], [true], [["admin", "teacher"]], [[{ admin: org() }]], [() => "admin"]])(
    "returns null for garbage type %p",
    (claim) => {
      expect(roleFromClaim(claim, ANY_ORG)).toBeNull();
    },
  );

  it("is not fooled by prototype keys", () => {
    const claim = JSON.parse('{"__proto__": {"admin": {"1": "x"}}, "constructor": {"1": "x"}}') as unknown;
    expect(roleFromClaim(claim, ANY_ORG)).toBeNull();
  });
});

describe("roleFromClaim with OIDC_ALLOWED_ORGS", () => {
  const allowed = [OUR_ORG];

  it("counts a role granted by an allowed organisation", () => {
    expect(roleFromClaim({ teacher: org(OUR_ORG) }, allowed)).toBe("teacher");
    // Granted by ours and another one: ours is enough.
    expect(roleFromClaim({ teacher: { ...org(PARTNER_ORG, "p.example"), ...org(OUR_ORG) } }, allowed)).toBe("teacher");
  });

  it("ignores a role granted only by another organisation, falling back to what an allowed one granted", () => {
    expect(roleFromClaim({ admin: org(PARTNER_ORG, "p.example") }, allowed)).toBeNull();
    expect(roleFromClaim({ admin: org(PARTNER_ORG, "p.example"), student: org(OUR_ORG) }, allowed)).toBe("student");
    // The same claim without the list: the partner's admin grant wins.
    expect(roleFromClaim({ admin: org(PARTNER_ORG, "p.example"), student: org(OUR_ORG) }, ANY_ORG)).toBe("admin");
  });

  it("compares org ids exactly, as own keys (no prefix, case or prototype matches)", () => {
    expect(roleFromClaim({ teacher: org(`${OUR_ORG}0`) }, allowed)).toBeNull();
    expect(roleFromClaim({ teacher: org("abc") }, ["ABC"])).toBeNull();
    expect(roleFromClaim({ teacher: JSON.parse('{"__proto__": "x"}') as object }, ["__proto__"])).toBe("teacher");
    expect(roleFromClaim({ teacher: org("x") }, ["constructor", "toString"])).toBeNull();
  });

  it("applies to claimsToIdentity (Bearer and browser login share it)", () => {
    const payload = { sub: "s", [ROLES_CLAIM]: { admin: org(PARTNER_ORG, "p.example") } };
    expect(claimsToIdentity(payload, ROLES_CLAIM, allowed).role).toBeNull();
    expect(claimsToIdentity(payload, ROLES_CLAIM, [OUR_ORG, PARTNER_ORG]).role).toBe("admin");
  });
});

describe("claimsToIdentity", () => {
  const base = {
    sub: "310000000000000002",
    email: "teacher@autolabs.local",
    name: "Demo Teacher",
    [ROLES_CLAIM]: { teacher: org() },
  };

  it("builds the identity from a full payload", () => {
    expect(claimsToIdentity(base, ROLES_CLAIM, ANY_ORG)).toEqual({
      externalId: "310000000000000002",
      email: "teacher@autolabs.local",
      name: "Demo Teacher",
      role: "teacher",
    });
  });

  it("keeps a numeric-looking sub as an exact string", () => {
    expect(claimsToIdentity({ ...base, sub: "263012345678901234567" }, ROLES_CLAIM, ANY_ORG).externalId).toBe(
      "263012345678901234567",
    );
  });

  it("reads the roles claim under the configured name only", () => {
    expect(claimsToIdentity(base, "roles", ANY_ORG).role).toBeNull();
    expect(claimsToIdentity({ sub: "x", roles: { admin: org() } }, "roles", ANY_ORG).role).toBe("admin");
  });

  it("requires a string sub", () => {
    for (const sub of [undefined, null, "", "   ", 123, { id: 1 }, "x".repeat(256), " padded "]) {
      expect(() => claimsToIdentity({ ...base, sub }, ROLES_CLAIM, ANY_ORG)).toThrow(InvalidClaimsError);
    }
    try {
      claimsToIdentity({ email: "a@b.c" }, ROLES_CLAIM, ANY_ORG);
      throw new Error("expected a throw");
    } catch (err) {
      expect(err).toMatchObject({ code: 401, type: "UNAUTHORIZED" });
    }
  });

  it("rejects a payload that is not an object", () => {
    for (const p of [null, undefined, "sub", 1, ["sub"]]) {
      expect(() => claimsToIdentity(p, ROLES_CLAIM, ANY_ORG)).toThrow(InvalidClaimsError);
    }
  });

  it("treats missing or malformed email and name as null", () => {
    const id = claimsToIdentity({ sub: "s1", email: "not-an-email", name: 7 }, ROLES_CLAIM, ANY_ORG);
    expect(id).toEqual({ externalId: "s1", email: null, name: null, role: null });
    expect(claimsToIdentity({ sub: "s1", email: ["a@b.c"] }, ROLES_CLAIM, ANY_ORG).email).toBeNull();
    expect(claimsToIdentity({ sub: "s1", name: "x".repeat(201) }, ROLES_CLAIM, ANY_ORG).name).toBeNull();
  });

  it("falls back to given/family name, then preferred_username", () => {
    expect(claimsToIdentity({ sub: "s", given_name: "Ada", family_name: "Lovelace" }, ROLES_CLAIM, ANY_ORG).name).toBe(
      "Ada Lovelace",
    );
    expect(claimsToIdentity({ sub: "s", preferred_username: "ada" }, ROLES_CLAIM, ANY_ORG).name).toBe("ada");
  });

  it("trims email and name", () => {
    const id = claimsToIdentity({ sub: "s", email: " a@b.c ", name: "  Ada  " }, ROLES_CLAIM, ANY_ORG);
    expect(id.email).toBe("a@b.c");
    expect(id.name).toBe("Ada");
  });
});

describe("identityToStore", () => {
  const stored = { email: "ada@example.org", name: "Ada", role: "student" as const };

  it("a new user is stored as the token says, and is a change", () => {
    expect(identityToStore(null, { email: null, name: "Ada", role: "teacher" })).toEqual({
      next: { email: null, name: "Ada", role: "teacher" },
      changed: true,
    });
  });

  it("absent email and name keep the stored ones (a Zitadel access token carries neither)", () => {
    expect(identityToStore(stored, { email: null, name: null, role: "student" })).toEqual({
      next: stored,
      changed: false,
    });
    expect(identityToStore(stored, { email: null, name: "Ada L.", role: "student" })).toEqual({
      next: { ...stored, name: "Ada L." },
      changed: true,
    });
  });

  it("the role always comes from the token; any difference is a change", () => {
    expect(identityToStore(stored, { email: null, name: null, role: "teacher" })).toEqual({
      next: { ...stored, role: "teacher" },
      changed: true,
    });
    expect(identityToStore(stored, { email: "new@example.org", name: "Ada", role: "student" }).changed).toBe(true);
    expect(identityToStore(stored, { ...stored }).changed).toBe(false);
  });

  it("with nothing stored and nothing in the token, email and name stay null", () => {
    const row = { email: null, name: null, role: "admin" as const };
    expect(identityToStore(row, { email: null, name: null, role: "admin" })).toEqual({ next: row, changed: false });
  });
});
