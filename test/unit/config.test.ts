import { BatchingAmqpTransporter } from "../../platform/amqp-transporter";
import { readFileSync } from "node:fs";
import path from "node:path";
import { loadConfig, ConfigError } from "../../platform/config";
import { brokerOptions } from "../../platform/moleculer.config";

describe("loadConfig", () => {
  it("gives the embedded defaults with no environment", () => {
    const c = loadConfig({});
    expect(c.mode).toBe("embedded");
    expect(c.port).toBe(8000);
    expect(c.services).toHaveLength(7);
    expect(c.celeryQueue).toBe("celery");
    expect(c.celeryTaskPrefix).toBe("celery_workers");
    expect(c.oidc.rolesClaim).toBe("urn:zitadel:iam:org:project:roles");
    expect(c.publicUrl).toBe("http://localhost:8000");
    expect(c.frontendUrl).toBe("http://localhost:8000");
    expect(c.maxActiveInstancesPerStudent).toBe(3);
  });

  it("switches to cluster mode when an external part is configured", () => {
    const c = loadConfig({ DATABASE_URL: "postgres://u@127.0.0.1/db", TRANSPORTER: "amqp://127.0.0.1" });
    expect(c.mode).toBe("cluster");
  });

  it.each([
    ["PORT", "eighty", /PORT must be an integer/],
    ["PORT", "70000", /PORT must be between/],
    ["DATABASE_URL", "mysql://x/y", /DATABASE_URL must use postgres:/],
    ["CACHER", "memcached://x", /CACHER must use redis:/],
    ["SERVICES", "courses,billing", /SERVICES names an unknown service "billing"/],
    ["TRANSPORTER", "carrier-pigeon", /TRANSPORTER must be a transporter URL/],
    ["MAX_ACTIVE_INSTANCES_PER_STUDENT", "0", /MAX_ACTIVE_INSTANCES_PER_STUDENT must be between/],
    ["OIDC_ISSUER", "not a url", /OIDC_ISSUER must be a URL/],
    ["LOGLEVEL", "loud", /LOGLEVEL must be one of/],
  ])("rejects a bad %s naming the variable", (name, value, message) => {
    expect(() => loadConfig({ [name]: value })).toThrow(ConfigError);
    expect(() => loadConfig({ [name]: value })).toThrow(message);
  });

  it("accepts CACHER=Memory as the in-process cacher", () => {
    expect(loadConfig({ CACHER: "Memory" }).cacher).toBeUndefined();
  });
});

describe("OIDC_ALLOWED_ORGS", () => {
  it("is empty (any organisation) unless set", () => {
    expect(loadConfig({}).oidc.allowedOrgs).toEqual([]);
    expect(loadConfig({ OIDC_ALLOWED_ORGS: "  " }).oidc.allowedOrgs).toEqual([]);
  });

  it("takes comma-separated organisation ids, trimmed and without duplicates", () => {
    expect(loadConfig({ OIDC_ALLOWED_ORGS: "300000000000000001" }).oidc.allowedOrgs).toEqual(["300000000000000001"]);
    expect(loadConfig({ OIDC_ALLOWED_ORGS: " 1 , org-b_2,1" }).oidc.allowedOrgs).toEqual(["1", "org-b_2"]);
  });

  it.each([["1,,2"], ["1,"], ["acme.example"], ["1 2"], ["x".repeat(65)]])(
    "refuses %j naming the variable",
    (value) => {
      expect(() => loadConfig({ OIDC_ALLOWED_ORGS: value })).toThrow(ConfigError);
      expect(() => loadConfig({ OIDC_ALLOWED_ORGS: value })).toThrow(
        /OIDC_ALLOWED_ORGS must be comma-separated organisation ids/,
      );
    },
  );
});

describe("METRICS_PORT", () => {
  it("defaults to 3030, 0 turns it off, and it never shares the API port", () => {
    expect(loadConfig({}).metricsPort).toBe(3030);
    expect(loadConfig({ METRICS_PORT: "0" }).metricsPort).toBe(0);
    expect(loadConfig({ METRICS_PORT: "9100" }).metricsPort).toBe(9100);
    expect(() => loadConfig({ METRICS_PORT: "x" })).toThrow(/METRICS_PORT must be an integer/);
    expect(() => loadConfig({ METRICS_PORT: "8000" })).toThrow(/METRICS_PORT must differ from PORT/);
    // A node without a gateway has no API port to collide with.
    expect(loadConfig({ METRICS_PORT: "8000", SERVICES: "courses" }).metricsPort).toBe(8000);
  });
});

describe("tracing", () => {
  it("is off by default; the exporter, Zipkin URL and sample rate are validated", () => {
    expect(loadConfig({}).tracing).toEqual({ exporter: "off", zipkinUrl: "http://localhost:9411", sampleRate: 1 });
    expect(loadConfig({ TRACING_EXPORTER: "Zipkin", TRACING_ZIPKIN_URL: "http://jaeger:9411/" }).tracing).toEqual({
      exporter: "zipkin",
      zipkinUrl: "http://jaeger:9411",
      sampleRate: 1,
    });
    expect(() => loadConfig({ TRACING_EXPORTER: "carrier-pigeon" })).toThrow(/TRACING_EXPORTER must be one of/);
    expect(() => loadConfig({ TRACING_SAMPLE_RATE: "2" })).toThrow(/TRACING_SAMPLE_RATE must be at most 1/);
    expect(() => loadConfig({ TRACING_ZIPKIN_URL: "ftp://x" })).toThrow(/TRACING_ZIPKIN_URL must use/);
    // Cluster mode logs JSON only: the console exporter's tables would break the stream.
    expect(loadConfig({ TRACING_EXPORTER: "console" }).tracing.exporter).toBe("console");
    expect(() => loadConfig({ TRACING_EXPORTER: "console", TRANSPORTER: "amqp://x" })).toThrow(/use zipkin/);
  });
});

describe("rate limits", () => {
  it("default to limits a class-start rush never reaches", () => {
    expect(loadConfig({}).rateLimit).toEqual({
      userRps: 20,
      userBurst: 100,
      labStartsPerMin: 10,
      loginPerMin: 600,
      trustedProxyHops: 0,
    });
  });

  it("read every variable, accept a fractional rate and 0 (off)", () => {
    const c = loadConfig({
      RATE_LIMIT_RPS: "0.5",
      RATE_LIMIT_BURST: "0",
      RATE_LIMIT_LAB_STARTS_PER_MIN: "0",
      RATE_LIMIT_LOGIN_PER_MIN: "30",
      TRUST_PROXY: "2",
    });
    expect(c.rateLimit).toEqual({
      userRps: 0.5,
      userBurst: 0,
      labStartsPerMin: 0,
      loginPerMin: 30,
      trustedProxyHops: 2,
    });
  });

  it.each([
    ["RATE_LIMIT_RPS", "-1", /RATE_LIMIT_RPS must be a non-negative number/],
    ["RATE_LIMIT_RPS", "1e3", /RATE_LIMIT_RPS must be a non-negative number/],
    ["RATE_LIMIT_RPS", "fast", /RATE_LIMIT_RPS must be a non-negative number/],
    ["RATE_LIMIT_RPS", "1000000", /RATE_LIMIT_RPS must be at most/],
    ["RATE_LIMIT_BURST", "2.5", /RATE_LIMIT_BURST must be an integer/],
    ["RATE_LIMIT_LAB_STARTS_PER_MIN", "-3", /RATE_LIMIT_LAB_STARTS_PER_MIN must be an integer/],
    ["RATE_LIMIT_LOGIN_PER_MIN", "lots", /RATE_LIMIT_LOGIN_PER_MIN must be an integer/],
    ["TRUST_PROXY", "true", /TRUST_PROXY must be an integer/],
    ["TRUST_PROXY", "11", /TRUST_PROXY must be between 0 and 10/],
  ])("reject a bad %s naming the variable", (name, value, message) => {
    expect(() => loadConfig({ [name]: value })).toThrow(ConfigError);
    expect(() => loadConfig({ [name]: value })).toThrow(message);
  });
});

describe("AMQP transporter and request timeout", () => {
  it("has deliberate defaults", () => {
    const c = loadConfig({});
    expect(c.amqp).toEqual({ prefetch: 200, heartbeatS: 10, eventTtlMs: 60_000, queueExpiryS: 120 });
    expect(c.requestTimeoutMs).toBe(30_000);
  });

  it("reads the operator's knobs", () => {
    const c = loadConfig({
      AMQP_PREFETCH: "50",
      AMQP_HEARTBEAT_S: "0",
      AMQP_EVENT_TTL_MS: "5000",
      AMQP_QUEUE_EXPIRY_S: "600",
      REQUEST_TIMEOUT_MS: "2000",
    });
    expect(c.amqp).toEqual({ prefetch: 50, heartbeatS: 0, eventTtlMs: 5000, queueExpiryS: 600 });
    expect(c.requestTimeoutMs).toBe(2000);
  });

  it.each([
    ["AMQP_PREFETCH", "0", /AMQP_PREFETCH must be between 1 and 10000/],
    ["AMQP_PREFETCH", "many", /AMQP_PREFETCH must be an integer/],
    ["AMQP_HEARTBEAT_S", "-1", /AMQP_HEARTBEAT_S must be an integer/],
    ["AMQP_EVENT_TTL_MS", "10", /AMQP_EVENT_TTL_MS must be between/],
    ["AMQP_QUEUE_EXPIRY_S", "1", /AMQP_QUEUE_EXPIRY_S must be between/],
    ["REQUEST_TIMEOUT_MS", "0", /REQUEST_TIMEOUT_MS must be between/],
  ])("rejects a bad %s=%s", (name, value, message) => {
    expect(() => loadConfig({ [name]: value })).toThrow(ConfigError);
    expect(() => loadConfig({ [name]: value })).toThrow(message);
  });
});

describe("broker options from the config", () => {
  it("passes the AMQP options to the transporter and adds the connection heartbeat to every URL", () => {
    const config = loadConfig({ TRANSPORTER: "amqp://a:5672;amqp://b:5672/?heartbeat=3", AMQP_PREFETCH: "64" });
    const opts = brokerOptions(config);
    // Moleculer's AMQP transporter with batched writes (platform/amqp-transporter.ts), given these options.
    expect(opts.transporter).toBeInstanceOf(BatchingAmqpTransporter);
    expect((opts.transporter as BatchingAmqpTransporter).opts).toMatchObject({
      url: ["amqp://a:5672?heartbeat=10", "amqp://b:5672/?heartbeat=3"],
      prefetch: 64,
      eventTimeToLive: 60_000,
      heartbeatTimeToLive: 15_000,
      autoDeleteQueues: 120_000,
      socketOptions: { noDelay: true },
    });
    expect(opts.requestTimeout).toBe(30_000);
    expect(opts.disableBalancer).toBe(false);
  });

  it("has no transporter in embedded mode", () => {
    expect(brokerOptions(loadConfig({})).transporter).toBeNull();
  });
});

describe("version", () => {
  it("is package.json's unless APP_VERSION (the image's build argument) names one", () => {
    const { version } = JSON.parse(readFileSync(path.join(__dirname, "../../package.json"), "utf8")) as {
      version: string;
    };
    expect(loadConfig({}).version).toBe(version);
    expect(loadConfig({ APP_VERSION: "" }).version).toBe(version); // the Dockerfile's default: no build argument
    expect(loadConfig({ APP_VERSION: "1.4.2-rc.1+abc123" }).version).toBe("1.4.2-rc.1+abc123");
  });
});
