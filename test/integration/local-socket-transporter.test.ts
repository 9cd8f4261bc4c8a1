/**
 * The embedded node's REPL socket (platform/local-socket-transporter.ts): real brokers on a real Unix socket.
 */
import { mkdtempSync, rmSync, statSync, writeFileSync } from "node:fs";
import { tmpdir } from "node:os";
import path from "node:path";
import { ServiceBroker } from "moleculer";
import { FrameReader, LocalSocketTransporter, frame } from "../../platform/local-socket-transporter";

let dir: string;
const brokers: ServiceBroker[] = [];

function broker(nodeID: string, socket: string, role: "hub" | "client"): ServiceBroker {
  const b = new ServiceBroker({
    nodeID,
    namespace: "sock",
    logger: false,
    transporter: new LocalSocketTransporter({ path: socket, role }),
  });
  brokers.push(b);
  return b;
}

beforeEach(() => {
  dir = mkdtempSync(path.join(tmpdir(), "autolabs-sock-"));
});

afterEach(async () => {
  await Promise.allSettled(brokers.splice(0).map((b) => b.stop()));
  rmSync(dir, { recursive: true, force: true });
});

it("reassembles frames cut anywhere by the stream", () => {
  const got: string[] = [];
  const reader = new FrameReader((topic, body) => got.push(`${topic}=${body.toString()}`));
  const bytes = Buffer.concat([frame("MOL.REQ.a", Buffer.from('{"x":1}')), frame("MOL.EVENT", Buffer.from("é"))]);
  for (let i = 0; i < bytes.length; i += 3) reader.push(bytes.subarray(i, i + 3));
  expect(got).toEqual(['MOL.REQ.a={"x":1}', "MOL.EVENT=é"]);
});

it("lets a client node without services call the hub's services and see its registry; only the owner may connect", async () => {
  const socket = path.join(dir, "node.sock");
  const hub = broker("hub", socket, "hub");
  hub.createService({
    name: "greeter",
    actions: { hello: (ctx) => `hello ${(ctx.params as { name: string }).name}` },
  });
  await hub.start();
  expect(statSync(socket).mode & 0o777).toBe(0o600);

  const client = broker("client", socket, "client");
  await client.start();
  await client.waitForServices(["greeter"], 10_000);
  expect(await client.call("greeter.hello", { name: "ops" })).toBe("hello ops");
  // Two clients: the hub forwards between them too (both see each other as nodes).
  const second = broker("second", socket, "client");
  await second.start();
  await second.waitForServices(["greeter"], 10_000);
  const deadline = Date.now() + 10_000;
  const seen = () => (second.registry.nodes.get("client") as { available: boolean } | undefined)?.available === true;
  while (!seen()) {
    if (Date.now() > deadline) throw new Error("the second client never saw the first");
    await new Promise((r) => setTimeout(r, 50));
  }
  await client.stop();
  await hub.stop();
});

it("refuses a second hub on a live socket and takes over a file left by a killed one", async () => {
  const socket = path.join(dir, "node.sock");
  await broker("first", socket, "hub").start();
  const second = new LocalSocketTransporter({ path: socket, role: "hub" });
  await expect((second as unknown as { listen(): Promise<void> }).listen()).rejects.toThrow(
    /another node of this platform already listens on/,
  );

  const stale = path.join(dir, "stale.sock");
  writeFileSync(stale, ""); // what a SIGKILLed node leaves behind: nobody answers on it
  const hub = broker("hub", stale, "hub");
  await hub.start();
  expect(statSync(stale).isSocket()).toBe(true);
});
