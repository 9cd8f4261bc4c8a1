import { loadConfig, ConfigError } from "../../services/shared/config";

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

  it.each([["1,,2"], ["1,"], ["acme.example"], ["1 2"], ["x".repeat(65)]])("refuses %j naming the variable", (value) => {
    expect(() => loadConfig({ OIDC_ALLOWED_ORGS: value })).toThrow(ConfigError);
    expect(() => loadConfig({ OIDC_ALLOWED_ORGS: value })).toThrow(/OIDC_ALLOWED_ORGS must be comma-separated organisation ids/);
  });
});

describe("METRICS_PORT", () => {
  it("is off unless set, and validated when set", () => {
    expect(loadConfig({}).metricsPort).toBeUndefined();
    expect(loadConfig({ METRICS_PORT: "9100" }).metricsPort).toBe(9100);
    expect(() => loadConfig({ METRICS_PORT: "x" })).toThrow(/METRICS_PORT must be an integer/);
  });
});
