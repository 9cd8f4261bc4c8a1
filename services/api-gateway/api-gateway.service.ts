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
import { answerBytes } from "../../platform/answer-bytes";
import { unauthorized, unsupportedMediaType, badRequest, forbidden, serviceUnavailable } from "../../platform/errors";
import type { Principal, RequestMeta } from "../../lib/principal";
import { STATUS_CHANGED_EVENT } from "../lab-instances/lab-instances.contract";
import { checkCsrf, cookiePolicy, readAuthCookies, trustedOrigins } from "../../lib/web-session.rules";
import { toHttpAnswer } from "./http-errors";
import { trackHttpRequests, type HttpDrain } from "./http-drain";
import { buildOpenApi, type RouteDescription } from "./openapi";
import { docsAliases } from "./docs-page";
import { s, type Infer } from "../../lib/schema";
import type { ActionDocs } from "../../lib/api-docs";
import { ID_PARAM } from "../../lib/params";
import {
  addReadinessCheck,
  checkDatabase,
  checkTransporter,
  markStopping,
  probeHandlers,
  withTimeout,
} from "../../platform/ops-server";
import { newTraceId, parseTraceparent } from "../../platform/tracing";
import { systemPrincipal } from "../../lib/principal";
import { TASKS_ACTIONS, type TasksHealth } from "../tasks/tasks.contract";
import { answerObserver, type ObservedRequest } from "./answer-log";
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

const check = s.string({ description: '"ok", "embedded" (an in-process stand-in), or "failed: <why>"' });
const Health = s.object(
  {
    status: s.enum(["healthy", "unhealthy"]),
    checks: s.object({
      database: check,
      redis: check,
      /** The Celery broker the tasks go to. */
      rabbitmq: check,
      /** Moleculer's transporter. */
      transporter: check,
    }),
    version: s.string(),
  },
  { title: "Health" },
);
type HealthReport = Infer<typeof Health>;

/** A route served by the gateway itself (no action): what the document says about it. */
type GatewayRoute = Pick<RouteDescription, "params" | "access" | "docs">;

type GatewayMethods = {
  refreshAliases(): void;
  httpHandler(req: IncomingMessage, res: ServerResponse, next?: unknown): unknown;
  resolveAlias(url: string, method?: string): unknown;
  encodeResponse(req: IncomingMessage, res: ServerResponse, data: unknown): string | Buffer;
  logRequest(req: IncomingMessage): void;
  logResponse(req: IncomingMessage, res: ServerResponse, data: unknown): void;
  authenticate(ctx: Context<unknown, RequestMeta>, route: unknown, req: IncomingMessage): Promise<Principal | null>;
  checkDatabase(): Promise<Check>;
  checkRedis(): Promise<Check>;
  checkCelery(ctx: Context<unknown, RequestMeta>): Promise<Check>;
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

interface RootCallOptions {
  requestID?: string;
  parentSpan?: { id: string; traceID: string; sampled: boolean };
}

/**
 * The request id of a call. Tracing off: a client's X-Request-Id if it is a plain token (it lands in our logs),
 * else a UUID. Tracing on: the request id is the trace id (Moleculer's), so it comes from a valid W3C
 * `traceparent` (whose span becomes the parent of ours), else a fresh 128-bit one.
 */
function requestIdAssigner(tracing: boolean): (options: RootCallOptions, req: IncomingMessage) => void {
  if (!tracing) {
    return (options, req) => {
      const given = req.headers["x-request-id"];
      options.requestID = typeof given === "string" && REQUEST_ID.test(given) ? given : randomUUID();
    };
  }
  return (options, req) => {
    const parent = parseTraceparent(req.headers.traceparent);
    if (parent) options.parentSpan = { id: parent.parentId, traceID: parent.traceId, sampled: parent.sampled };
    options.requestID = parent?.traceId ?? newTraceId();
  };
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
function answerAllow(
  req: IncomingMessage,
  res: ServerResponse,
  status: 204 | 405,
  allow: string,
  assignRequestId: (options: RootCallOptions, req: IncomingMessage) => void,
): void {
  const options: RootCallOptions = {};
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
  const assignRequestId = requestIdAssigner(config.tracing.exporter !== "off");
  const probes = probeHandlers(broker);
  const gatewayRoutes = new Map<unknown, GatewayRoute>([
    [
      streams.handler,
      {
        params: { id: ID_PARAM },
        access: { roles: ANY_USER, entity: "Lab instance" },
        docs: {
          operationId: "labInstancesEvents",
          summary: "Stream a lab instance's status (server-sent events)",
          description:
            "Authorised like GET /lab-instances/{id}. Send `Last-Event-ID` when reconnecting: only newer news follows.",
          responses: {
            200: {
              description: "The stream: the current status first, then every change; it ends after a final status",
              eventStream:
                "Each event is `id: <rank>` (1 pending, 2 running, 3 stopping, 4 stopped|failed|expired), " +
                "`event: status` and `data: <LabInstance JSON>` (see the LabInstance schema). `: keep-alive` comments " +
                "come every 15 s; `retry: 3000` sets the reconnect delay.",
            },
            204: { description: "The client has already seen the final status (Last-Event-ID): stop reconnecting" },
          },
        },
      },
    ],
    [
      streams.userHandler,
      {
        params: {},
        access: { roles: ANY_USER },
        docs: {
          operationId: "labInstancesEventsAll",
          summary: "Stream the status of every lab instance the caller may see (server-sent events)",
          description:
            "Student: their own; teacher: their courses'; admin: all (the rule of GET /lab-instances/{id}). First the " +
            "caller's active instances (newest 100), then every change. Send `Last-Event-ID` when reconnecting: " +
            "every visible instance changed since then follows in its current status.",
          responses: {
            200: {
              description: "The stream; it stays open",
              eventStream:
                "Each event is `id: <instance id>.<rank>.<updated_at ms>` (rank: 1 pending, 2 running, 3 stopping, " +
                "4 stopped|failed|expired), `event: status` and `data: <LabInstance JSON>` (see the LabInstance " +
                "schema). `: keep-alive` comments come every 15 s; `retry: 3000` sets the reconnect delay.",
            },
          },
        },
      },
    ],
  ]);
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
          // Outside the API: the probes (as on the ops port) and the docs page. Metrics never go on this port.
          name: "ops",
          path: "/",
          mappingPolicy: "restrict",
          authentication: false,
          bodyParsers: false,
          aliases: {
            "GET livez": probes.livez,
            "GET readyz": probes.readyz,
            ...docsAliases("/api/v1/openapi.json"),
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
        // The answer's access line (answer-log.ts) logs a server fault with this error, once.
        if (answer.serverFault) (req as ObservedRequest).$fault = err;
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
        openapi: {
          summary: "This API's OpenAPI 3.1 document",
          description: "Built from the routed actions: their params, access rules and declared answers.",
          responses: { 200: { description: "The document", body: s.record(s.unknown()) } },
        },
        handler() {
          const { aliases } = webInternals(this);
          const actions = new Map(
            (
              this.broker.registry.getActionList({ skipInternal: true }) as {
                name: string;
                action?: {
                  params?: Record<string, unknown>;
                  access?: RouteDescription["access"];
                  openapi?: ActionDocs;
                };
              }[]
            ).map((a) => [a.name, a.action]),
          );
          const routes = aliases.map((a): RouteDescription => {
            const own = a.action ? undefined : gatewayRoutes.get(a.handler);
            if (own) return { method: a.method, path: a.fullPath, ...own };
            const action = a.action ? actions.get(a.action) : undefined;
            return {
              method: a.method,
              path: a.fullPath,
              action: a.action ?? undefined, // null for a handler alias
              params: action?.params,
              access: action?.access ?? (a.action ? undefined : { roles: ANY_USER }),
              docs: action?.openapi,
            };
          });
          return buildOpenApi(routes, {
            prefix: "/api/v1",
            version: config.version,
            sessionCookie: sessionCookies.sessionName,
          });
        },
      },
      health: {
        access: PUBLIC,
        openapi: {
          summary: "Is the platform up?",
          description: "Checks the database, Redis and the transporter from this gateway node.",
          responses: {
            200: { description: "Every part answers", body: Health },
            503: { description: "A part is down (the report says which)", body: Health },
          },
        },
        async handler(ctx: Context<unknown, RequestMeta>): Promise<HealthReport> {
          const [database, redis, rabbitmq] = await Promise.all([
            this.checkDatabase(),
            this.checkRedis(),
            this.checkCelery(ctx),
          ]);
          const checks = { database, redis, rabbitmq, transporter: checkTransporter(this.broker) };
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
            answerAllow(req, res, 204, allow, assignRequestId);
            return;
          }
          const headless = allow !== null && !allow.includes("HEAD") && allow.includes("GET");
          if (headless) {
            answerAllow(req, res, 405, allow, assignRequestId);
            return;
          }
        }
        return baseMethods.httpHandler.call(this, req, res, next);
      },
      /** JSON of an answer; bytes the routed action's cache holds for it go as they are (platform/answer-bytes.ts). */
      encodeResponse(req: IncomingMessage, _res: ServerResponse, data: unknown): string | Buffer {
        return answerBytes(data, (req as GatewayRequest).$alias?.action) ?? JSON.stringify(data);
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
          return await checkDatabase(this.broker);
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
      /** The Celery broker, as the tasks service's publisher sees it (wherever that service runs). */
      async checkCelery(ctx: Context<unknown, RequestMeta>): Promise<Check> {
        // No CELERY_BROKER_URL (the same on every node of a deployment): the simulated runner, no broker to check.
        if (!config.celeryBrokerUrl) return "embedded";
        let health: TasksHealth;
        try {
          health = await ctx.call<TasksHealth, Record<string, never>>(
            TASKS_ACTIONS.health,
            {},
            { meta: { user: systemPrincipal("health check") }, timeout: 2000 },
          );
        } catch (err) {
          return `failed: tasks service unavailable (${(err as Error).message})`;
        }
        if (health.broker === "connected") return "ok";
        if (health.broker === "simulated") return "embedded";
        return `failed: Celery broker ${health.broker}${health.broker_error ? `: ${health.broker_error}` : ""}`;
      },
      drainHttp(timeoutMs: number): Promise<void> {
        // Readiness fails first: the endpoints drop this node while it still answers.
        markStopping(this.broker);
        // Open event streams would hold the drain to its bound: end them first (clients reconnect elsewhere).
        streams.closeAll();
        return this.httpDrain.drain(timeoutMs);
      },
    },

    created() {
      this.streams = streams;
      // moleculer-web's own created() (a mixin: it ran first) made the server.
      this.httpDrain = trackHttpRequests(this.server, answerObserver(this.broker, this.logger));
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
      // Sessions live in Redis: without it, cookie requests answer 503 on this node.
      if (config.redisUrl) {
        addReadinessCheck(this.broker, "redis", async () => {
          const r = this.redis;
          if (!r) return "embedded";
          await withTimeout(r.ping(), 1000, "redis");
          return "ok";
        });
      }
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
