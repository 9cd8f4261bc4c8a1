/**
 * A real headless Chromium (Debian's `chromium`, CHROMIUM_PATH to override) driven through the Chrome
 * DevTools Protocol over `--remote-debugging-pipe`: CDP messages are NUL-terminated JSON on file
 * descriptors 3 (to the browser) and 4 (from it). No debugging port, no WebSocket client needed (Node 20
 * has none built in), nothing but node:child_process.
 */
import { spawn, type ChildProcess } from "node:child_process";
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";
import type { Readable, Writable } from "node:stream";

export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? "/usr/bin/chromium";

type Pending = { resolve(v: unknown): void; reject(e: Error): void; method: string };
type Listener = (params: Record<string, unknown>, sessionId?: string) => void;

export class Chromium {
  private nextId = 1;
  private readonly pending = new Map<number, Pending>();
  private readonly listeners = new Map<string, Set<Listener>>();
  private buffer = "";
  private output = "";

  private constructor(
    private readonly child: ChildProcess,
    private readonly profileDir: string,
  ) {
    const from = child.stdio[4] as Readable;
    from.on("data", (chunk: Buffer) => {
      this.buffer += chunk.toString("utf8");
      let end: number;
      while ((end = this.buffer.indexOf("\0")) >= 0) {
        const raw = this.buffer.slice(0, end);
        this.buffer = this.buffer.slice(end + 1);
        this.dispatch(
          JSON.parse(raw) as {
            id?: number;
            result?: unknown;
            error?: { message: string };
            method?: string;
            params?: Record<string, unknown>;
            sessionId?: string;
          },
        );
      }
    });
    const keep = (d: Buffer) => {
      this.output = (this.output + d.toString()).slice(-20_000);
    };
    child.stdout?.on("data", keep);
    child.stderr?.on("data", keep);
    child.once("exit", () => {
      for (const p of this.pending.values()) p.reject(new Error(`chromium exited during ${p.method}\n${this.output}`));
      this.pending.clear();
    });
  }

  static async launch(): Promise<Chromium> {
    if (!existsSync(CHROMIUM_PATH)) {
      throw new Error(`${CHROMIUM_PATH} not found: install the Debian package "chromium" (or set CHROMIUM_PATH)`);
    }
    const profileDir = mkdtempSync(join(tmpdir(), "autolabs-chromium-"));
    const child = spawn(
      CHROMIUM_PATH,
      [
        "--headless",
        "--no-sandbox",
        "--disable-gpu",
        "--disable-quic",
        "--no-first-run",
        "--disable-background-networking",
        "--disable-component-update",
        "--disable-sync",
        "--no-proxy-server",
        `--user-data-dir=${profileDir}`,
        "--remote-debugging-pipe",
        "about:blank",
      ],
      // Its own process group, so the whole browser (it forks helpers) is stopped by our child's id.
      { stdio: ["ignore", "pipe", "pipe", "pipe", "pipe"], detached: true, env: { ...process.env, HOME: profileDir } },
    );
    const browser = new Chromium(child, profileDir);
    await browser.send("Browser.getVersion");
    return browser;
  }

  private dispatch(msg: {
    id?: number;
    result?: unknown;
    error?: { message: string };
    method?: string;
    params?: Record<string, unknown>;
    sessionId?: string;
  }): void {
    if (msg.id !== undefined) {
      const p = this.pending.get(msg.id);
      if (!p) return;
      this.pending.delete(msg.id);
      if (msg.error) p.reject(new Error(`${p.method}: ${msg.error.message}`));
      else p.resolve(msg.result);
      return;
    }
    if (msg.method) for (const l of this.listeners.get(msg.method) ?? []) l(msg.params ?? {}, msg.sessionId);
  }

  send<T = Record<string, unknown>>(
    method: string,
    params: Record<string, unknown> = {},
    sessionId?: string,
    timeoutMs = 15_000,
  ): Promise<T> {
    const id = this.nextId++;
    const to = this.child.stdio[3] as Writable;
    return new Promise<T>((resolve, reject) => {
      const timer = setTimeout(() => {
        this.pending.delete(id);
        reject(new Error(`CDP ${method} timed out\n${this.output.slice(-2000)}`));
      }, timeoutMs);
      this.pending.set(id, {
        method,
        resolve: (v) => {
          clearTimeout(timer);
          resolve(v as T);
        },
        reject: (e) => {
          clearTimeout(timer);
          reject(e);
        },
      });
      to.write(`${JSON.stringify({ id, method, params, ...(sessionId ? { sessionId } : {}) })}\0`);
    });
  }

  on(method: string, listener: Listener): () => void {
    let set = this.listeners.get(method);
    if (!set) this.listeners.set(method, (set = new Set()));
    set.add(listener);
    return () => set.delete(listener);
  }

  /** A new tab, attached (flat session). */
  async newPage(): Promise<Page> {
    const { targetId } = await this.send<{ targetId: string }>("Target.createTarget", { url: "about:blank" });
    const { sessionId } = await this.send<{ sessionId: string }>("Target.attachToTarget", { targetId, flatten: true });
    const page = new Page(this, sessionId);
    await page.send("Page.enable");
    await page.send("Runtime.enable");
    await page.send("Network.enable");
    return page;
  }

  async close(): Promise<void> {
    await this.send("Browser.close", {}, undefined, 5000).catch(() => undefined);
    const exited = new Promise((r) => (this.child.exitCode !== null ? r(undefined) : this.child.once("exit", r)));
    const killer = setTimeout(() => {
      try {
        process.kill(-this.child.pid!, "SIGKILL");
      } catch {
        /* already gone */
      }
    }, 3000);
    await exited;
    clearTimeout(killer);
    rmSync(this.profileDir, { recursive: true, force: true });
  }
}

export class Page {
  constructor(
    readonly browser: Chromium,
    readonly sessionId: string,
  ) {}

  send<T = Record<string, unknown>>(method: string, params: Record<string, unknown> = {}): Promise<T> {
    return this.browser.send<T>(method, params, this.sessionId);
  }

  /** Navigates and waits for the load event of the page it ends on (after any redirects). */
  async goto(url: string): Promise<void> {
    const loaded = this.nextLoad();
    const res = await this.send<{ errorText?: string }>("Page.navigate", { url });
    if (res.errorText) throw new Error(`navigation to ${url} failed: ${res.errorText}`);
    await loaded;
  }

  nextLoad(timeoutMs = 20_000): Promise<void> {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        off();
        reject(new Error("page did not finish loading"));
      }, timeoutMs);
      const off = this.browser.on("Page.loadEventFired", (_p, sid) => {
        if (sid !== this.sessionId) return;
        clearTimeout(timer);
        off();
        resolve();
      });
    });
  }

  /** Evaluates an expression in the page (awaiting promises) and returns its JSON value. */
  async evaluate<T>(expression: string): Promise<T> {
    const res = await this.send<{
      result: { value?: T };
      exceptionDetails?: { text: string; exception?: { description?: string } };
    }>("Runtime.evaluate", { expression, awaitPromise: true, returnByValue: true });
    if (res.exceptionDetails)
      throw new Error(`page threw: ${res.exceptionDetails.exception?.description ?? res.exceptionDetails.text}`);
    return res.result.value as T;
  }

  /** Polls until the page is at a URL matching `re` and `ready` (an expression) is truthy. */
  async waitFor(re: RegExp, ready = "document.readyState === 'complete'", timeoutMs = 20_000): Promise<string> {
    const until = Date.now() + timeoutMs;
    let href = "";
    while (Date.now() < until) {
      href = await this.evaluate<string>("location.href").catch(() => "");
      if (re.test(href) && (await this.evaluate<boolean>(ready).catch(() => false))) return href;
      await new Promise((r) => setTimeout(r, 100));
    }
    throw new Error(`page stayed at ${href}, never reached ${re}`);
  }
}
