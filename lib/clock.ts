/**
 * Time as the code sees it: the current time and repeating timers. Code whose behaviour depends on time passing
 * (keep-alives, expiries) takes a Clock, the real one by default; a test hands it a manual clock
 * (test/support/manual-clock.ts) and moves time on instead of sleeping.
 */
export interface Clock {
  /** Milliseconds since the epoch, as Date.now(). */
  now(): number;
  /** Calls `fn` every `ms` until cancelled; never keeps the process alive by itself. */
  every(ms: number, fn: () => void): { cancel(): void };
}

export const realClock: Clock = {
  now: () => Date.now(),
  every(ms, fn) {
    const timer = setInterval(fn, ms);
    timer.unref();
    return { cancel: () => clearInterval(timer) };
  },
};
