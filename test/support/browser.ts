/**
 * A headless "browser" for the login tests, over real HTTP: one cookie jar per host (as browsers keep
 * cookies, whatever the port), redirects followed one hop at a time (each hop recorded), the embedded
 * IdP's login form posted like a person would, and API calls sent the way a frontend sends them
 * (credentials included, Origin = FRONTEND_URL, JSON).
 *
 * `proxy` maps public origins to where the servers really listen, like a TLS-terminating reverse proxy in
 * front of the platform: PUBLIC_URL can then be https://… while the gateway listens on plain http.
 */
import { CookieJar } from "../../dev/oidc-code-flow";
export { freePort } from "./net";

export interface Hop {
  method: string;
  url: string;
  status: number;
  location?: string;
  setCookies: string[];
}

export interface BrowserResponse {
  url: string;
  status: number;
  headers: Headers;
  text: string;
  json<T = unknown>(): T;
}

export interface LoginResult {
  /** Where the backend sent the browser after the callback (FRONTEND_URL or redirect_to). */
  landedAt: string;
  hops: Hop[];
  /** The callback's Set-Cookie values. */
  callbackCookies: string[];
}

export class TestBrowser {
  private readonly jars = new Map<string, CookieJar>();
  readonly hops: Hop[] = [];

  constructor(private readonly opts: { proxy?: Record<string, string>; frontendUrl: string }) {}

  private jar(url: URL): CookieJar {
    let jar = this.jars.get(url.hostname);
    if (!jar) {
      jar = new CookieJar();
      this.jars.set(url.hostname, jar);
    }
    return jar;
  }

  private wire(url: URL): URL {
    const to = this.opts.proxy?.[url.origin];
    return to ? new URL(url.pathname + url.search, to) : url;
  }

  /** The Cookie header this browser would send to `url`. */
  cookieHeader(url: string): string | undefined {
    return this.jar(new URL(url)).header(new URL(url));
  }

  cookie(url: string, name: string): string | undefined {
    const header = this.cookieHeader(url) ?? "";
    for (const part of header.split("; ")) {
      const eq = part.indexOf("=");
      if (part.slice(0, eq) === name) return part.slice(eq + 1);
    }
    return undefined;
  }

  /** Sets a cookie as if the server at `url` had (tests tamper with cookies this way). */
  setCookie(url: string, setCookie: string): void {
    this.jar(new URL(url)).store([setCookie], new URL(url));
  }

  /** One request, no redirect following. */
  async request(
    method: string,
    url: string,
    init: { headers?: Record<string, string>; body?: string } = {},
  ): Promise<BrowserResponse> {
    const target = new URL(url);
    const headers: Record<string, string> = { ...init.headers };
    const cookie = this.jar(target).header(target);
    if (cookie !== undefined) headers.cookie = cookie;
    const res = await fetch(this.wire(target), {
      method,
      headers,
      body: init.body,
      redirect: "manual",
      signal: AbortSignal.timeout(15_000),
    });
    const setCookies = res.headers.getSetCookie();
    this.jar(target).store(setCookies, target);
    const location = res.headers.get("location") ?? undefined;
    this.hops.push({ method, url, status: res.status, location, setCookies });
    const text = await res.text();
    return {
      url,
      status: res.status,
      headers: res.headers,
      text,
      json: <T>() => JSON.parse(text) as T,
    };
  }

  /**
   * Navigates like a browser: follows redirects (a 303 or a 302 after POST becomes a GET) until an answer
   * that is not a redirect, or until the next URL satisfies `stopBefore` (then that URL is returned unvisited).
   */
  async navigate(
    url: string,
    opts: {
      method?: string;
      body?: string;
      headers?: Record<string, string>;
      stopBefore?: (next: URL) => boolean;
    } = {},
  ): Promise<{ response?: BrowserResponse; stoppedAt?: string; hops: Hop[] }> {
    const first = this.hops.length;
    let method = opts.method ?? "GET";
    let body = opts.body;
    let headers = opts.headers;
    let current = url;
    for (let i = 0; i < 20; i++) {
      const res = await this.request(method, current, { headers, body });
      if (res.status < 300 || res.status >= 400 || !res.headers.get("location")) {
        return { response: res, hops: this.hops.slice(first) };
      }
      const next = new URL(res.headers.get("location")!, current);
      if (opts.stopBefore?.(next)) return { stoppedAt: next.href, hops: this.hops.slice(first) };
      current = next.href;
      method = "GET";
      body = undefined;
      headers = undefined;
    }
    throw new Error(`too many redirects from ${url}`);
  }

  /**
   * The whole browser login: GET `loginUrl` (the backend's /auth/login) → IdP → its login form, posted for
   * `account` → consent (automatic) → the backend's callback → the final redirect, which is not followed
   * (nothing serves FRONTEND_URL in tests). Throws with the hops when a step answers unexpectedly.
   */
  async login(loginUrl: string, account: string, password = account): Promise<LoginResult> {
    const first = this.hops.length;
    const front = new URL(this.opts.frontendUrl).origin;
    const toFront = (u: URL) => u.origin === front;
    const started = await this.navigate(loginUrl, { stopBefore: toFront });
    if (started.stoppedAt !== undefined) {
      // Still signed in at the IdP (its own session): no form, straight back (single sign-on).
      const hops = this.hops.slice(first);
      const callback = [...hops].reverse().find((h) => new URL(h.url).pathname.endsWith("/api/v1/auth/callback"));
      return { landedAt: started.stoppedAt, hops, callbackCookies: callback?.setCookies ?? [] };
    }
    const page = started.response;
    if (!page || page.status !== 200 || !/\/interaction\/[^/]+$/.test(new URL(page.url).pathname)) {
      throw new Error(
        `expected the IdP login page, got ${page?.status} at ${page?.url}: ${page?.text.slice(0, 300)}\n${this.describe(first)}`,
      );
    }
    // Post the form the page itself carries (the one with the typed account).
    const action = /<form id="login" method="post" action="([^"]+)"/.exec(page.text)?.[1];
    if (!action) throw new Error(`no login form on the IdP page:\n${page.text.slice(0, 500)}`);
    const done = await this.navigate(new URL(action.replace(/&amp;/g, "&"), page.url).href, {
      method: "POST",
      body: new URLSearchParams({ login: account, password }).toString(),
      headers: { "content-type": "application/x-www-form-urlencoded" },
      stopBefore: toFront,
    });
    const hops = this.hops.slice(first);
    const callback = [...hops].reverse().find((h) => new URL(h.url).pathname.endsWith("/api/v1/auth/callback"));
    if (done.stoppedAt === undefined) {
      throw new Error(
        `login did not end on the frontend: ${done.response?.status} ${done.response?.text.slice(0, 300)}\n${this.describe(first)}`,
      );
    }
    return { landedAt: done.stoppedAt, hops, callbackCookies: callback?.setCookies ?? [] };
  }

  /**
   * Runs the login up to the IdP's redirect to the callback and returns that callback URL unvisited
   * (tests then replay, tamper with or drop parts of it).
   */
  async loginUntilCallback(loginUrl: string, account: string): Promise<string> {
    const first = this.hops.length;
    const isCallback = (u: URL) => u.pathname.endsWith("/api/v1/auth/callback");
    const started = await this.navigate(loginUrl, { stopBefore: isCallback });
    if (started.stoppedAt) return started.stoppedAt;
    const page = started.response!;
    const action = /<form id="login" method="post" action="([^"]+)"/.exec(page.text)?.[1];
    if (!action)
      throw new Error(`expected the IdP login page, got ${page.status} at ${page.url}\n${this.describe(first)}`);
    const done = await this.navigate(new URL(action.replace(/&amp;/g, "&"), page.url).href, {
      method: "POST",
      body: new URLSearchParams({ login: account, password: account }).toString(),
      headers: { "content-type": "application/x-www-form-urlencoded" },
      stopBefore: isCallback,
    });
    if (!done.stoppedAt)
      throw new Error(`the IdP did not redirect to the callback: ${done.response?.status}\n${this.describe(first)}`);
    return done.stoppedAt;
  }

  /** An API call as the frontend makes it: cookies, Origin = FRONTEND_URL, JSON. */
  async api(
    method: string,
    url: string,
    body?: unknown,
    headers: Record<string, string> = {},
  ): Promise<BrowserResponse> {
    const h: Record<string, string> = {
      origin: new URL(this.opts.frontendUrl).origin,
      accept: "application/json",
      ...headers,
    };
    if (method !== "GET" && method !== "HEAD" && !("content-type" in h)) h["content-type"] = "application/json";
    return this.request(method, url, { headers: h, body: body === undefined ? undefined : JSON.stringify(body) });
  }

  describe(fromHop = 0): string {
    return this.hops
      .slice(fromHop)
      .map((h) => `  ${h.method} ${h.url} → ${h.status}${h.location ? ` → ${h.location}` : ""}`)
      .join("\n");
  }
}

/** Pulls one attribute-less cookie value out of Set-Cookie values. */
export function setCookieNamed(setCookies: readonly string[], name: string): string | undefined {
  return setCookies.find((c) => c.startsWith(`${name}=`));
}

/** A TCP port free right now (bound by the caller soon after; tests only). */
