import { claimsToIdentity, InvalidClaimsError, roleFromClaim } from "../../services/auth/auth.rules";

const ROLES_CLAIM = "urn:zitadel:iam:org:project:roles";
const org = (id = "300000000000000001", domain = "autolabs.local") => ({ [id]: domain });

describe("roleFromClaim", () => {
  it.each([
    [{ admin: org() }, "admin"],
    [{ teacher: org() }, "teacher"],
    [{ student: org() }, "student"],
  ])("maps a single role %j → %s", (claim, role) => {
    expect(roleFromClaim(claim)).toBe(role);
  });

  it("picks the highest of several roles, whatever the key order", () => {
    expect(roleFromClaim({ student: org(), teacher: org() })).toBe("teacher");
    expect(roleFromClaim({ teacher: org(), admin: org(), student: org() })).toBe("admin");
    expect(roleFromClaim({ student: org(), admin: org() })).toBe("admin");
  });

  it("accepts a role granted by several organisations", () => {
    expect(roleFromClaim({ teacher: { ...org("1", "a.example"), ...org("2", "b.example") } })).toBe("teacher");
  });

  it("ignores unknown role keys", () => {
    expect(roleFromClaim({ "lab-viewer": org(), superuser: org() })).toBeNull();
    expect(roleFromClaim({ "lab-viewer": org(), student: org() })).toBe("student");
  });

  it("matches role keys case-insensitively", () => {
    expect(roleFromClaim({ Teacher: org() })).toBe("teacher");
  });

  it("returns null when no role is granted", () => {
    expect(roleFromClaim({})).toBeNull();
    expect(roleFromClaim(undefined)).toBeNull();
    expect(roleFromClaim(null)).toBeNull();
  });

  it("does not count a role whose org map is empty or not an object", () => {
    expect(roleFromClaim({ admin: {} })).toBeNull();
    expect(roleFromClaim({ admin: true, teacher: org() })).toBe("teacher");
    expect(roleFromClaim({ admin: "300000000000000001" })).toBeNull();
    expect(roleFromClaim({ admin: ["x"] })).toBeNull();
    expect(roleFromClaim({ admin: null })).toBeNull();
  });

  it.each([["admin"], [42], [true], [["admin", "teacher"]], [[{ admin: org() }]], [() => "admin"]])(
    "returns null for garbage type %p",
    (claim) => {
      expect(roleFromClaim(claim)).toBeNull();
    },
  );

  it("is not fooled by prototype keys", () => {
    const claim = JSON.parse('{"__proto__": {"admin": {"1": "x"}}, "constructor": {"1": "x"}}') as unknown;
    expect(roleFromClaim(claim)).toBeNull();
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
    expect(claimsToIdentity(base, ROLES_CLAIM)).toEqual({
      externalId: "310000000000000002",
      email: "teacher@autolabs.local",
      name: "Demo Teacher",
      role: "teacher",
    });
  });

  it("keeps a numeric-looking sub as an exact string", () => {
    expect(claimsToIdentity({ ...base, sub: "263012345678901234567" }, ROLES_CLAIM).externalId).toBe(
      "263012345678901234567",
    );
  });

  it("reads the roles claim under the configured name only", () => {
    expect(claimsToIdentity(base, "roles").role).toBeNull();
    expect(claimsToIdentity({ sub: "x", roles: { admin: org() } }, "roles").role).toBe("admin");
  });

  it("requires a string sub", () => {
    for (const sub of [undefined, null, "", "   ", 123, { id: 1 }, "x".repeat(256), " padded "]) {
      expect(() => claimsToIdentity({ ...base, sub }, ROLES_CLAIM)).toThrow(InvalidClaimsError);
    }
    try {
      claimsToIdentity({ email: "a@b.c" }, ROLES_CLAIM);
      throw new Error("expected a throw");
    } catch (err) {
      expect(err).toMatchObject({ code: 401, type: "UNAUTHORIZED" });
    }
  });

  it("rejects a payload that is not an object", () => {
    for (const p of [null, undefined, "sub", 1, ["sub"]]) {
      expect(() => claimsToIdentity(p, ROLES_CLAIM)).toThrow(InvalidClaimsError);
    }
  });

  it("treats missing or malformed email and name as null", () => {
    const id = claimsToIdentity({ sub: "s1", email: "not-an-email", name: 7 }, ROLES_CLAIM);
    expect(id).toEqual({ externalId: "s1", email: null, name: null, role: null });
    expect(claimsToIdentity({ sub: "s1", email: ["a@b.c"] }, ROLES_CLAIM).email).toBeNull();
    expect(claimsToIdentity({ sub: "s1", name: "x".repeat(201) }, ROLES_CLAIM).name).toBeNull();
  });

  it("falls back to given/family name, then preferred_username", () => {
    expect(claimsToIdentity({ sub: "s", given_name: "Ada", family_name: "Lovelace" }, ROLES_CLAIM).name).toBe(
      "Ada Lovelace",
    );
    expect(claimsToIdentity({ sub: "s", preferred_username: "ada" }, ROLES_CLAIM).name).toBe("ada");
  });

  it("trims email and name", () => {
    const id = claimsToIdentity({ sub: "s", email: " a@b.c ", name: "  Ada  " }, ROLES_CLAIM);
    expect(id.email).toBe("a@b.c");
    expect(id.name).toBe("Ada");
  });
});
