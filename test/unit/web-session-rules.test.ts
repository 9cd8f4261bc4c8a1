import {
  SECRET_RE,
  checkCsrf,
  cookiePolicy,
  digestOf,
  parseLoginState,
  parseSessionRecord,
  pkceChallenge,
  randomSecret,
  readAuthCookies,
  resolveRedirectTo,
  safeErrorCode,
  setCookie,
  trustedOrigins,
} from "../../lib/web-session.rules";
import { createMemoryStore } from "../../services/auth/session-store";
import { manualClock } from "../support/manual-clock";

describe("secrets", () => {
  it("are 256-bit, base64url, and never repeat", () => {
    const seen = new Set<string>();
    for (let i = 0; i < 1000; i++) {
      const s = randomSecret();
      expect(s).toMatch(SECRET_RE);
      expect(Buffer.from(s, "base64url")).toHaveLength(32);
      seen.add(s);
    }
    expect(seen.size).toBe(1000);
  });

  it("PKCE S256 matches RFC 7636 appendix B", () => {
    expect(pkceChallenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk")).toBe(
      "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM",
    );
  });

  it("the store key of a secret is its SHA-256, not the secret", () => {
    const s = randomSecret();
    expect(digestOf(s)).not.toContain(s);
    expect(digestOf(s)).toBe(digestOf(s));
    expect(digestOf(s)).toHaveLength(43);
  });
});

describe("cookies", () => {
  it("over http: plain names, no Secure", () => {
    const p = cookiePolicy("http://localhost:8000");
    expect(p).toEqual({ secure: false, sessionName: "autolabs_session", loginName: "autolabs_login" });
    expect(setCookie(p, p.sessionName, "abc", 3600)).toBe(
      "autolabs_session=abc; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax",
    );
  });

  it("over https: __Host- names and Secure (Path=/, no Domain, as the prefix requires)", () => {
    const p = cookiePolicy("https://api.autolabs.example");
    expect(p.sessionName).toBe("__Host-autolabs_session");
    expect(p.loginName).toBe("__Host-autolabs_login");
    const c = setCookie(p, p.sessionName, "abc", 3600);
    expect(c).toBe("__Host-autolabs_session=abc; Path=/; Max-Age=3600; HttpOnly; SameSite=Lax; Secure");
    expect(c).not.toMatch(/Domain=/i);
  });

  it("clearing sets Max-Age=0 and an expiry in the past", () => {
    const p = cookiePolicy("http://localhost:8000");
    expect(setCookie(p, p.sessionName, "", 0)).toBe(
      "autolabs_session=; Path=/; Max-Age=0; Expires=Thu, 01 Jan 1970 00:00:00 GMT; HttpOnly; SameSite=Lax",
    );
  });

  it("reads only our cookies, the first of a name winning", () => {
    const p = cookiePolicy("http://localhost:8000");
    expect(readAuthCookies(undefined, p)).toEqual({});
    expect(readAuthCookies("a=1; autolabs_session=S1; autolabs_login=L; autolabs_session=S2", p)).toEqual({
      session: "S1",
      login: "L",
    });
    expect(readAuthCookies("x_autolabs_session=1; autolabs_sessionx=2", p)).toEqual({});
    // The https names are different cookies: a plain-named one does not count there.
    expect(readAuthCookies("autolabs_session=S", cookiePolicy("https://x.example"))).toEqual({});
    expect(readAuthCookies("__Host-autolabs_session=S", cookiePolicy("https://x.example"))).toEqual({ session: "S" });
    expect(readAuthCookies(["autolabs_session=S", "autolabs_login=L"], p)).toEqual({ session: "S", login: "L" });
  });
});

describe("redirect_to", () => {
  const FRONT = "http://localhost:3000";

  it.each([
    [undefined, "http://localhost:3000"],
    ["", "http://localhost:3000"],
    ["/", "http://localhost:3000/"],
    ["/courses/7?tab=labs#top", "http://localhost:3000/courses/7?tab=labs#top"],
    ["http://localhost:3000/labs", "http://localhost:3000/labs"],
    ["HTTP://LOCALHOST:3000/labs", "http://localhost:3000/labs"],
    ["/a/../b", "http://localhost:3000/b"],
    ["/%2F%2Fevil.example", "http://localhost:3000/%2F%2Fevil.example"],
  ])("accepts %p → %s", (raw, url) => {
    expect(resolveRedirectTo(raw, FRONT)).toEqual({ ok: true, url });
  });

  it.each([
    "https://evil.example/",
    "//evil.example/path",
    "///evil.example",
    "/\\evil.example",
    "\\\\evil.example",
    "/\tevil",
    "/x\r\nSet-Cookie: a=b",
    "http://localhost:3000@evil.example/",
    "http://user:pw@localhost:3000/",
    "http://localhost:3001/",
    "https://localhost:3000/",
    "http://localhost/",
    "javascript:alert(1)",
    "data:text/html,<script>alert(1)</script>",
    "evil.example",
    "courses/1",
    "/..//evil.example",
    " /courses",
  ])("refuses %p", (raw) => {
    expect(resolveRedirectTo(raw, FRONT).ok).toBe(false);
  });

  it("refuses an overlong value", () => {
    expect(resolveRedirectTo(`/${"x".repeat(2048)}`, FRONT).ok).toBe(false);
  });

  it("refuses non-strings (a repeated query parameter arrives as an array)", () => {
    expect(resolveRedirectTo(["/a", "/b"], FRONT).ok).toBe(false);
    expect(resolveRedirectTo(7, FRONT).ok).toBe(false);
  });

  it("stays under FRONTEND_URL's own path when it has one", () => {
    const front = "https://uni.example/autolabs";
    expect(resolveRedirectTo("/autolabs/courses", front)).toEqual({
      ok: true,
      url: "https://uni.example/autolabs/courses",
    });
    expect(resolveRedirectTo("/autolabs", front).ok).toBe(true);
    expect(resolveRedirectTo("/other-app", front).ok).toBe(false);
    expect(resolveRedirectTo("/autolabsx", front).ok).toBe(false);
  });
});

describe("CSRF", () => {
  const origins = trustedOrigins("http://localhost:3000", "http://localhost:8000");
  const json = "application/json";

  it("trusts FRONTEND_URL's and PUBLIC_URL's origins", () => {
    expect(origins).toEqual(["http://localhost:3000", "http://localhost:8000"]);
    expect(trustedOrigins("https://a.example/app", "https://a.example")).toEqual(["https://a.example"]);
  });

  it("lets reads through whatever their origin", () => {
    expect(checkCsrf({ method: "GET", origin: "https://evil.example" }, origins).ok).toBe(true);
    expect(checkCsrf({ method: "HEAD" }, origins).ok).toBe(true);
  });

  it.each([
    [{ method: "POST", contentType: json, origin: "http://localhost:3000" }],
    [{ method: "PUT", contentType: "application/json; charset=utf-8", origin: "http://localhost:8000" }],
    [{ method: "DELETE", contentType: "Application/JSON", secFetchSite: "same-origin" }],
    [{ method: "POST", contentType: json, secFetchSite: "same-site" }],
    // Cross-site by the browser's measure but from our frontend: Origin decides.
    [{ method: "POST", contentType: json, origin: "http://localhost:3000", secFetchSite: "cross-site" }],
    // No browser metadata at all: not a browser, so not a CSRF victim.
    [{ method: "POST", contentType: json }],
  ])("allows %j", (req) => {
    expect(checkCsrf(req, origins)).toEqual({ ok: true });
  });

  it.each([
    [{ method: "POST", contentType: json, origin: "https://evil.example" }],
    [{ method: "POST", contentType: json, origin: "null" }],
    [{ method: "POST", contentType: json, origin: "http://localhost:3000.evil.example" }],
    [{ method: "POST", contentType: json, secFetchSite: "cross-site" }],
    [{ method: "POST", contentType: "text/plain", origin: "http://localhost:3000" }],
    [{ method: "POST", contentType: "application/x-www-form-urlencoded", origin: "http://localhost:3000" }],
    [{ method: "POST", contentType: "multipart/form-data; boundary=x", origin: "http://localhost:3000" }],
    [{ method: "POST", origin: "http://localhost:3000" }],
    [{ method: "DELETE", origin: "http://localhost:3000" }],
    [{ method: "PATCH", contentType: "application/jsonx", origin: "http://localhost:3000" }],
  ])("refuses %j", (req) => {
    expect(checkCsrf(req, origins).ok).toBe(false);
  });
});

describe("stored records", () => {
  it("parse what was written and refuse anything else", () => {
    const state = { v: "v", nonce: "n", to: "http://x/", bind: "b", at: 1 };
    expect(parseLoginState(JSON.stringify(state))).toEqual(state);
    expect(parseLoginState("{")).toBeNull();
    expect(parseLoginState("[]")).toBeNull();
    expect(parseLoginState(JSON.stringify({ ...state, nonce: 5 }))).toBeNull();
    const session = { uid: 7, at: 1, exp: 2 };
    expect(parseSessionRecord(JSON.stringify(session))).toEqual(session);
    expect(parseSessionRecord(JSON.stringify({ ...session, uid: "7" }))).toBeNull();
    expect(parseSessionRecord(JSON.stringify({ ...session, uid: -1 }))).toBeNull();
    expect(parseSessionRecord("null")).toBeNull();
  });

  it("IdP error codes are echoed only when they are plain codes", () => {
    expect(safeErrorCode("access_denied")).toBe("access_denied");
    expect(safeErrorCode("<script>")).toBe("<script>");
    expect(safeErrorCode('a"b')).toBe("invalid_response");
    expect(safeErrorCode("x".repeat(65))).toBe("invalid_response");
    expect(safeErrorCode(["a"])).toBe("invalid_response");
    expect(safeErrorCode(undefined)).toBe("invalid_response");
  });
});

describe("in-memory store (embedded mode)", () => {
  it("expires entries, takes one-time values once, deletes", async () => {
    const clock = manualClock();
    const store = createMemoryStore({ clock });
    await store.start();
    await store.put("a", "1", 60);
    await store.put("short", "2", 0.05);
    expect(await store.get("a")).toBe("1");
    expect(await store.take("a")).toBe("1");
    expect(await store.take("a")).toBeNull();
    clock.advance(49);
    expect(await store.get("short")).toBe("2");
    clock.advance(1);
    expect(await store.get("short")).toBeNull();
    await store.put("b", "3", 60);
    await store.del("b");
    expect(await store.get("b")).toBeNull();
    await store.stop();
  });

  it("is bounded: past maxEntries the oldest go first", async () => {
    const store = createMemoryStore({ maxEntries: 3 });
    for (const k of ["k1", "k2", "k3", "k4"]) await store.put(k, k, 60);
    expect(await store.get("k1")).toBeNull();
    expect(await store.get("k4")).toBe("k4");
    expect(await store.get("k2")).toBe("k2");
  });
});
