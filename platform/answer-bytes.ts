/**
 * The JSON bytes of an answer object this node has already serialised (a Redis cache fill, a cache hit), so the
 * HTTP gateway sends those bytes instead of stringifying the same object again: on a cold cached read the
 * answer was serialised twice (for Redis, for HTTP), on a hit parsed and serialised again.
 *
 * Only for the action whose cache made them: the gateway asks with the routed action's name, and a cache key
 * starts with its action's name (Moleculer's `<action>:<params hash>`). An object that another action got from a
 * cached call and changed before answering with it is therefore stringified afresh, never sent as stale bytes.
 * The bytes are exactly JSON.stringify's (Moleculer's JSON serializer is `Buffer.from(JSON.stringify(value))`).
 * A remote caller gets a new object from the transporter, which has none.
 */
interface Serialised {
  json: Buffer;
  /** The action whose cache key these bytes were stored or read under. */
  action: string;
}

const bytesOf = new WeakMap<object, Serialised>();

export function rememberAnswerBytes(answer: unknown, json: Buffer, cacheKey: string): void {
  if (typeof answer !== "object" || answer === null) return;
  // Moleculer's key of an action called without params or meta is its bare name.
  const colon = cacheKey.indexOf(":");
  bytesOf.set(answer, { json, action: colon > 0 ? cacheKey.slice(0, colon) : cacheKey });
}

/** The bytes of `answer` if the cache of `action` made them. */
export function answerBytes(answer: unknown, action: string | null | undefined): Buffer | undefined {
  if (typeof answer !== "object" || answer === null || !action) return undefined;
  const s = bytesOf.get(answer);
  return s?.action === action ? s.json : undefined;
}
