/**
 * Moleculer's AMQP transporter with its socket writes batched. amqplib's multiplexer (node_modules/amqplib/lib/
 * mux.js) writes every frame it has queued with its own `socket.write`: with Nagle off (socketOptions.noDelay,
 * moleculer.config.ts) each publish and each ack is a syscall and a TCP segment of its own, and on loopback the
 * sender's CPU also runs the receiver's TCP path. In a cluster profile those writes were a quarter of every node's
 * busy time. Corking the socket while the multiplexer drains its queues turns one round of frames into one
 * writev; nothing waits for it (the round itself is already one setImmediate batch). After a reconnect, the
 * heartbeats missed during our own outage are not held against the peers (forgiveMissedHeartbeats).
 */
import { Transporters } from "moleculer";
import type { Writable } from "node:stream";

/** amqplib internals used here (0.10.x): the ChannelModel's Connection and its Mux. */
interface AmqplibModel {
  connection?: { muxer?: { out?: Writable; _readIncoming?: () => void } };
}

/** Wraps the multiplexer's drain round in cork/uncork; false if amqplib's internals are not as expected. */
export function batchMuxWrites(model: unknown): boolean {
  const mux = (model as AmqplibModel | null)?.connection?.muxer;
  const out = mux?.out;
  const drainRound = mux?._readIncoming;
  if (!mux || !out || typeof drainRound !== "function" || typeof out.cork !== "function") return false;
  mux._readIncoming = function corkedRound(this: unknown) {
    out.cork();
    try {
      drainRound.call(this);
    } finally {
      out.uncork();
    }
  };
  return true;
}

/** The transit passes an error callback (its reconnect path) that the AMQP typings leave out: passed through. */
// eslint-disable-next-line @typescript-eslint/unbound-method -- applied below with the transporter as `this`
const amqpConnect = Transporters.AMQP.prototype.connect;

export class BatchingAmqpTransporter extends Transporters.AMQP {
  override async connect(...args: unknown[]): Promise<void> {
    await (Reflect.apply(amqpConnect, this, args) as Promise<void>);
    // Every (re)connect makes a new amqplib connection: batch its writes too.
    if (!batchMuxWrites(this.connection)) {
      this.logger.warn("AMQP: amqplib's multiplexer is not the expected one; frames are written one by one");
    }
    if (this.connectionCount > 1) this.forgiveMissedHeartbeats();
  }

  /**
   * Heartbeats missed while our own connection to RabbitMQ was down say nothing about the peers. Without this, a
   * RabbitMQ restart of ~10 s or more let the broker's next heartbeat check (moleculer registry/discoverers/
   * base.js checkRemoteNodes: none for heartbeatTimeout → offline) take every peer out just after the reconnect:
   * their services' routes answered 503 for seconds though everything was up. A peer that really died meanwhile
   * is still taken out one heartbeat timeout after the reconnect.
   */
  private forgiveMissedHeartbeats(): void {
    const now = Math.round(process.uptime());
    for (const node of this.broker.registry.nodes.toArray()) {
      if (!node.local && node.available) node.lastHeartbeatTime = now;
    }
  }
}
