/**
 * HTTP method semantics moleculer-web lacks: it resolves an OPTIONS without Access-Control-Request-Method as
 * a GET (running the action: a read, even an open SSE stream), and routes HEAD nowhere. Here an OPTIONS is a
 * CORS preflight (moleculer-web's) or a 204 with `Allow`; HEAD runs the GET route, whose body Node drops.
 * Pure: the aliases are passed in.
 */

/** What these functions need of a moleculer-web alias. */
export interface RoutedAlias {
  method: string;
  handler?: unknown;
  match(url: string): unknown;
}

const ORDER = ["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"] as const;

/** The path of a request URL, as moleculer-web matches it (no query, no trailing slash). */
export function routedPath(url: string): string {
  const path = url.split("?")[0] ?? "";
  return path.length > 1 && path.endsWith("/") ? path.slice(0, -1) : path;
}

/**
 * The `Allow` value of a path, or null when no route has it. GET routes also allow HEAD, unless their
 * handler cannot answer one (`noHead`: a stream has no end to answer HEAD with).
 */
export function allowedMethods(
  aliases: readonly RoutedAlias[],
  path: string,
  noHead: (a: RoutedAlias) => boolean,
): string | null {
  const methods = new Set<string>();
  const routed = new Set<string>();
  for (const alias of aliases) {
    // The first alias of a method takes the request (moleculer-web's order): `/lab-instances/events` is the
    // stream, not `/lab-instances/:id`, and the latter's HEAD does not apply to it.
    if (routed.has(alias.method) || !alias.match(path)) continue;
    routed.add(alias.method);
    const all = alias.method === "*" ? ORDER : [alias.method];
    for (const m of all) methods.add(m);
    if (alias.method === "GET" && !noHead(alias)) methods.add("HEAD");
  }
  if (methods.size === 0) return null;
  return [...ORDER.filter((m) => methods.has(m)), "OPTIONS"].join(", ");
}

/** The alias method a request resolves against: HEAD is answered by the GET route. */
export function resolvedMethod(method: string | undefined): string | undefined {
  return method === "HEAD" ? "GET" : method;
}
