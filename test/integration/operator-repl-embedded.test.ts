/**
 * `npm run repl` in embedded mode attaches to the running `npm start` (through `<DATA_DIR>/node.sock`) instead of
 * starting a second platform; `q` ends the REPL alone; the platform's SIGTERM stops its children, so the
 * embedded IdP's port is free again. Both are real processes of `dist/`, the REPL on a pseudo-terminal.
 */
import { existsSync, mkdtempSync, rmSync } from "node:fs";
import net from "node:net";
import { tmpdir } from "node:os";
import path from "node:path";
import { freePort } from "../support/net";
import { startPty } from "../support/pty";
import { spawnNode, type SpawnedNode } from "../support/spawned-nodes";

jest.setTimeout(240_000);

const ROOT = path.resolve(__dirname, "../..");
let dataDir: string;
let node: SpawnedNode;
let env: Record<string, string>;
let idpPort: number;

const replEnv = () => ({ PATH: process.env.PATH ?? "", HOME: dataDir, DATA_DIR: dataDir, OPERATOR: "bob" });

beforeAll(async () => {
  dataDir = mkdtempSync(path.join(tmpdir(), "autolabs-emb-"));
  const port = await freePort();
  idpPort = await freePort();
  env = {
    DATA_DIR: dataDir,
    PORT: String(port),
    EMBEDDED_PG_PORT: String(await freePort()),
    EMBEDDED_IDP_PORT: String(idpPort),
  };
  node = await spawnNode("embedded", env).catch((err: unknown) => {
    rmSync(dataDir, { recursive: true, force: true });
    throw err;
  });
});

afterAll(async () => {
  await node.stop();
  rmSync(dataDir, { recursive: true, force: true });
});

it("attaches to the running embedded platform; q ends the REPL and leaves the platform running", async () => {
  const repl = startPty(process.execPath, [path.join(ROOT, "dist/main/repl.js")], replEnv());
  try {
    await repl.until(
      /Joined autolabs as repl-bob-.*; services: access, api-gateway, auth, courses, lab-instances, labs, tasks\.[\s\S]*autolabs \$ /,
      60_000,
    );
    const whois = await repl.command("whois teacher@autolabs.local", /autolabs \$ /, 30_000);
    expect(whois).toMatch(/^user \d+ {2}teacher@autolabs\.local {2}Demo Teacher\nrole teacher/);
    expect(whois).toMatch(/\n\d+\s+Introduction to Linux\s+owner\n/);
    repl.type("q");
    expect(await repl.exited(20_000)).toBe(0);
  } finally {
    repl.kill();
  }
  await node.waitForLine(/operator bob calls auth\.findUser/, 10_000);
  await node.waitForLine(/Node 'repl-bob-[^']+' disconnected/, 20_000);
  expect(node.exited()).toBe(false);
  expect((await fetch(`http://127.0.0.1:${env.PORT}/api/v1/health`)).status).toBe(200);
});

it("SIGTERM stops the platform and its children: the socket is gone, the IdP's port is free", async () => {
  await node.signal("SIGTERM");
  expect(node.exitCode()).toBe(0);
  expect(existsSync(path.join(dataDir, "node.sock"))).toBe(false);
  await new Promise<void>((resolve, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(idpPort, "127.0.0.1", () => server.close(() => resolve()));
  });
});

it("without a running platform, says how to start one", async () => {
  const repl = startPty(process.execPath, [path.join(ROOT, "dist/main/repl.js")], replEnv());
  try {
    await repl.until(
      /No embedded platform is running here \(.*node\.sock does not exist\): start it with `npm start`\./,
      30_000,
    );
    expect(await repl.exited(20_000)).toBe(1);
  } finally {
    repl.kill();
  }
});
