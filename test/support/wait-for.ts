import { errorText } from "../../services/tasks/relay.rules";

/** Polls `probe` until it gives a value (not null/undefined/false); fails after timeoutMs naming `what`. */
export async function waitFor<T>(
  what: string,
  probe: () => T | null | undefined | false | Promise<T | null | undefined | false>,
  timeoutMs = 15_000,
  intervalMs = 50,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await probe();
      if (v) return v;
    } catch (e) {
      last = e;
    }
    if (Date.now() > deadline)
      throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}${last ? `: ${errorText(last)}` : ""}`);
    await new Promise((r) => setTimeout(r, intervalMs));
  }
}
