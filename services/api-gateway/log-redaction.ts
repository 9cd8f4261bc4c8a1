/**
 * URLs as they may appear in logs: the query of the login routes (OIDC `code` and `state`, which with the
 * login cookie complete a login) and any secret-bearing query parameter elsewhere keep their names but lose
 * their values. Pure.
 */

const AUTH_PATH = /\/auth\//;
/** Query parameter names that carry credentials or one-time secrets wherever they appear. */
const SECRET_NAME = /token|code|state|secret|password|passwd|session|sid|key|assertion|ticket|signature|credential/i;
const REDACTED = "[redacted]";

export function redactUrl(url: string): string {
  const q = url.indexOf("?");
  if (q < 0) return url;
  const path = url.slice(0, q);
  const all = AUTH_PATH.test(path);
  const query = url
    .slice(q + 1)
    .split("&")
    .map((pair) => {
      const eq = pair.indexOf("=");
      const name = eq < 0 ? pair : pair.slice(0, eq);
      if (eq < 0 && !all) return pair;
      let decoded: string;
      try {
        decoded = decodeURIComponent(name.replace(/\+/g, " "));
      } catch {
        /* a malformed name is redacted below as a secret one would be */
        return `${name}=${REDACTED}`;
      }
      return all || SECRET_NAME.test(decoded) ? `${name}=${REDACTED}` : pair;
    })
    .join("&");
  return `${path}?${query}`;
}
