/**
 * A program on a real pseudo-terminal, driven like an operator at a keyboard: Node has no pty of its own, so
 * python3's `pty` module (Debian's python3, already needed by the Celery worker) forks the program on one and
 * relays bytes both ways. What the program prints comes back with ANSI colours stripped.
 */
import { spawn, type ChildProcessWithoutNullStreams } from "node:child_process";

const BRIDGE = `
import os, pty, select, sys
pid, fd = pty.fork()
if pid == 0:
    os.execvp(sys.argv[1], sys.argv[1:])
inputs = [fd, 0]
while True:
    r, _, _ = select.select(inputs, [], [])
    if fd in r:
        try:
            data = os.read(fd, 65536)
        except OSError:
            data = b""
        if not data:
            break
        os.write(1, data)
    if 0 in r:
        data = os.read(0, 65536)
        if data:
            os.write(fd, data)
        else:
            inputs = [fd]
_, status = os.waitpid(pid, 0)
sys.exit(os.waitstatus_to_exitcode(status))
`;

// eslint-disable-next-line no-control-regex
const ANSI = /\x1b\[[0-9;?]*[A-Za-z]|\x1b[=>]|\r/g;

export interface PtySession {
  /** Everything printed so far, colours stripped. */
  output(): string;
  /** Types a line (Enter included). */
  type(line: string): void;
  /** Waits until the output after `from` matches; returns that part of the output. */
  until(pattern: RegExp, timeoutMs: number, from?: number): Promise<string>;
  /** Types `line` and returns what it printed up to the next prompt. */
  command(line: string, prompt: RegExp, timeoutMs: number): Promise<string>;
  /** Resolves with the exit code once the program ended. */
  exited(timeoutMs: number): Promise<number | null>;
  kill(): void;
}

export function startPty(command: string, args: string[], env: Record<string, string>, cwd?: string): PtySession {
  const child: ChildProcessWithoutNullStreams = spawn("python3", ["-c", BRIDGE, command, ...args], {
    env: { TERM: "dumb", ...env },
    cwd,
  });
  let text = "";
  const waiters = new Set<() => void>();
  const onData = (chunk: Buffer) => {
    text += chunk.toString("utf8").replace(ANSI, "");
    for (const w of waiters) w();
  };
  child.stdout.on("data", onData);
  child.stderr.on("data", onData);
  let exitCode: number | null | undefined;
  child.on("exit", (code) => {
    exitCode = code;
    for (const w of waiters) w();
  });

  const until = (pattern: RegExp, timeoutMs: number, from = 0): Promise<string> =>
    new Promise((resolve, reject) => {
      const check = (): boolean => {
        const part = text.slice(from);
        if (!pattern.test(part)) return false;
        cleanup();
        resolve(part);
        return true;
      };
      const timer = setTimeout(() => {
        cleanup();
        reject(new Error(`no output matching ${pattern} within ${timeoutMs} ms; got:\n${text.slice(from)}`));
      }, timeoutMs);
      const cleanup = () => {
        clearTimeout(timer);
        waiters.delete(onWake);
      };
      const onWake = () => void check();
      if (!check()) waiters.add(onWake);
    });

  return {
    output: () => text,
    until,
    type(line) {
      child.stdin.write(`${line}\r`);
    },
    async command(line, prompt, timeoutMs) {
      const from = text.length;
      child.stdin.write(`${line}\r`);
      // The echo of the line itself, then everything up to the next prompt.
      const part = await until(new RegExp(`${escape(line)}\\n([\\s\\S]*?)${prompt.source}`), timeoutMs, from);
      return new RegExp(`${escape(line)}\\n([\\s\\S]*?)${prompt.source}`).exec(part)?.[1] ?? "";
    },
    exited(timeoutMs) {
      return new Promise((resolve, reject) => {
        if (exitCode !== undefined) {
          resolve(exitCode);
          return;
        }
        const timer = setTimeout(() => reject(new Error(`still running after ${timeoutMs} ms:\n${text}`)), timeoutMs);
        child.once("exit", (code) => {
          clearTimeout(timer);
          resolve(code);
        });
      });
    },
    kill() {
      if (exitCode === undefined) child.kill("SIGKILL");
    },
  };
}

const escape = (s: string) => s.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
