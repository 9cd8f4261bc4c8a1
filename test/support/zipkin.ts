/** What Zipkin (or Jaeger's Zipkin receiver) would receive: the exporter POSTs JSON arrays of v2 spans. */
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";

export interface ZipkinSpan {
  traceId: string;
  id: string;
  parentId?: string;
  name: string;
  localEndpoint: { serviceName: string | null };
  tags: Record<string, string>;
}

export interface ZipkinCollector {
  url: string;
  spans: ZipkinSpan[];
  stop(): Promise<void>;
}

export async function startZipkinCollector(): Promise<ZipkinCollector> {
  const spans: ZipkinSpan[] = [];
  const server = createServer((req, res) => {
    let body = "";
    req.on("data", (c: Buffer) => (body += c.toString("utf8")));
    req.on("end", () => {
      if (req.method === "POST" && req.url === "/api/v2/spans") spans.push(...(JSON.parse(body) as ZipkinSpan[]));
      res.writeHead(202);
      res.end();
    });
  });
  await new Promise<void>((r) => server.listen(0, "127.0.0.1", r));
  return {
    url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`,
    spans,
    stop: () =>
      new Promise<void>((r) => {
        server.closeAllConnections();
        server.close(() => r());
      }),
  };
}
