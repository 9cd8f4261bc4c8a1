import type { Service } from "moleculer";

/**
 * Broadcasts the news of a committed write without waiting for delivery: the answer does not wait for the
 * listeners. A transporter failure is logged rather than left an unhandled rejection (which ends the process):
 * the write stands either way.
 */
export function broadcastCommitted(svc: Pick<Service, "broker" | "logger">, event: string, payload: unknown): void {
  svc.broker.broadcast(event, payload).catch((err: unknown) => {
    svc.logger.warn(`event ${event} was not broadcast: ${err instanceof Error ? err.message : String(err)}`);
  });
}
