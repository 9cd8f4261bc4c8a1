/**
 * A redis-server of a test's own, on a free port, for outage tests (freeze, kill, restart) that must
 * never touch the machine's shared Redis.
 */
import { startReadyChild, type ReadyChild } from "../../platform/child-process";
import { freePort } from "./net";

export interface OwnRedis {
  port: number;
  url(db?: number): string;
  /** SIGSTOP: connections stay open but nothing answers (commands time out). */
  freeze(): void;
  resume(): void;
  /** Gone for good (SIGKILL); start() brings a fresh, empty one up on the same port. */
  kill(): Promise<void>;
  start(): Promise<void>;
}

export async function startOwnRedis(): Promise<OwnRedis> {
  const port = await freePort();
  let server: ReadyChild | undefined;
  const start = async () => {
    server = await startReadyChild({
      name: "redis-server",
      command: "redis-server",
      args: ["--port", String(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
      env: process.env,
      ready: /Ready to accept connections/,
      timeoutMs: 10_000,
    });
  };
  await start();
  return {
    port,
    url: (db = 0) => `redis://127.0.0.1:${port}/${db}`,
    freeze: () => server?.child.kill("SIGSTOP"),
    resume: () => server?.child.kill("SIGCONT"),
    async kill() {
      server?.child.kill("SIGCONT");
      await server?.stop(0);
      server = undefined;
    },
    start,
  };
}
