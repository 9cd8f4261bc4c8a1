/**
 * The Kubernetes manifests in k8s/, checked offline:
 * - every object against the Kubernetes JSON schemas (kubernetes-models' validators), and field names against
 *   the API types (TypeScript's excess-property check on the object as a literal: a misspelt `readinesProbe`
 *   passes a JSON-schema check without additionalProperties, but not this one);
 * - what ties the objects together: selectors, labels, ports, probe paths, the PDB/HPA of every Deployment;
 * - hardening of every pod (securityContext, resources, read-only root with a writable /tmp, no API token);
 * - the ConfigMap holds every variable the platform reads (parsed from the code), and loadConfig accepts the
 *   environment each Deployment gets;
 * - one pinned image tag (package.json's version), the migration Job named after it, the drain timings.
 */
import { readdirSync, readFileSync } from "node:fs";
import path from "node:path";
import ts from "typescript";
import { parseAllDocuments } from "yaml";
import * as core from "kubernetes-models/v1";
import * as apps from "kubernetes-models/apps/v1";
import * as batch from "kubernetes-models/batch/v1";
import * as policy from "kubernetes-models/policy/v1";
import * as autoscaling from "kubernetes-models/autoscaling/v2";
import * as networking from "kubernetes-models/networking.k8s.io/v1";
import type { IDeployment } from "kubernetes-models/apps/v1/Deployment";
import type { IJob } from "kubernetes-models/batch/v1/Job";
import type { IService } from "kubernetes-models/v1/Service";
import type { IConfigMap } from "kubernetes-models/v1/ConfigMap";
import type { ISecret } from "kubernetes-models/v1/Secret";
import type { IIngress } from "kubernetes-models/networking.k8s.io/v1/Ingress";
import type { INetworkPolicy } from "kubernetes-models/networking.k8s.io/v1/NetworkPolicy";
import type { IPodDisruptionBudget } from "kubernetes-models/policy/v1/PodDisruptionBudget";
import type { IHorizontalPodAutoscaler } from "kubernetes-models/autoscaling/v2/HorizontalPodAutoscaler";
import type { IIoK8sApiCoreV1Container as Container } from "kubernetes-models/v1/Container";
import type { IIoK8sApiCoreV1PodSpec as PodSpec } from "kubernetes-models/v1/PodSpec";
import { ALL_SERVICES, loadConfig } from "../../platform/config";
import { parseMigrateArgs } from "../../main/migrate-args";

const ROOT = path.resolve(__dirname, "../..");
const K8S = path.join(ROOT, "k8s");
const read = (rel: string) => readFileSync(path.join(ROOT, rel), "utf8");

interface Manifest {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string> };
  [key: string]: unknown;
}

interface Loaded {
  file: string;
  doc: Manifest;
}

/** The typed API model of each kind we ship: schema validation on construct + validate(). */
const MODELS: Record<string, { module: string; type: string; validate: (o: unknown) => void }> = {
  "v1/ConfigMap": {
    module: "v1/ConfigMap",
    type: "IConfigMap",
    validate: (o) => new core.ConfigMap(o as never).validate(),
  },
  "v1/Secret": { module: "v1/Secret", type: "ISecret", validate: (o) => new core.Secret(o as never).validate() },
  "v1/Service": { module: "v1/Service", type: "IService", validate: (o) => new core.Service(o as never).validate() },
  "apps/v1/Deployment": {
    module: "apps/v1/Deployment",
    type: "IDeployment",
    validate: (o) => new apps.Deployment(o as never).validate(),
  },
  "batch/v1/Job": { module: "batch/v1/Job", type: "IJob", validate: (o) => new batch.Job(o as never).validate() },
  "policy/v1/PodDisruptionBudget": {
    module: "policy/v1/PodDisruptionBudget",
    type: "IPodDisruptionBudget",
    validate: (o) => new policy.PodDisruptionBudget(o as never).validate(),
  },
  "autoscaling/v2/HorizontalPodAutoscaler": {
    module: "autoscaling/v2/HorizontalPodAutoscaler",
    type: "IHorizontalPodAutoscaler",
    validate: (o) => new autoscaling.HorizontalPodAutoscaler(o as never).validate(),
  },
  "networking.k8s.io/v1/NetworkPolicy": {
    module: "networking.k8s.io/v1/NetworkPolicy",
    type: "INetworkPolicy",
    validate: (o) => new networking.NetworkPolicy(o as never).validate(),
  },
  "networking.k8s.io/v1/Ingress": {
    module: "networking.k8s.io/v1/Ingress",
    type: "IIngress",
    validate: (o) => new networking.Ingress(o as never).validate(),
  },
};

function loadFile(file: string): Manifest[] {
  return parseAllDocuments(read(path.join("k8s", file))).map((d) => {
    if (d.errors.length) throw new Error(`${file}: ${d.errors.map((e) => e.message).join("; ")}`);
    return d.toJSON() as Manifest;
  });
}

const kustomization = loadFile("kustomization.yaml")[0] as unknown as { resources: string[]; namespace: string };
const yamlFiles = readdirSync(K8S).filter((f) => /\.ya?ml$/.test(f) && f !== "kustomization.yaml");
const all: Loaded[] = yamlFiles.flatMap((file) => loadFile(file).map((doc) => ({ file, doc })));
const deployed = all.filter((m) => kustomization.resources.includes(m.file)).map((m) => m.doc);
const ofKind = <T>(kind: string, docs: Manifest[] = deployed): T[] => docs.filter((d) => d.kind === kind) as T[];

const deployments = ofKind<IDeployment>("Deployment");
const jobs = ofKind<IJob>("Job");
const services = ofKind<IService>("Service");
const pdbs = ofKind<IPodDisruptionBudget>("PodDisruptionBudget");
const hpas = ofKind<IHorizontalPodAutoscaler>("HorizontalPodAutoscaler");
const ingresses = ofKind<IIngress>("Ingress");
const policies = ofKind<INetworkPolicy>("NetworkPolicy");
const [configMap] = ofKind<IConfigMap>("ConfigMap");
const secrets = ofKind<ISecret>(
  "Secret",
  all.map((m) => m.doc),
);
const appSecret = secrets.find((s) => s.metadata?.name === "backend-secrets")!;

const pkg = JSON.parse(read("package.json")) as { version: string };
const IMAGE = `registry.gitlab.com/autolabs/backend-platform:${pkg.version}`;
const opsPort = Number(configMap.data?.METRICS_PORT);

const podOf = (w: IDeployment | IJob): PodSpec => w.spec!.template.spec!;
const allContainers = (pod: PodSpec): Container[] => [...(pod.initContainers ?? []), ...pod.containers];
const mainContainer = (d: IDeployment): Container => podOf(d).containers[0];
const name = (o: { metadata?: { name?: string } }) => o.metadata!.name!;
const matches = (selector: Record<string, string>, labels: Record<string, string>) =>
  Object.entries(selector).every(([k, v]) => labels[k] === v);
const podLabels = (d: IDeployment) => d.spec!.template.metadata!.labels!;

/** A container port by number or by name. */
function portNumber(c: Container, port: number | string | undefined): number | undefined {
  if (typeof port === "number") return port;
  return c.ports?.find((p) => p.name === port)?.containerPort;
}

/** CPU in millicores, memory in bytes. */
function quantity(q: string | number): number {
  const m = /^(\d+(?:\.\d+)?)(m|Ki|Mi|Gi|Ti|k|M|G)?$/.exec(String(q));
  if (!m) throw new Error(`unparsed quantity ${String(q)}`);
  const unit = { m: 1e-3, Ki: 2 ** 10, Mi: 2 ** 20, Gi: 2 ** 30, Ti: 2 ** 40, k: 1e3, M: 1e6, G: 1e9 };
  return Number(m[1]) * (m[2] ? unit[m[2] as keyof typeof unit] : 1);
}

/** The environment a container gets: its ConfigMap/Secret envFrom, then its own env (which wins). */
function environmentOf(c: Container, podName: string): Record<string, string> {
  const env: Record<string, string> = {};
  for (const from of c.envFrom ?? []) {
    if (from.configMapRef) {
      const cm = ofKind<IConfigMap>("ConfigMap").find((m) => name(m) === from.configMapRef!.name);
      if (!cm) throw new Error(`${c.name}: no ConfigMap ${String(from.configMapRef.name)}`);
      Object.assign(env, cm.data);
    }
    if (from.secretRef) {
      const s = secrets.find((m) => name(m) === from.secretRef!.name);
      if (!s) throw new Error(`${c.name}: no Secret ${String(from.secretRef.name)} (secret.example.yaml)`);
      Object.assign(env, s.stringData);
    }
  }
  for (const e of c.env ?? []) {
    if (e.value !== undefined) env[e.name] = e.value;
    else if (e.valueFrom?.fieldRef?.fieldPath === "metadata.name") env[e.name] = podName;
    else throw new Error(`${c.name}: env ${e.name} has a source this test does not model`);
  }
  return env;
}

describe("k8s manifests: files and schemas", () => {
  it("kustomization lists every manifest but the Secret example, each file exists, and one namespace", () => {
    expect([...kustomization.resources].sort()).toEqual(yamlFiles.filter((f) => f !== "secret.example.yaml").sort());
    expect(kustomization.namespace).toBe("platform");
    for (const { file, doc } of all) {
      expect({ file, name: doc.metadata.name, namespace: doc.metadata.namespace }).toEqual({
        file,
        name: doc.metadata.name,
        namespace: "platform",
      });
      expect(doc.metadata.labels?.["app.kubernetes.io/name"]).toBe("autolabs-backend");
    }
  });

  it.each(all.map((m) => [`${m.file}: ${m.doc.kind} ${m.doc.metadata.name}`, m.doc] as const))(
    "%s validates against its Kubernetes schema",
    (_label, doc) => {
      const model = MODELS[`${doc.apiVersion}/${doc.kind}`];
      expect(model).toBeDefined();
      expect(() => model.validate(doc)).not.toThrow();
    },
  );

  it("no object has a field the Kubernetes API types lack (TypeScript excess-property check)", () => {
    // One virtual module assigning each manifest, as a literal, to its API type: unknown or misspelt fields
    // and wrong value types are compile errors. Never written to disk.
    const virtual = path.join(K8S, "__manifests__.ts");
    const lines = all.flatMap(({ doc }, i) => {
      const model = MODELS[`${doc.apiVersion}/${doc.kind}`];
      return [
        `import type { ${model.type} as T${i} } from "kubernetes-models/${model.module}";`,
        `export const m${i}: T${i} = ${JSON.stringify(doc)};`,
      ];
    });
    const source = lines.join("\n");
    const options: ts.CompilerOptions = {
      strict: true,
      noEmit: true,
      skipLibCheck: true,
      module: ts.ModuleKind.CommonJS,
      moduleResolution: ts.ModuleResolutionKind.Node10,
      target: ts.ScriptTarget.ES2022,
      types: [],
    };
    const host = ts.createCompilerHost(options);
    const getSourceFile = host.getSourceFile.bind(host);
    host.getSourceFile = (file, lang, onError) =>
      file === virtual ? ts.createSourceFile(file, source, lang) : getSourceFile(file, lang, onError);
    const fileExists = host.fileExists.bind(host);
    host.fileExists = (file) => file === virtual || fileExists(file);
    const program = ts.createProgram([virtual], options, host);
    const problems = ts.getPreEmitDiagnostics(program).map((d) => {
      const where =
        d.file && d.start !== undefined ? /m(\d+)/.exec(d.file.text.slice(0, d.start).split("\n").pop()!) : null;
      const m = where ? all[Number(where[1])] : undefined;
      const text = ts.flattenDiagnosticMessageText(d.messageText, "\n");
      return m ? `${m.file} ${m.doc.kind} ${m.doc.metadata.name}: ${text}` : text;
    });
    expect(problems).toEqual([]);
  });
});

describe("k8s manifests: workloads", () => {
  it("run the platform as gateway, domain and tasks nodes that together run every service once", () => {
    const byDeployment = Object.fromEntries(
      deployments.map((d) => [name(d), environmentOf(mainContainer(d), "pod").SERVICES.split(",")]),
    );
    expect(Object.keys(byDeployment).sort()).toEqual(["backend-domain", "backend-gateway", "backend-tasks"]);
    expect(byDeployment["backend-gateway"]).toEqual(["api-gateway"]);
    expect(Object.values(byDeployment).flat().sort()).toEqual([...ALL_SERVICES].sort());
  });

  it("use one pinned image tag, package.json's version, never :latest", () => {
    const images = [...deployments, ...jobs].flatMap((w) => allContainers(podOf(w)).map((c) => c.image));
    expect(images.length).toBeGreaterThan(3);
    for (const image of images) expect(image).toBe(IMAGE);
    expect(IMAGE).not.toMatch(/:latest$/);
  });

  it.each([...deployments, ...jobs].map((w) => [name(w), w] as const))("%s is hardened", (_n, w) => {
    const pod = podOf(w);
    expect(pod.automountServiceAccountToken).toBe(false);
    expect(pod.securityContext).toMatchObject({ runAsNonRoot: true, seccompProfile: { type: "RuntimeDefault" } });
    // Numeric, not root, and the image's own USER (Dockerfile), so files the image owns stay readable.
    expect(pod.securityContext?.runAsUser).toBeGreaterThan(0);
    const user = /^USER\s+(\d+)(?::(\d+))?\s*$/m.exec(read("Dockerfile"));
    expect(user).not.toBeNull();
    expect(pod.securityContext?.runAsUser).toBe(Number(user![1]));
    const tmpVolumes = (pod.volumes ?? []).filter((v) => v.emptyDir).map((v) => v.name);
    for (const c of allContainers(pod)) {
      expect(c.securityContext).toEqual({
        allowPrivilegeEscalation: false,
        readOnlyRootFilesystem: true,
        capabilities: { drop: ["ALL"] },
      });
      const r = c.resources!;
      for (const res of ["cpu", "memory"]) {
        expect(r.requests?.[res]).toBeDefined();
        expect(r.limits?.[res]).toBeDefined();
        expect(quantity(r.requests![res])).toBeLessThanOrEqual(quantity(r.limits![res]));
      }
    }
    // The serving container writes only to /tmp, an emptyDir (the root filesystem is read-only).
    const main = pod.containers[0];
    const tmp = main.volumeMounts?.find((m) => m.mountPath === "/tmp");
    expect(tmp && tmpVolumes.includes(tmp.name)).toBe(true);
  });

  it.each(deployments.map((d) => [name(d), d] as const))(
    "%s: selector, probes and scrape on the ops port, envFrom config and secrets",
    (_n, d) => {
      expect(d.spec!.replicas).toBeUndefined(); // the HPA owns the count
      expect(matches(d.spec!.selector.matchLabels!, podLabels(d))).toBe(true);
      const c = mainContainer(d);
      expect(portNumber(c, "ops")).toBe(opsPort);
      expect(opsPort).toBe(3030);
      expect(c.livenessProbe?.httpGet?.path).toBe("/livez");
      expect(c.startupProbe?.httpGet?.path).toBe("/livez");
      expect(c.readinessProbe?.httpGet?.path).toBe("/readyz");
      for (const probe of [c.livenessProbe, c.readinessProbe, c.startupProbe]) {
        expect(portNumber(c, probe?.httpGet?.port)).toBe(opsPort);
      }
      expect(d.spec!.template.metadata!.annotations).toMatchObject({
        "prometheus.io/scrape": "true",
        "prometheus.io/port": String(opsPort),
        "prometheus.io/path": "/metrics",
      });
      expect(c.envFrom).toEqual([
        { configMapRef: { name: "backend-config" } },
        { secretRef: { name: "backend-secrets" } },
      ]);
      // Spread over zones and nodes, counted per ReplicaSet so a rollout does not skew it.
      const spread = podOf(d).topologySpreadConstraints ?? [];
      expect(spread.map((s) => s.topologyKey).sort()).toEqual([
        "kubernetes.io/hostname",
        "topology.kubernetes.io/zone",
      ]);
      for (const s of spread) {
        expect(matches(s.labelSelector!.matchLabels!, podLabels(d))).toBe(true);
        expect(s.matchLabelKeys).toEqual(["pod-template-hash"]);
      }
    },
  );

  it.each(deployments.map((d) => [name(d), d] as const))("%s has a PDB and an HPA that fit each other", (_n, d) => {
    const pdb = pdbs.filter((p) => matches(p.spec!.selector!.matchLabels!, podLabels(d)));
    expect(pdb).toHaveLength(1);
    // Exactly this Deployment's pods: the PDB selector is the Deployment's own.
    expect(pdb[0].spec!.selector!.matchLabels).toEqual(d.spec!.selector.matchLabels);
    const hpa = hpas.filter(
      (h) => h.spec!.scaleTargetRef.kind === "Deployment" && h.spec!.scaleTargetRef.name === name(d),
    );
    expect(hpa).toHaveLength(1);
    const { minReplicas, maxReplicas } = hpa[0].spec!;
    expect(minReplicas).toBeGreaterThanOrEqual(2);
    expect(maxReplicas).toBeGreaterThan(minReplicas!);
    // A voluntary eviction never takes the last replicas: at most one at a time, fewer than the minimum.
    expect(pdb[0].spec!.maxUnavailable).toBe(1);
    expect(d.spec!.strategy?.rollingUpdate?.maxUnavailable).toBe(0);
  });

  it("give the shutdown time: preStop, the gateway's drain, start.ts's hard stop, within the grace period", () => {
    const start = read("main/start.ts");
    const hardStop = /setTimeout\(\(\) => process\.exit\(1\), ([\d_]+)\)/.exec(start);
    const drain = /drainGateway\(running\.broker, ([\d_]+)\)/.exec(start);
    const lameDuck = /const LAME_DUCK_MS = ([\d_]+);/.exec(read("services/api-gateway/http-drain.ts"));
    expect([hardStop, drain, lameDuck].every(Boolean)).toBe(true);
    const ms = (m: RegExpExecArray | null) => Number(m![1].replace(/_/g, ""));
    // The drain (lame duck included) ends before the hard stop would cut it.
    expect(ms(lameDuck)).toBeLessThan(ms(drain));
    expect(ms(drain)).toBeLessThan(ms(hardStop));
    for (const d of deployments) {
      const preStopS = mainContainer(d).lifecycle?.preStop?.sleep?.seconds ?? 0;
      expect(podOf(d).terminationGracePeriodSeconds).toBeGreaterThan(preStopS + ms(hardStop) / 1000);
    }
    // Gateways keep serving while their endpoint leaves the ingress and kube-proxy, longer than the lame duck.
    const gateway = deployments.find((d) => name(d) === "backend-gateway")!;
    expect(mainContainer(gateway).lifecycle?.preStop?.sleep?.seconds).toBeGreaterThanOrEqual(ms(lameDuck) / 1000);
  });

  it("migrate once in a Job named after the release; every Deployment waits for it, read-only", () => {
    expect(jobs).toHaveLength(1);
    const job = jobs[0];
    expect(name(job)).toBe(`backend-migrate-${pkg.version.replace(/[^0-9a-z]+/gi, "-").toLowerCase()}`);
    expect(job.spec!.template.spec!.restartPolicy).toBe("Never");
    const migrate = podOf(job).containers[0];
    expect(migrate.command?.slice(0, 2)).toEqual(["node", "dist/main/migrate-cli.js"]);
    expect(parseMigrateArgs(migrate.command!.slice(2))).toEqual({ kind: "up" });
    // Only the Job holds the schema owner's credentials.
    expect(migrate.envFrom).toContainEqual({ secretRef: { name: "backend-migrate-secrets" } });
    for (const d of deployments) {
      const init = podOf(d).initContainers ?? [];
      expect(init).toHaveLength(1);
      expect(init[0].command?.slice(0, 2)).toEqual(["node", "dist/main/migrate-cli.js"]);
      expect(parseMigrateArgs(init[0].command!.slice(2))).toMatchObject({ kind: "wait" });
      expect(JSON.stringify(d)).not.toContain("backend-migrate-secrets");
    }
  });
});

describe("k8s manifests: Services and Ingress", () => {
  it("each Service selects one Deployment's pods and targets a port its container declares", () => {
    expect(services.length).toBeGreaterThan(0);
    for (const s of services) {
      const selected = deployments.filter((d) => matches(s.spec!.selector!, podLabels(d)));
      expect(selected.map(name)).toHaveLength(1);
      for (const p of s.spec!.ports!) {
        expect(portNumber(mainContainer(selected[0]), p.targetPort)).toBeDefined();
        // The ops port (metrics) is scraped per pod, never published through a Service.
        expect(portNumber(mainContainer(selected[0]), p.targetPort)).not.toBe(opsPort);
      }
    }
  });

  it("the Ingress routes /api to the gateway's http port with SSE-friendly nginx settings", () => {
    expect(ingresses).toHaveLength(1);
    const ing = ingresses[0];
    const a = ing.metadata!.annotations!;
    expect(a["nginx.ingress.kubernetes.io/proxy-buffering"]).toBe("off");
    expect(Number(a["nginx.ingress.kubernetes.io/proxy-read-timeout"])).toBeGreaterThanOrEqual(3600);
    expect(Number(a["nginx.ingress.kubernetes.io/proxy-send-timeout"])).toBeGreaterThanOrEqual(3600);
    // nginx must not refuse a body the gateway accepts (its own 413 carries {"detail"}).
    expect(quantity(a["nginx.ingress.kubernetes.io/proxy-body-size"].replace(/m$/, "Mi"))).toBeGreaterThan(
      Number(configMap.data!.BODY_LIMIT_BYTES),
    );
    const paths = ing.spec!.rules!.flatMap((r) => r.http!.paths);
    expect(paths.map((p) => [p.path, p.pathType])).toEqual([["/api", "Prefix"]]);
    for (const p of paths) {
      const svc = services.find((s) => name(s) === p.backend.service!.name)!;
      expect(svc.spec!.ports!.map((sp) => sp.name)).toContain(p.backend.service!.port!.name);
    }
    // One proxy in front: the login rate limit reads the client address from X-Forwarded-For.
    expect(configMap.data!.TRUST_PROXY).toBe("1");
    // Public URL and TLS host agree with the ConfigMap.
    expect(ing.spec!.tls![0].hosts).toEqual([new URL(configMap.data!.PUBLIC_URL).host]);
  });

  it("network policies let in only the ingress controller (API port) and Prometheus (ops port)", () => {
    /** Which namespaces may reach container port `port` of Deployment d (policies are additive). */
    const allowedFrom = (d: IDeployment, port: number) => {
      const selecting = policies.filter((p) => matches(p.spec!.podSelector.matchLabels ?? {}, podLabels(d)));
      expect(selecting.some((p) => p.spec!.policyTypes?.includes("Ingress"))).toBe(true); // default deny applies
      return selecting.flatMap((p) =>
        (p.spec!.ingress ?? [])
          .filter((rule) => rule.ports?.some((rp) => portNumber(mainContainer(d), rp.port) === port))
          .flatMap((rule) => rule.from!.map((f) => f.namespaceSelector?.matchLabels?.["kubernetes.io/metadata.name"])),
      );
    };
    for (const p of policies) {
      for (const rule of p.spec!.ingress ?? []) {
        expect(rule.from?.length).toBeGreaterThan(0); // no rule open to every source
        for (const f of rule.from!) expect(f.podSelector ?? f.namespaceSelector).toBeDefined();
      }
    }
    for (const d of deployments) {
      expect(allowedFrom(d, opsPort)).toEqual(["monitoring"]);
      const http = portNumber(mainContainer(d), "http");
      if (name(d) === "backend-gateway") expect(allowedFrom(d, http!)).toEqual(["ingress-nginx"]);
      else expect(http).toBeUndefined(); // domain and tasks nodes serve nothing but the ops port
    }
    expect(ingresses[0].spec!.ingressClassName).toBe("nginx");
  });
});

/**
 * Every environment variable the production code reads: the `env, "NAME"` arguments of platform/config.ts's
 * readers and `env.NAME`, plus any `process.env.NAME` in lib/, platform/, services/, main/ (dev/ is not shipped).
 */
function variablesReadByTheCode(): Set<string> {
  const names = new Set<string>();
  const visit = (node: ts.Node, inConfig: boolean): void => {
    if (inConfig && ts.isCallExpression(node) && node.arguments.length >= 2) {
      const [first, second] = node.arguments;
      if (ts.isIdentifier(first) && first.text === "env" && ts.isStringLiteral(second)) {
        names.add(second.text);
      }
    }
    if (ts.isPropertyAccessExpression(node) || ts.isElementAccessExpression(node)) {
      const target = node.expression.getText();
      const key = ts.isPropertyAccessExpression(node)
        ? node.name.text
        : ts.isStringLiteral(node.argumentExpression)
          ? node.argumentExpression.text
          : undefined;
      if (key && (target === "process.env" || (inConfig && target === "env"))) names.add(key);
    }
    node.forEachChild((child) => {
      visit(child, inConfig);
    });
  };
  const walk = (dir: string): string[] =>
    readdirSync(path.join(ROOT, dir), { withFileTypes: true }).flatMap((e) =>
      e.isDirectory() ? walk(path.join(dir, e.name)) : e.name.endsWith(".ts") ? [path.join(dir, e.name)] : [],
    );
  for (const file of ["lib", "platform", "services", "main"].flatMap(walk)) {
    const sf = ts.createSourceFile(file, read(file), ts.ScriptTarget.ES2022, true);
    visit(sf, file === path.join("platform", "config.ts"));
  }
  return names;
}

describe("k8s manifests: configuration", () => {
  /** Set per pod in each Deployment (not shared). */
  const PER_POD = ["SERVICES", "NODEID"];
  /** Set by the image (Dockerfile ENV): the version follows the image, not the ConfigMap. */
  const FROM_IMAGE = ["APP_VERSION", "NODE_ENV"];
  /**
   * Never set in a serving pod: the embedded stand-ins' settings (dev/ is not in the image), and OPERATOR, the
   * name an operator gives the REPL session they start. Listed ahead of the code that reads them is harmless.
   */
  const NOT_FOR_PODS = ["DATA_DIR", "EMBEDDED_PG_PORT", "EMBEDDED_IDP_PORT", "OPERATOR"];

  /** The names the Dockerfile's runtime stage sets with ENV. */
  function imageEnv(): string[] {
    const dockerfile = read("Dockerfile").replace(/\\\n/g, " ");
    const runtime = dockerfile.slice(dockerfile.lastIndexOf("\nFROM "));
    return [...runtime.matchAll(/^ENV\s+(.*)$/gm)].flatMap((m) =>
      [...m[1].matchAll(/([A-Z_][A-Z0-9_]*)=/g)].map((v) => v[1]),
    );
  }

  it("every variable the code reads has exactly one home: ConfigMap, Secret, per pod, image, or none in a pod", () => {
    const used = variablesReadByTheCode();
    // The parse found the readers (guards against a refactor that silently yields an empty list).
    expect(used.has("OIDC_AUDIENCE") && used.has("OIDC_CLIENT_ID") && used.has("MIGRATE_ON_START")).toBe(true);
    const shipped: Record<string, string[]> = {
      configMap: Object.keys(configMap.data!),
      secret: Object.keys(appSecret.stringData!),
      perPod: PER_POD,
    };
    const placed = [...Object.values(shipped).flat(), ...FROM_IMAGE, ...NOT_FOR_PODS];
    expect(placed.filter((v, i) => placed.indexOf(v) !== i)).toEqual([]); // no variable in two homes
    expect([...used].filter((v) => !placed.includes(v)).sort()).toEqual([]); // none forgotten
    // Nothing shipped that the code does not read (a renamed variable leaves no stale key behind).
    expect(
      Object.values(shipped)
        .flat()
        .filter((v) => !used.has(v))
        .sort(),
    ).toEqual([]);
    for (const d of deployments) {
      expect((mainContainer(d).env ?? []).map((e) => e.name).sort()).toEqual([...PER_POD].sort());
    }
    expect(imageEnv().sort()).toEqual(expect.arrayContaining(FROM_IMAGE));
    expect(read("Dockerfile")).toMatch(/^ARG APP_VERSION/m);
    expect(read("Dockerfile")).toMatch(/APP_VERSION=\$\{APP_VERSION\}/);
  });

  it("each Deployment's environment passes loadConfig as a cluster node with the services it names", () => {
    for (const d of deployments) {
      const env = environmentOf(mainContainer(d), `${name(d)}-abc12-xyz34`);
      const config = loadConfig(env);
      expect(config.mode).toBe("cluster");
      expect(config.services).toEqual(env.SERVICES.split(","));
      expect(config.nodeId).toBe(`${name(d)}-abc12-xyz34`);
      expect(config.metricsPort).toBe(opsPort);
      expect(config.oidc.issuer).toBeDefined(); // never the embedded IdP
      expect(config.transporter).toMatch(/^amqps?:\/\//);
      // The init container sees the same environment.
      expect(() => loadConfig(environmentOf(podOf(d).initContainers![0], "pod"))).not.toThrow();
    }
    expect(loadConfig(environmentOf(podOf(jobs[0]).containers[0], "pod")).databaseUrl).toMatch(/autolabs_owner/);
  });

  it("the Secret example holds placeholders only, and every credential-bearing URL is in it, not the ConfigMap", () => {
    for (const s of secrets) {
      for (const [key, value] of Object.entries(s.stringData ?? {})) {
        const secretPart = /^[a-z]+:\/\//.test(value) ? new URL(value).password : value;
        expect({ key, secretPart }).toEqual({ key, secretPart: "CHANGE-ME" });
      }
      expect(s.data).toBeUndefined();
    }
    for (const [key, value] of Object.entries(configMap.data!)) {
      if (/^[a-z]+:\/\//.test(value)) expect({ key, password: new URL(value).password }).toEqual({ key, password: "" });
    }
  });
});
