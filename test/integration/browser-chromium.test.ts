/**
 * A person logging in with a real browser on the embedded platform: `node dist/main/start.js`
 * with no external services at all (PGlite, the embedded IdP, in-memory sessions: no Redis), and a real
 * headless Chromium that opens /api/v1/auth/login, clicks a demo account on the IdP's login page, and
 * lands on /api/v1/auth/me showing its own user. Then, from that page, what a frontend does: a change
 * (fetch with JSON; the browser adds Origin itself) and logout.
 */
import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join, resolve } from "node:path";
import { startReadyChild, type ReadyChild } from "../../platform/child-process";
import { freePort } from "../support/browser";
import { Chromium, type Page } from "../support/chromium";

const ROOT = resolve(__dirname, "../..");
const START = resolve(ROOT, "dist/main/start.js");

let platform: ReadyChild | undefined;
let chromium: Chromium | undefined;
let page: Page;
let dataDir: string;
let BASE: string;

beforeAll(async () => {
  dataDir = mkdtempSync(join(tmpdir(), "autolabs-embedded-"));
  const [port, idpPort, pgPort] = [await freePort(), await freePort(), await freePort()];
  BASE = `http://localhost:${port}`;
  // Exactly the embedded defaults: nothing but ports and a data directory (no DATABASE_URL, REDIS_URL, OIDC_*).
  platform = await startReadyChild({
    name: "embedded platform",
    command: process.execPath,
    args: [START],
    env: {
      PATH: process.env.PATH ?? "",
      PORT: String(port),
      EMBEDDED_IDP_PORT: String(idpPort),
      EMBEDDED_PG_PORT: String(pgPort),
      DATA_DIR: dataDir,
      LOGLEVEL: "warn",
    },
    cwd: ROOT,
    ready: /platform ready in \d+ ms/,
    timeoutMs: 120_000,
  });
  chromium = await Chromium.launch();
  page = await chromium.newPage();
}, 180_000);

afterAll(async () => {
  await chromium?.close();
  await platform?.stop(10_000);
  rmSync(dataDir, { recursive: true, force: true });
}, 60_000);

it("logs in through the embedded IdP's page and sees its own user at /api/v1/auth/me", async () => {
  // 1. The backend's login sends the browser to the IdP, whose page lists the demo accounts.
  await page.goto(`${BASE}/api/v1/auth/login?redirect_to=${encodeURIComponent("/api/v1/auth/me")}`);
  const idpUrl = await page.waitFor(/\/interaction\/[^/]+$/);
  expect(new URL(idpUrl).port).not.toBe(new URL(BASE).port);
  const buttons = await page.evaluate<string[]>(
    "[...document.querySelectorAll('button')].map(b => b.textContent.trim())",
  );
  for (const account of ["admin", "teacher", "student", "student2"]) {
    expect(buttons.some((t) => t.startsWith(`Sign in as ${account} —`))).toBe(true);
  }

  // 2. A click, as a person would.
  const loaded = page.nextLoad();
  await page.evaluate<undefined>(
    "[...document.querySelectorAll('button')].find(b => b.textContent.trim().startsWith('Sign in as teacher —')).click()",
  );
  await loaded;

  // 3. IdP → callback → /api/v1/auth/me, which shows this very user.
  await page.waitFor(/\/api\/v1\/auth\/me$/, "document.body && document.body.innerText.trim().startsWith('{')");
  const me = JSON.parse(await page.evaluate<string>("document.body.innerText")) as Record<string, unknown>;
  expect(me).toMatchObject({ email: "teacher@autolabs.local", name: "Demo Teacher", role: "teacher" });
  expect(typeof me.id).toBe("number");
  expect(me.last_login_at).toBeTruthy();

  // 4. The session cookie as the browser stores it: HttpOnly (invisible to scripts), SameSite=Lax, not Secure on http.
  const { cookies } = await page.send<{
    cookies: { name: string; httpOnly: boolean; sameSite?: string; secure: boolean; path: string; expires: number }[];
  }>("Network.getCookies", { urls: [BASE] });
  const session = cookies.find((c) => c.name === "autolabs_session");
  expect(session).toMatchObject({ httpOnly: true, sameSite: "Lax", secure: false, path: "/" });
  expect(session!.expires * 1000 - Date.now()).toBeGreaterThan(3500_000);
  expect(await page.evaluate<string>("document.cookie")).not.toContain("autolabs_session");

  // 5. What a frontend on this origin does: a change with JSON (Chromium adds Origin itself), then logout.
  const created = await page.evaluate<{ status: number; body: { name: string; owner_id: number } }>(`
    fetch("/api/v1/courses", { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify({ name: "Made in Chromium" }) })
      .then(async (r) => ({ status: r.status, body: await r.json() }))`);
  expect(created).toMatchObject({ status: 201, body: { name: "Made in Chromium", owner_id: me.id } });
  // The same change as a plain form post would send it: refused (CSRF rule), nothing created.
  const form = await page.evaluate<number>(`
    fetch("/api/v1/courses", { method: "POST", headers: { "Content-Type": "application/x-www-form-urlencoded" } }).then((r) => r.status)`);
  expect(form).toBe(403);
  const out = await page.evaluate<number>(
    `fetch("/api/v1/auth/logout", { method: "POST", headers: { "Content-Type": "application/json" } }).then((r) => r.status)`,
  );
  expect(out).toBe(204);
  expect(await page.evaluate<number>(`fetch("/api/v1/auth/me").then((r) => r.status)`)).toBe(401);
});
