/**
 * A two-node cluster under concurrent load over the real RabbitMQ: the gateway on one node, auth and the domain
 * services on the other, so every request crosses the transporter twice (token → auth, then the list action).
 * With Moleculer's AMQP default prefetch 1 each node takes one request at a time and this burst runs into the
 * request timeout; with the configured prefetch every request is answered.
 */
import { randomBytes } from "node:crypto";
import {
  REDIS_URL,
  createTestDatabase,
  startGatewayAndDomain,
  type PlatformNode,
  type TestDatabase,
} from "../support/platform";
import { startIdp, type TestIdp } from "../support/idp";
import { ifAssigned } from "../support/cleanup";

const CONCURRENT_REQUESTS = 400;

let db: TestDatabase;
let idp: TestIdp;
let gateway: PlatformNode;
let domain: PlatformNode;
const namespace = `cload-${randomBytes(4).toString("hex")}`;

beforeAll(async () => {
  [db, idp] = await Promise.all([createTestDatabase(), startIdp()]);
  const common = {
    CACHER: REDIS_URL,
    REDIS_URL,
    NAMESPACE: namespace,
    OIDC_ISSUER: idp.issuer,
    // Small enough that a node serialised by prefetch 1 cannot drain the burst in time; the configured
    // prefetch answers it with a wide margin.
    REQUEST_TIMEOUT_MS: "10000",
  };
  ({ gateway, domain } = await startGatewayAndDomain(db.url, namespace, common, ["auth", "courses", "labs"]));
});

afterAll(async () => {
  await ifAssigned(gateway)?.stop();
  await ifAssigned(domain)?.stop();
  await Promise.allSettled([ifAssigned(db)?.drop(), ifAssigned(idp)?.stop()]);
});

it("uses the configured prefetch, not Moleculer's 1", () => {
  expect(gateway.config.amqp.prefetch).toBeGreaterThan(1);
});

it(`answers ${CONCURRENT_REQUESTS} concurrent requests across the nodes, none timed out`, async () => {
  const [teacher, student] = await Promise.all([idp.getToken("teacher"), idp.getToken("student")]);
  const headers = (token: string) => ({ authorization: `Bearer ${token}` });
  // Resolve both users once so the burst measures reads, not first-login upserts.
  for (const t of [teacher.accessToken, student.accessToken]) {
    expect((await fetch(`${gateway.url}/api/v1/auth/me`, { headers: headers(t) })).status).toBe(200);
  }
  const statuses = await Promise.all(
    Array.from({ length: CONCURRENT_REQUESTS }, async (_, i) => {
      const token = i % 2 ? teacher.accessToken : student.accessToken;
      const path = i % 3 === 0 ? "/labs?limit=20" : i % 3 === 1 ? "/courses?limit=20" : "/auth/me";
      const res = await fetch(`${gateway.url}/api/v1${path}`, { headers: headers(token) });
      await res.arrayBuffer();
      return res.status;
    }),
  );
  const counts: Record<number, number> = {};
  for (const s of statuses) counts[s] = (counts[s] ?? 0) + 1;
  expect(counts).toEqual({ 200: CONCURRENT_REQUESTS });
});
