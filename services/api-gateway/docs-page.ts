/**
 * `GET /api/docs`: Swagger UI over this API's OpenAPI document, served from the swagger-ui-dist package
 * (no CDN: the page works offline and behind a strict CSP). Try-it-out calls go to this origin with the
 * browser's session cookie (`withCredentials`), or with a Bearer token entered under Authorize.
 */
import { readFileSync } from "node:fs";
import { dirname, join } from "node:path";
import type { IncomingMessage, ServerResponse } from "node:http";

import { DOCS_PATH } from "../auth/auth.contract";

const ASSETS = {
  "swagger-ui.css": "text/css; charset=utf-8",
  "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
} as const;
type Asset = keyof typeof ASSETS;

/** Read once, on first use: about 1.5 MB that most nodes never serve. */
const cache = new Map<Asset, Buffer>();
function asset(name: Asset): Buffer {
  let body = cache.get(name);
  if (!body) {
    body = readFileSync(join(dirname(require.resolve("swagger-ui-dist/package.json")), name));
    cache.set(name, body);
  }
  return body;
}

function page(specUrl: string): string {
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>AutoLabs API</title>
<link rel="stylesheet" href="${DOCS_PATH}/swagger-ui.css"></head>
<body><div id="swagger-ui" data-spec-url="${specUrl}"></div>
<script src="${DOCS_PATH}/swagger-ui-bundle.js"></script>
<script src="${DOCS_PATH}/init.js"></script>
</body></html>`;
}

// A file, not an inline script: the page's CSP allows scripts from this origin only.
const INIT = `"use strict";
window.ui = SwaggerUIBundle({
  url: document.getElementById("swagger-ui").dataset.specUrl,
  dom_id: "#swagger-ui",
  deepLinking: true,
  persistAuthorization: true,
  withCredentials: true,
  displayOperationId: true,
  presets: [SwaggerUIBundle.presets.apis],
  layout: "BaseLayout"
});
`;

const CSP = [
  "default-src 'self'",
  "script-src 'self'",
  // Swagger UI sets styles inline and draws some icons from data: URLs.
  "style-src 'self' 'unsafe-inline'",
  "img-src 'self' data:",
  "connect-src 'self'",
  "frame-ancestors 'none'",
].join("; ");

function send(res: ServerResponse, type: string, body: string | Buffer, cacheable: boolean): void {
  res.setHeader("Content-Type", type);
  res.setHeader("Content-Security-Policy", CSP);
  res.setHeader("X-Content-Type-Options", "nosniff");
  // The assets change only with the package; the page and its init follow the document.
  res.setHeader("Cache-Control", cacheable ? "public, max-age=86400" : "no-cache");
  res.end(body);
}

/** The ops route's aliases for the docs page and its assets. */
export function docsAliases(specUrl: string): Record<string, (req: IncomingMessage, res: ServerResponse) => void> {
  const path = DOCS_PATH.slice(1);
  return {
    [`GET ${path}`]: (_req, res) => send(res, "text/html; charset=utf-8", page(specUrl), false),
    [`GET ${path}/init.js`]: (_req, res) => send(res, "text/javascript; charset=utf-8", INIT, false),
    ...Object.fromEntries(
      (Object.keys(ASSETS) as Asset[]).map((name) => [
        `GET ${path}/${name}`,
        (_req: IncomingMessage, res: ServerResponse) => send(res, ASSETS[name], asset(name), true),
      ]),
    ),
  };
}
