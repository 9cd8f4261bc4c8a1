/**
 * The JSON bytes of an answer object this node has already serialised (a Redis cache fill, a cache hit), so the
 * HTTP gateway sends those bytes instead of stringifying the same object again: on a cold cached read the
 * answer was serialised twice (for Redis, for HTTP), on a hit parsed and serialised again.
 *
 * Sound because an answer is not changed after its action returned it (nothing between the cacher and the
 * gateway's encoder touches it); the bytes are exactly JSON.stringify's (Moleculer's JSON serializer is
 * `Buffer.from(JSON.stringify(value))`). A remote caller gets a new object from the transporter, which has none.
 */
const bytesOf = new WeakMap<object, Buffer>();

export function rememberAnswerBytes(answer: unknown, json: Buffer): void {
  if (typeof answer === "object" && answer !== null) bytesOf.set(answer, json);
}

export function answerBytes(answer: unknown): Buffer | undefined {
  return typeof answer === "object" && answer !== null ? bytesOf.get(answer) : undefined;
}
