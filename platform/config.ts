/**
 * Configuration, read from the environment and validated once at start-up.
 * A bad value throws ConfigError naming the variable, so a misconfigured node never starts half-way.
 * Pure: no framework imports.
 */

export type Mode = "embedded" | "cluster";

export interface Config {
  mode: Mode;
  port: number;
  nodeId: string | undefined;
  namespace: string;
  services: string[];
  logLevel: "fatal" | "error" | "warn" | "info" | "debug" | "trace";
  /** postgres://… or undefined for the embedded PGlite server. */
  databaseUrl: string | undefined;
  databasePoolMax: number;
  dataDir: string;
  embeddedPgPort: number;
  transporter: string | undefined;
  /** AMQP transporter options (used only when TRANSPORTER is amqp://…); see platform/moleculer.config.ts for why. */
  amqp: {
    /** Unacknowledged requests RabbitMQ hands one node at a time (AMQP_PREFETCH). */
    prefetch: number;
    /** AMQP connection heartbeat, s; 0 = off (AMQP_HEARTBEAT_S). */
    heartbeatS: number;
    /** Events older than this are dropped from a node's queue (AMQP_EVENT_TTL_MS). */
    eventTtlMs: number;
    /** A node's own queues are deleted this long after it stopped consuming (AMQP_QUEUE_EXPIRY_S). */
    queueExpiryS: number;
  };
  /** A call between services that takes longer fails with a timeout (REQUEST_TIMEOUT_MS). */
  requestTimeoutMs: number;
  cacher: string | undefined;
  redisUrl: string | undefined;
  celeryBrokerUrl: string | undefined;
  celeryResultBackend: string | undefined;
  celeryQueue: string;
  celeryTaskPrefix: string;
  oidc: {
    /** undefined: the embedded provider runs (never in production). */
    issuer: string | undefined;
    clientId: string;
    clientSecret: string | undefined;
    audience: string;
    rolesClaim: string;
    embeddedPort: number;
    /** Scopes of the browser login (OIDC_SCOPES, space-separated; must contain openid). */
    scopes: string;
    /** Minimum time between JWKS refetches caused by an unknown kid (OIDC_JWKS_COOLDOWN_MS). */
    jwksCooldownMs: number;
    /** Organisations whose role grants count (OIDC_ALLOWED_ORGS, comma-separated ids); empty: any. */
    allowedOrgs: string[];
  };
  publicUrl: string;
  frontendUrl: string;
  /** Cookie sessions live this long from login, fixed (not sliding): SESSION_TTL_S, default 1 h. */
  sessionTtlS: number;
  /** How long a users row (role, existence) may be served from the cache: USERS_CACHE_TTL_S, default 5 min. */
  usersCacheTtlS: number;
  labStartTimeoutS: number;
  labMaxLifetimeS: number;
  maxActiveInstancesPerStudent: number;
  /** How often the lab-instance sweeper looks for timed-out starts and expired lifetimes (ms). */
  labSweepIntervalMs: number;
  bodyLimitBytes: number;
  /** Gateway rate limits (0 turns one off): per user, lab starts per user, login per client address. */
  rateLimit: {
    /** RATE_LIMIT_RPS and RATE_LIMIT_BURST: each signed-in user's token bucket (either 0: off). */
    userRps: number;
    userBurst: number;
    /** RATE_LIMIT_LAB_STARTS_PER_MIN: POST /lab-instances per user, on top of the above. */
    labStartsPerMin: number;
    /** RATE_LIMIT_LOGIN_PER_MIN: /auth/login and /auth/callback per client address. */
    loginPerMin: number;
    /** TRUST_PROXY: how many proxies in front append to X-Forwarded-For (0: the header is ignored). */
    trustedProxyHops: number;
  };
  /** Moleculer's Prometheus reporter on its own port (nodes without a gateway); off by default. */
  metricsPort: number | undefined;
  version: string;
  /** The operator's name in the REPL's calls and the serving nodes' logs (OPERATOR; default: the OS user). */
  operator: string | undefined;
}

export const ALL_SERVICES = ["api-gateway", "auth", "courses", "labs", "lab-instances", "access", "tasks"] as const;

export class ConfigError extends Error {
  constructor(
    readonly variable: string,
    problem: string,
  ) {
    super(`Invalid configuration: ${variable} ${problem}`);
    this.name = "ConfigError";
  }
}

type Env = Record<string, string | undefined>;

function str(env: Env, name: string): string | undefined {
  const v = env[name];
  return v === undefined || v.trim() === "" ? undefined : v.trim();
}

function int(env: Env, name: string, def: number, min: number, max: number): number {
  const raw = str(env, name);
  if (raw === undefined) return def;
  if (!/^\d+$/.test(raw)) throw new ConfigError(name, `must be an integer, got "${raw}"`);
  const n = Number(raw);
  if (n < min || n > max) throw new ConfigError(name, `must be between ${min} and ${max}, got ${n}`);
  return n;
}

/** A non-negative decimal such as 20 or 0.5. */
function decimal(env: Env, name: string, def: number, max: number): number {
  const raw = str(env, name);
  if (raw === undefined) return def;
  if (!/^\d+(\.\d+)?$/.test(raw)) throw new ConfigError(name, `must be a non-negative number, got "${raw}"`);
  const n = Number(raw);
  if (n > max) throw new ConfigError(name, `must be at most ${max}, got ${n}`);
  return n;
}

function url(env: Env, name: string, protocols: string[]): string | undefined {
  const raw = str(env, name);
  if (raw === undefined) return undefined;
  let parsed: URL;
  try {
    parsed = new URL(raw);
  } catch {
    throw new ConfigError(name, `must be a URL (${protocols.join(" or ")}), got "${raw}"`);
  }
  if (!protocols.includes(parsed.protocol)) {
    throw new ConfigError(name, `must use ${protocols.join(" or ")}, got "${parsed.protocol}"`);
  }
  return raw;
}

function httpOrigin(env: Env, name: string, def: string): string {
  const v = url(env, name, ["http:", "https:"]) ?? def;
  return v.replace(/\/+$/, "");
}

/** Comma-separated organisation ids (Zitadel's are digits; the embedded IdP's knob takes this alphabet too). */
function orgIds(env: Env, name: string): string[] {
  const raw = str(env, name);
  if (raw === undefined) return [];
  const ids = raw.split(",").map((s) => s.trim());
  const bad = ids.find((id) => !/^[0-9A-Za-z_-]{1,64}$/.test(id));
  if (bad !== undefined) {
    throw new ConfigError(name, `must be comma-separated organisation ids (letters, digits, _ or -), got "${bad}"`);
  }
  return [...new Set(ids)];
}

const LOG_LEVELS = ["fatal", "error", "warn", "info", "debug", "trace"] as const;

export function loadConfig(env: Env = process.env): Config {
  const servicesRaw = str(env, "SERVICES");
  const services = servicesRaw
    ? servicesRaw
        .split(",")
        .map((s) => s.trim())
        .filter(Boolean)
    : [...ALL_SERVICES];
  for (const s of services) {
    if (!(ALL_SERVICES as readonly string[]).includes(s)) {
      throw new ConfigError("SERVICES", `names an unknown service "${s}" (known: ${ALL_SERVICES.join(", ")})`);
    }
  }
  const logLevelRaw = (str(env, "LOGLEVEL") ?? "info").toLowerCase();
  if (!(LOG_LEVELS as readonly string[]).includes(logLevelRaw)) {
    throw new ConfigError("LOGLEVEL", `must be one of ${LOG_LEVELS.join(", ")}`);
  }

  const transporter = str(env, "TRANSPORTER");
  if (transporter !== undefined && !/^(amqps?|redis|nats|mqtt|tcp):\/\//.test(transporter) && transporter !== "TCP") {
    throw new ConfigError("TRANSPORTER", `must be a transporter URL such as amqp://…, got "${transporter}"`);
  }
  const cacherRaw = str(env, "CACHER");
  let cacher: string | undefined;
  if (cacherRaw !== undefined) {
    if (/^memory$/i.test(cacherRaw)) cacher = undefined;
    else cacher = url(env, "CACHER", ["redis:", "rediss:"]);
  }
  const port = int(env, "PORT", 8000, 1, 65535);
  const publicUrl = httpOrigin(env, "PUBLIC_URL", `http://localhost:${port}`);

  const issuer = url(env, "OIDC_ISSUER", ["http:", "https:"]);
  const clientSecret = str(env, "OIDC_CLIENT_SECRET");
  const databaseUrl = url(env, "DATABASE_URL", ["postgres:", "postgresql:"]);
  const scopes = (str(env, "OIDC_SCOPES") ?? "openid profile email").split(/\s+/).filter(Boolean);
  if (!scopes.includes("openid") || !scopes.every((s) => /^[\x21\x23-\x5B\x5D-\x7E]+$/.test(s))) {
    throw new ConfigError("OIDC_SCOPES", "must be space-separated scope names including openid");
  }

  return {
    // Cluster mode as soon as any external part is configured: JSON logs, no demo seeding.
    mode: databaseUrl || transporter ? "cluster" : "embedded",
    port,
    nodeId: str(env, "NODEID"),
    namespace: str(env, "NAMESPACE") ?? "autolabs",
    services,
    logLevel: logLevelRaw as Config["logLevel"],
    databaseUrl,
    databasePoolMax: int(env, "DATABASE_POOL_MAX", 10, 1, 200),
    dataDir: str(env, "DATA_DIR") ?? ".data",
    embeddedPgPort: int(env, "EMBEDDED_PG_PORT", 54329, 1, 65535),
    transporter,
    amqp: {
      prefetch: int(env, "AMQP_PREFETCH", 200, 1, 10_000),
      heartbeatS: int(env, "AMQP_HEARTBEAT_S", 10, 0, 600),
      eventTtlMs: int(env, "AMQP_EVENT_TTL_MS", 60_000, 1000, 86_400_000),
      queueExpiryS: int(env, "AMQP_QUEUE_EXPIRY_S", 120, 10, 86_400),
    },
    requestTimeoutMs: int(env, "REQUEST_TIMEOUT_MS", 30_000, 100, 600_000),
    cacher,
    redisUrl: url(env, "REDIS_URL", ["redis:", "rediss:"]),
    celeryBrokerUrl: url(env, "CELERY_BROKER_URL", ["amqp:", "amqps:"]),
    celeryResultBackend: url(env, "CELERY_RESULT_BACKEND", ["redis:", "rediss:"]),
    celeryQueue: str(env, "CELERY_QUEUE") ?? "celery",
    celeryTaskPrefix: str(env, "CELERY_TASK_PREFIX") ?? "celery_workers",
    oidc: {
      issuer: issuer?.replace(/\/+$/, ""),
      clientId: str(env, "OIDC_CLIENT_ID") ?? "autolabs-backend",
      clientSecret,
      audience: str(env, "OIDC_AUDIENCE") ?? "autolabs-api",
      rolesClaim: str(env, "OIDC_ROLES_CLAIM") ?? "urn:zitadel:iam:org:project:roles",
      embeddedPort: int(env, "EMBEDDED_IDP_PORT", port + 1, 1, 65535),
      scopes: [...new Set(scopes)].join(" "),
      jwksCooldownMs: int(env, "OIDC_JWKS_COOLDOWN_MS", 30_000, 1000, 3_600_000),
      allowedOrgs: orgIds(env, "OIDC_ALLOWED_ORGS"),
    },
    publicUrl,
    frontendUrl: httpOrigin(env, "FRONTEND_URL", publicUrl),
    sessionTtlS: int(env, "SESSION_TTL_S", 3600, 1, 7 * 86400),
    usersCacheTtlS: int(env, "USERS_CACHE_TTL_S", 300, 1, 3600),
    labStartTimeoutS: int(env, "LAB_START_TIMEOUT_S", 300, 1, 86400),
    labMaxLifetimeS: int(env, "LAB_MAX_LIFETIME_S", 14400, 60, 30 * 86400),
    maxActiveInstancesPerStudent: int(env, "MAX_ACTIVE_INSTANCES_PER_STUDENT", 3, 1, 100),
    labSweepIntervalMs: int(env, "LAB_SWEEP_INTERVAL_MS", 10_000, 50, 3_600_000),
    bodyLimitBytes: int(env, "BODY_LIMIT_BYTES", 256 * 1024, 1024, 16 * 1024 * 1024),
    // Generous per user: a class-start rush is a handful of requests per student. Login per address must let a
    // class behind one NAT sign in at once (2 requests each: login and callback).
    rateLimit: {
      userRps: decimal(env, "RATE_LIMIT_RPS", 20, 100_000),
      userBurst: int(env, "RATE_LIMIT_BURST", 100, 0, 1_000_000),
      labStartsPerMin: int(env, "RATE_LIMIT_LAB_STARTS_PER_MIN", 10, 0, 100_000),
      loginPerMin: int(env, "RATE_LIMIT_LOGIN_PER_MIN", 600, 0, 1_000_000),
      trustedProxyHops: int(env, "TRUST_PROXY", 0, 0, 10),
    },
    metricsPort: str(env, "METRICS_PORT") === undefined ? undefined : int(env, "METRICS_PORT", 0, 1, 65535),
    version: str(env, "APP_VERSION") ?? "0.1.0",
    operator: operatorName(env),
  };
}

/** A name that reads unambiguously in a log line. */
function operatorName(env: Env): string | undefined {
  const raw = str(env, "OPERATOR");
  if (raw !== undefined && !/^[\w.@-]{1,64}$/.test(raw)) {
    throw new ConfigError("OPERATOR", `must be 1-64 letters, digits, '.', '@', '_' or '-', got "${raw}"`);
  }
  return raw;
}
