/**
 * The JSON log lines of a cluster node, written in batches: the lines of one event-loop turn leave in one write
 * per stream instead of a synchronous write each (Node writes to a pipe or a file synchronously). At LOGLEVEL=info
 * every request writes its access line: one write syscall per request was ~100 µs of an uncached read's ~470 µs
 * (npm run bench:cost with BENCH_PLATFORM_ENV='{"LOGLEVEL":"info"}').
 *
 * What can be lost: only the lines of the turn in which the process is SIGKILLed. error and fatal lines (and
 * everything queued before them) go out at once, and the queue is flushed when the process exits.
 */
import { formatWithOptions } from "node:util";
import { Loggers } from "moleculer";

type Stream = Pick<NodeJS.WriteStream, "write">;

export class LineBatcher {
  private lines: string[] = [];
  private scheduled = false;

  constructor(private readonly stream: Stream) {}

  push(line: string, now: boolean): void {
    this.lines.push(line);
    if (now) this.flush();
    else if (!this.scheduled) {
      this.scheduled = true;
      setImmediate(() => {
        this.flush();
      });
    }
  }

  flush(): void {
    this.scheduled = false;
    if (this.lines.length === 0) return;
    const chunk = this.lines.join("");
    this.lines = [];
    this.stream.write(chunk);
  }
}

const out = new LineBatcher(process.stdout);
const err = new LineBatcher(process.stderr);
process.on("exit", () => {
  out.flush();
  err.flush();
});

const LEVELS = Loggers.Base.LEVELS;

/** Moleculer's Console logger (same formatter, levels and streams: warn and up on stderr), its writes batched. */
export class BatchedConsoleLogger extends Loggers.Console {
  /** `formatter`: Moleculer calls it with (type, args, bindings, helpers); its typings know only the first two. */
  constructor(opts: { level: string; colors: boolean; formatter: (...args: never[]) => unknown[] }) {
    super(opts as unknown as ConstructorParameters<typeof Loggers.Console>[0]);
  }

  override getLogHandler(
    bindings: Parameters<Loggers.Console["getLogHandler"]>[0],
  ): ((type: string, args: unknown[]) => void) | null {
    const level = this.getLogLevel(bindings.mod);
    if (!level) return null;
    const levelIdx = LEVELS.indexOf(level);
    const formatter = this.getFormatter(bindings);
    return (type, args) => {
      if (LEVELS.indexOf(type) > levelIdx) return;
      const line = formatWithOptions({ colors: false }, ...(formatter(type, args) as unknown[])) + "\n";
      const urgent = type === "error" || type === "fatal";
      if (urgent || type === "warn") err.push(line, urgent);
      else out.push(line, false);
    };
  }
}
