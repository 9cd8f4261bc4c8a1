/**
 * The access gate on a real (local) broker: deny by default at boot for every service, and the order of its
 * answers (401 no principal, 403 role, 404 not found or not visible, 403 visible but not allowed).
 */
import { ServiceBroker, type Context, type ServiceSchema } from "moleculer";
import { AccessGate, PUBLIC, entityOf } from "../../platform/access-gate";
import { STAFF, SYSTEM_ONLY, type Decision } from "../../lib/access.rules";
import { brokerOptions } from "../../platform/moleculer.config";
import { loadConfig } from "../../platform/config";
import { systemPrincipal, type Principal, type UserPrincipal } from "../../lib/principal";

interface Doc {
  id: number;
  owner: number;
  shared: boolean;
}
const DOCS: Doc[] = [
  { id: 1, owner: 10, shared: true },
  { id: 2, owner: 10, shared: false },
];

const DocsService: ServiceSchema = {
  name: "docs",
  actions: {
    edit: {
      access: {
        roles: STAFF,
        entity: "Doc",
        load(ctx: Context<Record<string, unknown>>) {
          return Promise.resolve(DOCS.find((d) => d.id === Number(ctx.params.id)) ?? null);
        },
        decide: (p: UserPrincipal, doc: Doc): Decision =>
          doc.owner === p.id ? "allow" : doc.shared ? "forbidden" : "not_found",
      },
      handler(ctx: Context) {
        return { edited: entityOf<Doc>(ctx).id };
      },
    },
    ping: { access: PUBLIC, handler: () => "pong" },
    sweep: { access: { roles: SYSTEM_ONLY }, handler: () => "swept" },
  },
};

let broker: ServiceBroker;
beforeAll(async () => {
  broker = new ServiceBroker({ logger: false, middlewares: [AccessGate] });
  broker.createService(DocsService);
  await broker.start();
});
afterAll(() => broker.stop());

const call = (id: number, user: Principal | null) => broker.call("docs.edit", { id }, { meta: { user } });
const teacher = (id: number): Principal => ({ kind: "user", id, role: "teacher" });

it("refuses to start a service with an action that declares no rule, whatever its mixins", () => {
  const b = new ServiceBroker({ logger: false, middlewares: [AccessGate] });
  expect(() => b.createService({ name: "open", actions: { leak: () => "secret" } })).toThrow(
    /open.leak declares no access rule/,
  );
  const mixin: Partial<ServiceSchema> = { actions: { fromMixin: { handler: () => "secret" } } };
  expect(() =>
    b.createService({ name: "mixed", mixins: [mixin], actions: { ok: { access: PUBLIC, handler: () => 1 } } }),
  ).toThrow(/mixed.fromMixin declares no access rule/);
  expect(() =>
    b.createService({
      name: "odd",
      actions: { x: { access: { roles: [], decide: (): Decision => "allow" }, handler: () => 1 } },
    }),
  ).toThrow(/decide needs access.load/);
});

it("is part of the platform's broker options, first (innermost), so no service can run unguarded", () => {
  const middlewares = brokerOptions(loadConfig({})).middlewares ?? [];
  expect(middlewares[0]).toBe(AccessGate);
  const b = new ServiceBroker({ ...brokerOptions(loadConfig({})), logger: false, transporter: null, cacher: null });
  expect(() => b.createService({ name: "open", actions: { leak: () => "secret" } })).toThrow(/declares no access rule/);
});

it("keeps system-only actions for the system principal", async () => {
  await expect(broker.call("docs.sweep", {}, { meta: { user: teacher(10) } })).rejects.toMatchObject({ code: 403 });
  await expect(broker.call("docs.sweep", {}, { meta: { user: systemPrincipal("test") } })).resolves.toBe("swept");
});

it("leaves the broker's own $node service alone", async () => {
  await expect(broker.call("$node.health")).resolves.toHaveProperty("cpu");
});

it("answers in order: 401, 403 by role, 404, 403 by attribute, then the handler with the loaded object", async () => {
  await expect(call(1, null)).rejects.toMatchObject({ code: 401, type: "UNAUTHORIZED" });
  await expect(call(1, { kind: "user", id: 10, role: "student" })).rejects.toMatchObject({ code: 403 });
  await expect(call(99, teacher(10))).rejects.toMatchObject({ code: 404, message: "Doc not found" });
  await expect(call(2, teacher(11))).rejects.toMatchObject({ code: 404 });
  await expect(call(1, teacher(11))).rejects.toMatchObject({ code: 403 });
  await expect(call(2, teacher(10))).resolves.toEqual({ edited: 2 });
});

it("lets the explicit system principal through and refuses a forged one", async () => {
  await expect(call(2, systemPrincipal("test"))).resolves.toEqual({ edited: 2 });
  await expect(call(2, { kind: "system" } as Principal)).rejects.toMatchObject({ code: 401 });
  await expect(call(2, { kind: "user", id: "10", role: "teacher" } as unknown as Principal)).rejects.toMatchObject({
    code: 401,
  });
});

it("serves public actions to anyone", async () => {
  await expect(broker.call("docs.ping")).resolves.toBe("pong");
});
