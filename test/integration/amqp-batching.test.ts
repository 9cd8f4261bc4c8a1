/**
 * platform/amqp-transporter.ts against a real amqplib connection to RabbitMQ: once batched, the frames one tick
 * queues leave in one socket write (a writev), not one write per frame; the messages still all arrive, in order.
 * Also pins the amqplib internals the batching relies on (a new amqplib version that moves them fails here).
 */
import amqp from "amqplib";
import type { Socket } from "node:net";
import { batchMuxWrites } from "../../platform/amqp-transporter";
import { AMQP_URL } from "../support/servers";
import { waitFor } from "../support/wait-for";

jest.setTimeout(30_000);

interface Counted {
  writes: number;
  writevs: number;
}

/** Counts the socket's write syscalls: net.Socket sends through _write (one chunk) or _writev (corked chunks). */
function countWrites(socket: Socket): Counted {
  const counted = { writes: 0, writevs: 0 };
  const s = socket as unknown as { _write: (...a: unknown[]) => void; _writev: (...a: unknown[]) => void };
  const write = s._write.bind(socket);
  const writev = s._writev.bind(socket);
  s._write = (...a) => {
    counted.writes++;
    write(...a);
  };
  s._writev = (...a) => {
    counted.writevs++;
    writev(...a);
  };
  return counted;
}

async function publishBurst(batched: boolean): Promise<{ counted: Counted; received: string[] }> {
  const model = await amqp.connect(AMQP_URL);
  try {
    if (batched) expect(batchMuxWrites(model)).toBe(true);
    const socket = (model as unknown as { connection: { stream: Socket } }).connection.stream;
    const channel = await model.createChannel();
    const { queue } = await channel.assertQueue("", { exclusive: true, autoDelete: true });
    const received: string[] = [];
    await channel.consume(queue, (m) => m && received.push(m.content.toString()), { noAck: true });
    const counted = countWrites(socket);
    for (let i = 0; i < 20; i++) channel.sendToQueue(queue, Buffer.from(`m${i}`));
    await waitFor("the 20 messages", () => received.length === 20, 10_000);
    return { counted, received };
  } finally {
    await model.close();
  }
}

test("one tick of publishes leaves in one writev once batched, one write per frame before", async () => {
  const plain = await publishBurst(false);
  const batched = await publishBurst(true);
  const order = Array.from({ length: 20 }, (_, i) => `m${i}`);
  expect(plain.received).toEqual(order);
  expect(batched.received).toEqual(order);
  // amqplib as shipped: a write per publish frame.
  expect(plain.counted.writes).toBeGreaterThanOrEqual(20);
  // Batched: the twenty publishes of one tick go out together.
  expect(batched.counted.writevs).toBeGreaterThanOrEqual(1);
  expect(batched.counted.writes + batched.counted.writevs).toBeLessThanOrEqual(3);
});

test("an object that is not amqplib's model is left alone", () => {
  expect(batchMuxWrites({})).toBe(false);
  expect(batchMuxWrites(null)).toBe(false);
  expect(batchMuxWrites({ connection: { muxer: { out: {}, _readIncoming: () => undefined } } })).toBe(false);
});
