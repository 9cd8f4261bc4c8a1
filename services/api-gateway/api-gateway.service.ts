/**
 * The HTTP edge: `/api/v1` aliases only (mappingPolicy restrict), JSON bodies only, CORS for FRONTEND_URL,
 * authentication into a small principal, errors as `{"detail"}`, a request id on every answer, health.
 */
import { randomUUID } from "node:crypto";
import type { IncomingMessage, Server, ServerResponse } from "node:http";
import type { CallingOptions, Context, Service, ServiceBroker, ServiceSchema } from "moleculer";
import ApiGateway, { type ApiSettingsSchema } from "moleculer-web";
import Redis from "ioredis";
import { AccessMixin } from "../../mixins/access.mixin";
import { platformOf } from "../runtime/platform";
import { unauthorized, unsupportedMediaType, badRequest, forbidden } from "../shared/errors";
import type { Principal, RequestMeta } from "../shared/principal";
import { checkCsrf, cookiePolicy, readAuthCookies, trustedOrigins } from "../auth/web-session.rules";
import { toHttpAnswer } from "./http-errors";
import { trackHttpRequests, type HttpDrain } from "./http-drain";
import { buildOpenApi, docsPage, type RouteDescription } from "./openapi";
import { PrometheusText } from "../runtime/prometheus-text";
import { LabInstanceStreams, withEventStreamCallOptions, type StreamedInstance } from "./sse";

interface GatewayRequest extends IncomingMessage {
  $ctx?: Context<unknown, RequestMeta>;
  $alias?: { path?: string; fullPath?: string; action?: string };
  body?: unknown;
}

type Check = "ok" | "embedded" | string;

interface HealthReport {
  status: "healthy" | "unhealthy";
  checks: { database: Check; redis: Check; rabbitmq: Check };
  version: string;
}

type GatewayMethods = {
  refreshAliases(): void;
  authenticate(ctx: Context<unknown, RequestMeta>, route: unknown, req: IncomingMessage): Promise<Principal | null>;
  checkDatabase(): Promise<Check>;
  checkRedis(): Promise<Check>;
  checkRabbit(): Check;
  drainHttp(timeoutMs: number): Promise<void>;
};
type GatewayVars = { redis: Redis | null; server: Server; httpDrain: HttpDrain };

const REQUEST_ID = /^[A-Za-z0-9._:-]{1,100}$/;
const BODY_METHODS = new Set(["POST", "PUT", "PATCH", "DELETE"]);
/** The browser-login actions: they get the auth cookies in ctx.meta and are not authenticated by them. */
const LOGIN_ACTIONS = new Set(["auth.login", "auth.callback", "auth.logout"]);

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  return Promise.race([
    p,
    new Promise<T>((_, reject) => setTimeout(() => reject(new Error(`${what} did not answer within ${ms} ms`)), ms).unref()),
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

function createGateway(broker: Service["broker"]): ServiceSchema<ApiSettingsSchema, GatewayMethods, GatewayVars> {
  const { config } = platformOf(broker);
  const sessionCookies = cookiePolicy(config.publicUrl);
  const csrfOrigins = trustedOrigins(config.frontendUrl, config.publicUrl);
  const streams = new LabInstanceStreams();
  return {
    name: "api-gateway",
    mixins: [ApiGateway, AccessMixin],

    settings: {
      port: config.port,
      ip: "0.0.0.0",
      // moleculer-web also accepts a function here (its typings say only an object).
      rootCallOptions: withEventStreamCallOptions(assignRequestId) as unknown as CallingOptions,
      cors: {
        origin: [config.frontendUrl, config.publicUrl],
        methods: ["GET", "POST", "PUT", "DELETE", "OPTIONS"],
        allowedHeaders: ["Content-Type", "Authorization", "X-Request-Id", "Last-Event-ID"],
        exposedHeaders: ["X-Request-Id"],
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
          aliases: {
            "GET /health": "api-gateway.health",
            "GET /openapi.json": "api-gateway.openapi",
            "GET /lab-instances/:id/events": streams.handler,
          },
          bodyParsers: { json: { strict: true, limit: config.bodyLimitBytes }, urlencoded: false },
          callOptions: { timeout: 30_000 },
          logging: true,
          onBeforeCall(ctx: Context<unknown, RequestMeta>, _route: unknown, req: GatewayRequest) {
            if (BODY_METHODS.has(req.method ?? "") && hasBody(req)) {
              const type = (req.headers["content-type"] ?? "").split(";")[0].trim().toLowerCase();
              if (type !== "application/json") throw unsupportedMediaType();
              if (req.body !== undefined && (typeof req.body !== "object" || Array.isArray(req.body) || req.body === null)) {
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
              const reporter = this.broker.metrics?.reporter?.find((r: unknown) => r instanceof PrometheusText) as PrometheusText | undefined;
              res.setHeader("Content-Type", "text/plain; version=0.0.4; charset=utf-8");
              res.end(reporter ? reporter.text() : "");
            },
            "GET api/docs"(_req: IncomingMessage, res: ServerResponse) {
              res.setHeader("Content-Type", "text/html; charset=utf-8");
              res.setHeader("Content-Security-Policy", "default-src 'self'; script-src 'unsafe-inline' 'self'; style-src 'unsafe-inline'");
              res.end(docsPage("/api/v1/openapi.json"));
            },
          },
        },
      ],
      onError(request: IncomingMessage, res: ServerResponse, err: Error) {
        const req = request as GatewayRequest;
        const answer = toHttpAnswer(err, { method: req.method ?? "GET", pathParams: pathParamsOf(req) });
        const requestId = req.$ctx?.requestID ?? "-";
        if (answer.serverFault) {
          this.logger.error(`[${requestId}] ${req.method} ${req.url} → ${answer.status}:`, err.name, err.message, err.stack ?? "");
        }
        if (!res.headersSent) {
          res.setHeader("Content-Type", "application/json; charset=utf-8");
          if (requestId !== "-") res.setHeader("X-Request-Id", requestId);
          if (answer.retryAfterS !== undefined) res.setHeader("Retry-After", String(answer.retryAfterS));
          res.writeHead(answer.status);
        }
        res.end(JSON.stringify(answer.body));
      },
      log4XXResponses: false,
      logRequestParams: null,
      logResponseData: null,
    },

    actions: {
      // moleculer-web's own actions: `rest` serves every HTTP request (each routed action checks its own
      // rule); route changes over the bus are switched off; the alias list is for operators (system), through
      // the broker only: `rest: null` drops moleculer-web's own "GET /list-aliases", which autoAliases would
      // otherwise publish as /api/v1/api-gateway/list-aliases (a route outside the API).
      rest: { access: { public: true, roles: [] } },
      listAliases: { rest: null, access: { roles: [] } },
      addRoute: false,
      removeRoute: false,
      openapi: {
        access: { public: true, roles: [] },
        handler() {
          const aliases = (this as unknown as { aliases: { method: string; fullPath: string; action?: string }[] }).aliases;
          const actions = new Map(
            (this.broker.registry.getActionList({ skipInternal: true }) as { name: string; action?: Record<string, unknown> }[]).map((a) => [a.name, a.action]),
          );
          const routes = aliases.map((a) => {
            const action = a.action ? actions.get(a.action) : undefined;
            return {
              method: a.method,
              path: a.fullPath,
              action: a.action,
              params: action?.params as Record<string, unknown> | undefined,
              access: (action?.access as RouteDescription["access"]) ?? (a.action ? undefined : { roles: ["admin", "teacher", "student"] }),
            };
          });
          return buildOpenApi(routes, { prefix: "/api/v1", version: config.version, serverUrl: config.publicUrl });
        },
      },
      health: {
        access: { public: true, roles: [] },
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
      "lab-instances.status-changed"(ctx: Context<StreamedInstance>) {
        streams.publish(ctx.params);
      },
    },

    methods: {
      refreshAliases() {
        const self = this as unknown as { routes: { opts: { autoAliases?: boolean } }[]; regenerateAutoAliases(r: unknown): void };
        for (const route of self.routes) if (route.opts.autoAliases) self.regenerateAutoAliases(route);
      },
      /**
       * Bearer JWT, else the session cookie → the small principal; neither → anonymous (the access rule then
       * answers 401). Bearer wins over a cookie and is never CSRF-checked (browsers do not attach it on their
       * own); a cookie-authenticated change must pass the CSRF check (403). A session store that is down
       * answers 503 (never anonymous).
       */
      async authenticate(ctx: Context<unknown, RequestMeta>, _route: unknown, req: IncomingMessage): Promise<Principal | null> {
        const header = req.headers.authorization;
        if (header !== undefined) {
          // The scheme name is case-insensitive (RFC 7235 §2.1): "bearer <JWT>" is the same credential.
          const match = /^Bearer ([A-Za-z0-9\-_]+\.[A-Za-z0-9\-_]+\.[A-Za-z0-9\-_]*)$/i.exec(header);
          if (!match) throw unauthorized("Malformed Authorization header: expected 'Bearer <JWT>'");
          return ctx.call<Principal, { token: string }>("auth.authenticate", { token: match[1] });
        }
        const cookies = readAuthCookies(req.headers.cookie, sessionCookies);
        const action = (req as GatewayRequest).$alias?.action;
        const csrf = () => {
          const verdict = checkCsrf(
            {
              method: req.method ?? "GET",
              contentType: req.headers["content-type"],
              origin: req.headers.origin,
              secFetchSite: req.headers["sec-fetch-site"] as string | undefined,
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
      // moleculer-web's own created() (a mixin: it ran first) made the server.
      this.httpDrain = trackHttpRequests(this.server);
      const url = config.redisUrl ?? config.cacher;
      this.redis = url
        ? new Redis(url, { lazyConnect: true, enableOfflineQueue: false, maxRetriesPerRequest: 1, connectTimeout: 1000 })
        : null;
      this.redis?.on("error", () => {
        /* reported by the health check */
      });
    },

    async started() {
      await this.redis?.connect().catch(() => undefined);
    },

    async stopped() {
      // Runs before moleculer-web closes the server, which would otherwise wait for the open streams.
      streams.closeAll();
      this.redis?.disconnect();
    },
  };
}

export default createGateway;

/**
 * SIGTERM of a node (start.ts), before its broker stops: its gateway, if it has one, stops taking connections
 * and answers the requests it has, within timeoutMs.
 */
export async function drainGateway(broker: ServiceBroker, timeoutMs: number): Promise<void> {
  const gateway = broker.getLocalService("api-gateway") as unknown as Partial<GatewayMethods> | undefined;
  await gateway?.drainHttp?.(timeoutMs);
}
