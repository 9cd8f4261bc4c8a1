/**
 * Runs a helper program (the embedded IdP, a test worker) as a child process and waits for the line
 * that says it is ready. Output is kept (bounded) so a failure to start shows why.
 */
import { spawn, type ChildProcess } from "node:child_process";

export interface ReadyChildOptions {
  name: string;
  command: string;
  args: string[];
  env: NodeJS.ProcessEnv;
  cwd?: string;
  /** The output line that means "ready"; its first capture group is returned. */
  ready: RegExp;
  timeoutMs: number;
  /** Forward each output line (e.g. to the platform's logger). */
  onLine?: (line: string) => void;
  /** Run as this user/group (the parent must be root): servers such as postgres refuse to run as root. */
  uid?: number;
  gid?: number;
}

export interface ReadyChild {
  child: ChildProcess;
  /** First capture group of the ready line (or the whole line). */
  readyValue: string;
  output(): string;
  /** SIGTERM, then SIGKILL after `graceMs`; resolves when the process is gone. Idempotent. */
  stop(graceMs?: number): Promise<void>;
}

const OUTPUT_LIMIT = 64 * 1024;

export function startReadyChild(opts: ReadyChildOptions): Promise<ReadyChild> {
  const child = spawn(opts.command, opts.args, {
    env: opts.env,
    cwd: opts.cwd,
    uid: opts.uid,
    gid: opts.gid,
    stdio: ["ignore", "pipe", "pipe"],
  });
  let out = "";
  let pending = "";
  const exited = new Promise<void>((res) => child.once("exit", () => res()));
  const stop = async (graceMs = 5000) => {
    if (child.exitCode !== null || child.signalCode !== null) return;
    child.kill("SIGTERM");
    const killer = setTimeout(() => child.kill("SIGKILL"), graceMs);
    await exited;
    clearTimeout(killer);
  };

  return new Promise<ReadyChild>((resolve, reject) => {
    let settled = false;
    const timer = setTimeout(() => {
      if (settled) return;
      settled = true;
      void stop(1000);
      reject(new Error(`${opts.name} was not ready within ${opts.timeoutMs} ms. Its output:\n${out}`));
    }, opts.timeoutMs);
    const onData = (chunk: Buffer) => {
      const text = chunk.toString();
      out = (out + text).slice(-OUTPUT_LIMIT);
      pending += text;
      const lines = pending.split("\n");
      pending = lines.pop() ?? "";
      for (const line of lines) {
        opts.onLine?.(line);
        const m = opts.ready.exec(line);
        if (m && !settled) {
          settled = true;
          clearTimeout(timer);
          resolve({ child, readyValue: m.at(1) ?? m[0], output: () => out, stop });
        }
      }
    };
    child.stdout.on("data", onData);
    child.stderr.on("data", onData);
    child.once("error", (err) => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(new Error(`${opts.name} could not start: ${err.message}`));
    });
    void exited.then(() => {
      if (settled) return;
      settled = true;
      clearTimeout(timer);
      reject(new Error(`${opts.name} exited (code ${child.exitCode}) before it was ready. Its output:\n${out}`));
    });
  });
}
