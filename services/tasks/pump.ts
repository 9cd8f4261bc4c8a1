/**
 * A background loop that runs one round at a time: on a fixed interval, and at once when woken (an event
 * says there is work). Wakes during a round are coalesced into one more round, never a second concurrent
 * one, so a burst of `tasks.enqueued` events costs one extra round, not one per event. A round returning
 * true ("there is more") is followed by another round right away. Timers are unref'd: a pump never keeps
 * the process alive; stop() waits for the round in progress.
 */
export interface PumpOptions {
  name: string;
  intervalMs: number;
  /** One round; true: run again now (a full batch was processed). Must not throw, but a throw is contained. */
  round: () => Promise<boolean>;
  onError: (err: unknown) => void;
}

export class Pump {
  private timer: NodeJS.Timeout | null = null;
  private running: Promise<void> | null = null;
  private again = false;
  private stopped = false;

  constructor(private readonly opts: PumpOptions) {}

  start(): void {
    if (this.timer || this.stopped) return;
    this.timer = setInterval(() => this.wake(), this.opts.intervalMs);
    this.timer.unref();
    this.wake();
  }

  wake(): void {
    if (this.stopped) return;
    if (this.running) {
      this.again = true;
      return;
    }
    this.running = this.loop().finally(() => {
      this.running = null;
    });
  }

  /** Resolves when the round in progress (if any) and the rounds it asked for are done. */
  async idle(): Promise<void> {
    while (this.running) await this.running;
  }

  private async loop(): Promise<void> {
    do {
      this.again = false;
      let more = false;
      try {
        more = await this.opts.round();
      } catch (err) {
        this.opts.onError(err);
      }
      if (more) this.again = true;
      // Let I/O callbacks run between back-to-back rounds.
      if (this.again) await new Promise<void>((resolve) => setImmediate(resolve));
    } while (this.again && !this.stopped);
  }

  async stop(): Promise<void> {
    this.stopped = true;
    if (this.timer) clearInterval(this.timer);
    this.timer = null;
    await this.running;
  }
}
