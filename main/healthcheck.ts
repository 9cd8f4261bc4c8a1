/**
 * The image's HEALTHCHECK: GET /livez on this node's ops port (METRICS_PORT); exit 0 on 200, 1 otherwise.
 * Node instead of curl: the slim image has no curl, and an extra binary is one more thing to patch.
 * Liveness only (the process and its event loop): a neighbour's outage must not mark the container unhealthy.
 */
import http from "node:http";
import { loadConfig } from "../platform/config";

/** Shorter than the HEALTHCHECK --timeout, so a hung server is reported here, not killed by Docker. */
const TIMEOUT_MS = 3_000;

function checkLive(port: number, timeoutMs = TIMEOUT_MS): Promise<string | undefined> {
  return new Promise((resolve) => {
    const req = http.get({ host: "127.0.0.1", port, path: "/livez", timeout: timeoutMs }, (res) => {
      res.resume();
      resolve(res.statusCode === 200 ? undefined : `/livez answered ${String(res.statusCode)}`);
    });
    req.on("timeout", () => req.destroy(new Error(`no answer within ${timeoutMs} ms`)));
    req.on("error", (err) => resolve(`/livez on port ${port}: ${err.message}`));
  });
}

if (require.main === module) {
  const port = loadConfig().metricsPort;
  if (!port) {
    console.error("METRICS_PORT is off: this node has no ops server to check");
    process.exit(1);
  }
  void checkLive(port).then((problem) => {
    if (problem) console.error(problem);
    process.exit(problem ? 1 : 0);
  });
}
