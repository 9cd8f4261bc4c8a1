/**
 * Platform nodes as child OS processes (`node dist/main/start.js`), for tests where a signal must
 * hit a real process: SIGKILL (a node dies mid-request) and SIGTERM (a graceful stop). Needs
 * `npx tsc -p tsconfig.json` first, like the embedded IdP.
 */
import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { startReadyChild, type ReadyChild } from "../../platform/child-process";

const START_JS = resolve(__dirname, "../../dist/main/start.js");

export interface SpawnedNode {
  name: string;
  pid: number;
  /** The node's output so far (bounded), for failure messages. */
  output(): string;
  /** When a line matching `pattern` was printed (ms since epoch), waiting for it up to timeoutMs. */
  waitForLine(pattern: RegExp, timeoutMs: number): Promise<number>;
  /** Sends the signal; resolves once the process has exited. */
  signal(sig: NodeJS.Signals): Promise<void>;
  exited(): boolean;
  /** The exit code once exited (null while running or when ended by a signal). */
  exitCode(): number | null;
  /** SIGTERM, then SIGKILL after graceMs. Idempotent. */
  stop(graceMs?: number): Promise<void>;
}

export async function spawnNode(name: string, env: Record<string, string>): Promise<SpawnedNode> {
  if (!existsSync(START_JS)) throw new Error(`${START_JS} missing: run \`npx tsc -p tsconfig.json\` before jest`);
  const lines: { at: number; line: string }[] = [];
  const waiters = new Set<() => void>();
  const child: ReadyChild = await startReadyChild({
    name: `platform node ${name}`,
    command: process.execPath,
    args: [START_JS],
    env: { PATH: process.env.PATH ?? "", ...env },
    ready: /platform ready in (\d+) ms/,
    timeoutMs: 60_000,
    onLine: (line) => {
      lines.push({ at: Date.now(), line });
      if (lines.length > 2000) lines.shift();
      for (const w of waiters) w();
    },
  });
  const exitedPromise = new Promise<void>((res) => {
    if (child.child.exitCode !== null || child.child.signalCode !== null) res();
    else child.child.once("exit", () => res());
  });
  return {
    name,
    pid: child.child.pid ?? -1,
    output: () => child.output(),
    waitForLine(pattern, timeoutMs) {
      return new Promise((res, rej) => {
        const check = () => {
          const hit = lines.find((l) => pattern.test(l.line));
          if (!hit) return false;
          cleanup();
          res(hit.at);
          return true;
        };
        const timer = setTimeout(() => {
          cleanup();
          const what = `${name} printed no line matching ${pattern} within ${timeoutMs} ms`;
          rej(new Error(`${what}. Its output:\n${child.output()}`));
        }, timeoutMs);
        const cleanup = () => {
          clearTimeout(timer);
          waiters.delete(onLine);
        };
        const onLine = () => void check();
        if (!check()) waiters.add(onLine);
      });
    },
    async signal(sig) {
      child.child.kill(sig);
      await exitedPromise;
    },
    exited: () => child.child.exitCode !== null || child.child.signalCode !== null,
    exitCode: () => child.child.exitCode,
    stop: (graceMs = 15_000) => child.stop(graceMs),
  };
}
