/**
 * Carries the request id of the action being served through async calls, so every log line of a request
 * names it, on whichever node the action runs (ctx.requestID travels with remote calls).
 */
import { AsyncLocalStorage } from "node:async_hooks";
import type { Context, Middleware } from "moleculer";

const store = new AsyncLocalStorage<string>();

export function currentRequestId(): string | undefined {
  return store.getStore();
}

type Handler = (ctx: Context) => Promise<unknown>;

export const RequestContextMiddleware: Middleware = {
  name: "RequestContext",
  localAction(next: Handler) {
    return (ctx: Context) => (ctx.requestID ? store.run(ctx.requestID, () => next(ctx)) : next(ctx));
  },
  localEvent(next: Handler) {
    return (ctx: Context) => (ctx.requestID ? store.run(ctx.requestID, () => next(ctx)) : next(ctx));
  },
} as Middleware;
