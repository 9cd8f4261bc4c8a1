/**
 * The HTTP edge: `/api/v1` aliases only (mappingPolicy restrict), JSON bodies only, CORS for FRONTEND_URL,
 * authentication into a small principal, errors as `{"detail"}`, a request id on every answer, health.
 */
import { ANY_USER, SYSTEM_ONLY } from "../../lib/access.rules";
import { PUBLIC } from "../../platform/access-gate";
import { randomUUID } from "node:crypto";
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { CallingOptions, Context, Service, ServiceBroker, ServiceSchema } from "moleculer";
import ApiGateway, { type ApiSettingsSchema } from "moleculer-web";
import Redis from "ioredis";
import { platformOf } from "../../platform/platform";
import { unauthorized, unsupportedMediaType, badRequest, forbidden, serviceUnavailable } from "../../platform/errors";
import type { Principal, RequestMeta } from "../../lib/principal";
import { STATUS_CHANGED_EVENT } from "../lab-instances/lab-instances.contract";
import { checkCsrf, cookiePolicy, readAuthCookies, trustedOrigins } from "../../lib/web-session.rules";
import { toHttpAnswer } from "./http-errors";
import { trackHttpRequests, type HttpDrain } from "./http-drain";
import { buildOpenApi, docsPage, type RouteDescription } from "./openapi";
import { PrometheusText } from "../../platform/prometheus-text";
import { LabInstanceStreams, withEventStreamCallOptions, type StatusChange } from "./sse";
import { createRateLimiter, type RateLimiter } from "./rate-limit";
import { bodyParserErrors, verifyJsonShape } from "./body";
import { allowedMethods, resolvedMethod, routedPath, type RoutedAlias } from "./http-methods";
import { redactUrl } from "./log-redaction";
import { simulatedLabHandler } from "./simulated-lab-page";
import { SIMULATED_LAB_PATH } from "../tasks/tasks.contract";

interface GatewayRequest extends IncomingMessage {
  $ctx?: Context<unknown, RequestMeta>;
  $alias?: { path?: string; fullPath?: string; action?: string };
  body?: unknown;
}

/** "ok", "embedded", or what is wrong. */
type Check = string;

interface HealthReport {
  status: "healthy" | "unhealthy";
  checks: { database: Check; redis: Check; rabbitmq: Check };
  version: string;
}

type GatewayMethods = {
  refreshAliases(): void;
  httpHandler(req: IncomingMessage, res: ServerResponse, next?: unknown): unknown;
  resolveAlias(url: string, method?: string): unknown;
  logRequest(req: IncomingMessage): void;
  logResponse(req: IncomingMessage, res: ServerResponse, data: unknown): void;
  authenticate(ctx: Context<unknown, RequestMeta>, route: unknown, req: IncomingMessage): Promise<Principal | null>;
  checkDatabase(): Promise<Check>;
  checkRedis(): Promise<Check>;
  checkRabbit(): Check;
  authorize(
    ctx: Context<unknown, RequestMeta>,
    route: unknown,
    req: GatewayRequest,
    res: ServerResponse,
  ): Promise<void>;
  drainHttp(timeoutMs: number): Promise<void>;
};
type GatewayVars = {
  redis: Redis | null;
  rateLimiter: RateLimiter;
  /** The lab-instance event streams open on this node. */
  streams: LabInstanceStreams;
  server: Server;
  httpDrain: HttpDrain;
};

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,100}$/;
const BODY_METHODS = new Set(["POST", "PUT", "PATCH", "DELETE"]);
/** The browser-login actions: they get the auth cookies in ctx.meta and are not authenticated by them. */
const LOGIN_ACTIONS = new Set(["auth.login", "auth.callback", "auth.logout"]);

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([
    p,
    new Promise<T>((_, reject) =>
      setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms).unref(),
    ),
  ]);
}

/** A client's X-Request-Id is kept only if it is a plain token (it lands in our logs). */
function assignRequestId(options: { requestID?: string }, req: IncomingMessage): void {
  const given = req.headers["x-request-id"];
  options.requestID = typeof given === "string" && REQUEST_ID.test(given) ? given : randomUUID();
}

function pathParamsOf(req: GatewayRequest): string[] {
  const path = req.$alias?.path ?? "";
  return [...path.matchAll(/:([A-Za-z_]+)/g)].map((m) => m[1]);
}

function hasBody(req: IncomingMessage): boolean {
  const len = req.headers["content-length"];
  return (len !== undefined && len !== "0") || req.headers["transfer-encoding"] !== undefined;
}

/** moleculer-web's own methods, called by the overrides below. */
const baseMethods = ApiGateway.methods as {
  httpHandler(this: unknown, req: IncomingMessage, res: ServerResponse, next?: unknown): unknown;
  resolveAlias(this: unknown, url: string, method?: string): unknown;
  regenerateAutoAliases(this: unknown, route: unknown): void;
  send404(this: unknown, req: IncomingMessage, res: ServerResponse): void;
  logRequest(this: unknown, req: IncomingMessage): void;
  logResponse(this: unknown, req: IncomingMessage, res: ServerResponse, data: unknown): void;
};

/** moleculer-web's own state on the gateway service, which its typings leave out. */
interface WebInternals {
  aliases: (RoutedAlias & { fullPath: string; action?: string | null })[];
  routes: { opts: { autoAliases?: boolean } }[];
  regenerateAutoAliases(route: unknown): void;
  sendError(req: IncomingMessage, res: ServerResponse, err: Error): void;
  /** A debounced function (lodash): present once moleculer-web started. */
  regenerateAllAutoAliases?: { cancel?: () => void };
}
const webInternals = (gateway: object): WebInternals => gateway as unknown as WebInternals;

/** `req` as the request log sees it: its URL without secrets (see log-redaction.ts). */
function loggableRequest(req: IncomingMessage): IncomingMessage {
  const r = req as IncomingMessage & { originalUrl?: string };
  return Object.create(r, { originalUrl: { value: redactUrl(r.originalUrl ?? r.url ?? "") } }) as IncomingMessage;
}

/**
 * The challenge of a 401 (RFC 6750 §3): bare when no credential came, invalid_token when one came and was
 * unusable (malformed, foreign scheme, bad signature, expired: the client's fix is the same, a new token).
 */
function bearerChallenge(req: IncomingMessage): string {
  return req.headers.authorization === undefined ? "Bearer" : 'Bearer error="invalid_token"';
}

/** An answer without an action: 204 (OPTIONS) or 405, with `Allow` and a request id. */
function answerAllow(req: IncomingMessage, res: ServerResponse, status: 204 | 405, allow: string): void {
  const options: { requestID?: string } = {};
  assignRequestId(options, req);
  res.setHeader("X-Request-Id", options.requestID ?? randomUUID());
  res.setHeader("Allow", allow);
  if (status === 204) {
    res.writeHead(204);
    res.end();
    return;
  }
  res.setHeader("Content-Type", "application/json; charset=utf-8");
  res.writeHead(405);
  res.end(JSON.stringify({ detail: "Method not allowed" }));
}

function createGateway(broker: Service["broker"]): ServiceSchema<ApiSettingsSchema, GatewayMethods, GatewayVars> {
  const { config } = platformOf(broker);
  const sessionCookies = cookiePolicy(config.publicUrl);
  const csrfOrigins = trustedOrigins(config.frontendUrl, config.publicUrl);
  const streams = new LabInstanceStreams();
  // moleculer-web logs each request and answer at `logRequest`/`logResponse` (debug, below): under info the lines
  // are dropped, but only after the redacted copy of the request was built. Skip it all then (~5 % of a read's CPU).
  const requestLogOn = config.logLevel === "debug" || config.logLevel === "trace";
  // First path segment under /api/v1 → the service whose aliases it held. A service whose node is away (RabbitMQ
  // restarting, a node dead past the offline timeout) takes its aliases with it, and they come back only at the
  // next (debounced) regeneration: until then its paths answer 503, not 404.
  const routedServices = new Map<string, string>();
  const segmentOf = (path: string) => /^\/api\/v1\/([^/?#]+)/.exec(path)?.[1];
  return {
    name: "api-gateway",
    mixins: [ApiGateway],

    settings: {
      port: config.port,
      ip: "0.0.0.0",
      // moleculer-web also accepts a function here (its typings say only an object).
      rootCallOptions: withEventStreamCallOptions(assignRequestId) as unknown as CallingOptions,
      cors: {
        origin: [config.frontendUrl, config.publicUrl],
        methods: ["GET", "POST", "PUT", "DELETE", "OPTIONS"],
        allowedHeaders: ["Content-Type", "Authorization", "X-Request-Id", "Last-Event-ID"],
        exposedHeaders: ["X-Request-Id", "RateLimit-Limit", "RateLimit-Remaining", "RateLimit-Reset", "Retry-After"],
        credentials: true,
        maxAge: 600,
      },
      routes: [
        {
          name: "api-v1",
          path: "/api/v1",
          autoAliases: true,
          mappingPolicy: "restrict",
          authentication: true,
          // Runs after authentication: the rate limits (authorize below), per user where one is known.
          authorization: true,
          aliases: {
            "GET /health": "api-gateway.health",
            "GET /openapi.json": "api-gateway.openapi",
            "GET /lab-instances/:id/events": streams.handler,
            // Fewer params than /lab-instances/:id: moleculer-web tries it first (optimizeOrder).
            "GET /lab-instances/events": streams.userHandler,
          },
          // Bodies may be gzip/deflate/br (inflate: body-parser's default): `limit` bounds the inflated size.
          bodyParsers: {
            json: { strict: true, limit: config.bodyLimitBytes, verify: verifyJsonShape },
            urlencoded: false,
          },
          use: [bodyParserErrors],
          callOptions: { timeout: 30_000 },
          logging: true,
          onBeforeCall(ctx: Context<unknown, RequestMeta>, _route: unknown, req: GatewayRequest) {
            if (BODY_METHODS.has(req.method ?? "") && hasBody(req)) {
              const type = (req.headers["content-type"] ?? "").split(";")[0].trim().toLowerCase();
              if (type !== "application/json") throw unsupportedMediaType();
              if (
                req.body !== undefined &&
                (typeof req.body !== "object" || Array.isArray(req.body) || req.body === null)
              ) {
                throw badRequest("Request body must be a JSON object");
              }
            }
            ctx.meta.requestId = ctx.requestID ?? undefined;
          },
        },
        {
          // Outside the API: Prometheus scrape and the docs page. Nothing else is reachable here.
          name: "ops",
          path: "/",
          mappingPolicy: "restrict",
          authentication: false,
          bodyParsers: false,
          aliases: {
            "GET metrics"(this: Service, _req: IncomingMessage, res: ServerResponse) {
              // `reporter` is unset when no reporter is configured (moleculer's typing says always).
              const reporters = this.broker.metrics.reporter as unknown[] | undefined;
              const reporter = reporters?.find((r): r is PrometheusText => r instanceof PrometheusText);
              res.setHeader("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
              res.end(reporter ? reporter.text() : "");
            },
            "GET api/docs"(_req: IncomingMessage, res: ServerResponse) {
              res.setHeader("Content-Type", "text/html; charset=utf-8");
              res.setHeader(
                "Content-Security-Policy",
                "default-src 'self'; script-src 'unsafe-inline' 'self'; style-src 'unsafe-inline'",
              );
              res.end(docsPage("/api/v1/openapi.json"));
            },
            // The simulated runner's connection URLs (embedded mode only: a real worker's point at real pods).
            ...(config.celeryBrokerUrl === undefined
              ? { [`GET ${SIMULATED_LAB_PATH.slice(1)}/:id/:task`]: simulatedLabHandler(broker) }
              : {}),
          },
        },
      ],
      onError(this: Service, request: IncomingMessage, res: ServerResponse, err: Error) {
        const req = request as GatewayRequest;
        const answer = toHttpAnswer(err, { method: req.method ?? "GET", pathParams: pathParamsOf(req) });
        const requestId = req.$ctx?.requestID ?? "-";
        if (answer.serverFault) {
          const url = redactUrl(req.url ?? "");
          const line = `[${requestId}] ${req.method} ${url} → ${answer.status}:`;
          this.logger.error(line, err.name, err.message, err.stack ?? "");
        }
        if (!res.headersSent) {
          res.setHeader("Content-Type", "application/json; charset=utf-8");
          if (requestId !== "-") res.setHeader("X-Request-Id", requestId);
          if (answer.status === 401) res.setHeader("WWW-Authenticate", bearerChallenge(req));
          if (answer.retryAfterS !== undefined) res.setHeader("Retry-After", String(answer.retryAfterS));
          res.writeHead(answer.status);
        }
        res.end(JSON.stringify(answer.body));
      },
      log4XXResponses: false,
      // The access log is at debug level (moleculer-web: info, three lines per request: request, action, response).
      // At info it wrote those lines synchronously on every request of a production node (LOGLEVEL=info); server
      // faults are logged by onError, with the request id, at any level.
      logRequest: "debug",
      logResponse: "debug",
      logRequestParams: null,
      logResponseData: null,
    },

    actions: {
      // moleculer-web's own actions: `rest` serves every HTTP request (each routed action checks its own
      // rule); route changes over the bus are switched off; the alias list is for operators (system), through
      // the broker only: `rest: null` drops moleculer-web's own "GET /list-aliases", which autoAliases would
      // otherwise publish as /api/v1/api-gateway/list-aliases (a route outside the API).
      rest: { access: PUBLIC },
      listAliases: { rest: null, access: { roles: SYSTEM_ONLY } },
      addRoute: false,
      removeRoute: false,
      openapi: {
        access: PUBLIC,
        handler() {
          const { aliases } = webInternals(this);
          const actions = new Map(
            (
              this.broker.registry.getActionList({ skipInternal: true }) as {
                name: string;
                action?: Record<string, unknown>;
              }[]
            ).map((a) => [a.name, a.action]),
          );
          const routes = aliases.map((a) => {
            const action = a.action ? actions.get(a.action) : undefined;
            return {
              method: a.method,
              path: a.fullPath,
              action: a.action ?? undefined, // null for a handler alias
              params: action?.params as Record<string, unknown> | undefined,
              access: (action?.access as RouteDescription["access"]) ?? (a.action ? undefined : { roles: ANY_USER }),
            };
          });
          return buildOpenApi(routes, { prefix: "/api/v1", version: config.version, serverUrl: config.publicUrl });
        },
      },
      health: {
        access: PUBLIC,
        async handler(ctx: Context<unknown, RequestMeta>): Promise<HealthReport> {
          const [database, redis] = await Promise.all([this.checkDatabase(), this.checkRedis()]);
          const checks = { database, redis, rabbitmq: this.checkRabbit() };
          const healthy = Object.values(checks).every((c) => c === "ok" || c === "embedded");
          if (!healthy) ctx.meta.$statusCode = 503;
          return { status: healthy ? "healthy" : "unhealthy", checks, version: config.version };
        },
      },
    },

    events: {
      // Local services are all registered now: route them at once instead of after moleculer-web's debounce,
      // so the node never answers 404 for a route it has.
      "$broker.started"() {
        this.refreshAliases();
      },
      // Feeds the SSE streams of lab instances open on this node (services/api-gateway/sse.ts).
      [STATUS_CHANGED_EVENT](ctx: Context<StatusChange>) {
        streams.publish(ctx.params);
      },
    },

    methods: {
      /** OPTIONS and HEAD before moleculer-web routes them (see http-methods.ts). */
      httpHandler(req: IncomingMessage, res: ServerResponse, next?: unknown) {
        const isPreflight = req.headers["access-control-request-method"] !== undefined;
        if ((req.method === "OPTIONS" && !isPreflight) || req.method === "HEAD") {
          const { aliases } = webInternals(this);
          const path = routedPath(req.url ?? "");
          const allow = allowedMethods(
            aliases,
            path,
            (a) => a.handler === streams.handler || a.handler === streams.userHandler,
          );
          if (allow !== null && req.method === "OPTIONS") {
            answerAllow(req, res, 204, allow);
            return;
          }
          const headless = allow !== null && !allow.includes("HEAD") && allow.includes("GET");
          if (headless) {
            answerAllow(req, res, 405, allow);
            return;
          }
        }
        return baseMethods.httpHandler.call(this, req, res, next);
      },
      resolveAlias(url: string, method: string = "GET") {
        return baseMethods.resolveAlias.call(this, url, resolvedMethod(method));
      },
      logRequest(req: IncomingMessage) {
        if (requestLogOn) baseMethods.logRequest.call(this, loggableRequest(req));
      },
      logResponse(req: IncomingMessage, res: ServerResponse, data: unknown) {
        if (requestLogOn) baseMethods.logResponse.call(this, loggableRequest(req), res, data);
      },
      regenerateAutoAliases(route: unknown) {
        baseMethods.regenerateAutoAliases.call(this, route);
        const { aliases } = webInternals(this);
        for (const alias of aliases) {
          const segment = segmentOf(alias.fullPath);
          const service = alias.action?.split(".")[0];
          if (segment && service) routedServices.set(segment, service);
        }
      },
      send404(req: IncomingMessage, res: ServerResponse) {
        // moleculer-web has cut the route's prefix off req.url by now; originalUrl keeps it.
        const url = (req as IncomingMessage & { originalUrl?: string }).originalUrl ?? req.url ?? "";
        const service = routedServices.get(segmentOf(url) ?? "");
        // No alias of that service right now: its node is away, or it is back and the aliases are not yet
        // regenerated (debounced). Either way the path exists; the service is what's missing.
        const web = webInternals(this);
        if (service !== undefined && !web.aliases.some((a) => a.action?.startsWith(`${service}.`))) {
          web.sendError(req, res, serviceUnavailable("Service temporarily unavailable, try again"));
          return;
        }
        baseMethods.send404.call(this, req, res);
      },
      refreshAliases() {
        const web = webInternals(this);
        for (const route of web.routes) if (route.opts.autoAliases) web.regenerateAutoAliases(route);
      },
      /**
       * Bearer JWT, else the session cookie → the small principal; neither → anonymous (the access rule then
       * answers 401). Bearer wins over a cookie and is never CSRF-checked (browsers do not attach it on their
       * own); a cookie-authenticated change must pass the CSRF check (403). A session store that is down
       * answers 503 (never anonymous).
       */
      async authenticate(
        ctx: Context<unknown, RequestMeta>,
        _route: unknown,
        req: IncomingMessage,
      ): Promise<Principal | null> {
        const header = req.headers.authorization;
        if (header !== undefined) {
          // The scheme name is case-insensitive (RFC 7235 §2.1): "bearer <JWT>" is the same credential.
          const match = /^Bearer ([A-Za-z0-9\-_]+\.[A-Za-z0-9\-_]+\.[A-Za-z0-9\-_]*)$/i.exec(header);
          if (!match) throw unauthorized("Malformed Authorization header: expected 'Bearer <JWT>'");
          try {
            return await ctx.call<Principal, { token: string }>("auth.authenticate", { token: match[1] });
          } catch (err) {
            // A token the auth service's params refuse (too short, too long) is an unusable credential like
            // any other: 401, never a 422 about an internal parameter.
            if ((err as { type?: unknown }).type === "VALIDATION_ERROR") throw unauthorized("Invalid token");
            throw err;
          }
        }
        const cookies = readAuthCookies(req.headers.cookie, sessionCookies);
        const action = (req as GatewayRequest).$alias?.action;
        const csrf = () => {
          const verdict = checkCsrf(
            {
              method: req.method ?? "GET",
              contentType: req.headers["content-type"],
              origin: req.headers.origin,
              secFetchSite: req.headers["sec-fetch-site"],
            },
            csrfOrigins,
          );
          if (!verdict.ok) throw forbidden(verdict.reason);
        };
        if (action !== undefined && LOGIN_ACTIONS.has(action)) {
          // Starting a login changes nothing of the user's (and a form post must work); logout does.
          if (action === "auth.logout" && cookies.session !== undefined) csrf();
          ctx.meta.authCookies = cookies;
          return null;
        }
        if (cookies.session === undefined) return null;
        csrf();
        return ctx.call<Principal | null, { sid: string }>("auth.resolveSession", { sid: cookies.session });
      },
      async checkDatabase(): Promise<Check> {
        try {
          await withTimeout(platformOf(this.broker).sequelize.query("SELECT 1"), 2000, "database");
          return "ok";
        } catch (err) {
          return `failed: ${(err as Error).message}`;
        }
      },
      async checkRedis(): Promise<Check> {
        if (!this.redis) return "embedded";
        try {
          await withTimeout(this.redis.ping(), 1000, "redis");
          return "ok";
        } catch (err) {
          return `failed: ${(err as Error).message}`;
        }
      },
      /** Not access rules (each action has its own): the rate limits, which need the authenticated user. */
      async authorize(ctx: Context<unknown, RequestMeta>, _route: unknown, req: GatewayRequest, res: ServerResponse) {
        await this.rateLimiter.check(req, res, ctx.meta.user, req.$alias?.action);
      },
      checkRabbit(): Check {
        const transit = this.broker.transit;
        if (!config.transporter || !transit) return "embedded";
        return transit.connected && !transit.disconnecting ? "ok" : "failed: transporter disconnected";
      },
      drainHttp(timeoutMs: number): Promise<void> {
        // Open event streams would hold the drain to its bound: end them first (clients reconnect elsewhere).
        streams.closeAll();
        return this.httpDrain.drain(timeoutMs);
      },
    },

    created() {
      this.streams = streams;
      // moleculer-web's own created() (a mixin: it ran first) made the server.
      this.httpDrain = trackHttpRequests(this.server);
      const url = config.redisUrl ?? config.cacher;
      this.redis = url
        ? new Redis(url, {
            lazyConnect: true,
            enableOfflineQueue: false,
            maxRetriesPerRequest: 1,
            connectTimeout: 1000,
          })
        : null;
      this.redis?.on("error", () => {
        /* reported by the health check */
      });
      this.rateLimiter = createRateLimiter(config, this.logger);
    },

    async started() {
      await Promise.all([this.redis?.connect().catch(() => undefined), this.rateLimiter.start()]);
    },

    stopped() {
      // Runs before moleculer-web closes the server, which would otherwise wait for the open streams.
      this.streams.closeAll();
      this.redis?.disconnect();
      this.rateLimiter.close();
      // moleculer-web regenerates aliases on a debounce timer it never cancels: a service change just before the
      // stop would regenerate (and log) after it.
      webInternals(this).regenerateAllAutoAliases?.cancel?.();
    },
  };
}

export default createGateway;

/**
 * SIGTERM of a node (start.ts), before its broker stops: its gateway, if it has one, stops taking connections
 * and answers the requests it has, within timeoutMs.
 */
export async function drainGateway(broker: ServiceBroker, timeoutMs: number): Promise<void> {
  const gateway = broker.getLocalService("api-gateway") as Partial<GatewayMethods> | undefined;
  await gateway?.drainHttp?.(timeoutMs);
}
