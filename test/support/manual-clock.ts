/** A Clock (lib/clock.ts) that moves only when the test says: advance(ms) runs each timer due, in time order. */
import type { Clock } from "../../lib/clock";

export interface ManualClock extends Clock {
  advance(ms: number): void;
  /** Timers not cancelled. */
  readonly pending: number;
}

export function manualClock(start = Date.UTC(2026, 0, 1)): ManualClock {
  let now = start;
  const timers = new Set<{ at: number; every: number; fn: () => void }>();
  return {
    now: () => now,
    every(ms, fn) {
      const timer = { at: now + ms, every: ms, fn };
      timers.add(timer);
      return { cancel: () => timers.delete(timer) };
    },
    advance(ms) {
      const until = now + ms;
      for (;;) {
        const due = [...timers]
          .filter((t) => t.at <= until)
          .sort((a, b) => a.at - b.at)
          .at(0);
        if (due === undefined) break;
        now = due.at;
        due.at += due.every;
        due.fn();
      }
      now = until;
    },
    get pending() {
      return timers.size;
    },
  };
}
