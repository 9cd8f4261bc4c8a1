/**
 * Moleculer's Prometheus reporter without its own HTTP server: the gateway serves the text at GET /metrics,
 * so a node needs no extra port (DESIGN: one port per node otherwise). Metrics of this node only; a node
 * without a gateway exposes its own with METRICS_PORT (Moleculer's reporter on that port).
 */
import { MetricReporters, type MetricRegistry } from "moleculer";

type Labels = Record<string, string>;

export class PrometheusText extends MetricReporters.Prometheus {
  override init(registry: MetricRegistry): void {
    const self = this as unknown as {
      registry: MetricRegistry;
      broker: unknown;
      logger: unknown;
      defaultLabels: Labels;
    };
    self.registry = registry;
    self.broker = registry.broker;
    self.logger = registry.logger;
    self.defaultLabels = { namespace: registry.broker.namespace, nodeID: registry.broker.nodeID };
  }

  override stop(): Promise<void> {
    return Promise.resolve();
  }

  /** The Prometheus exposition text of this node's metrics. */
  text(): string {
    return (this as { generatePrometheusResponse(): string }).generatePrometheusResponse();
  }
}
