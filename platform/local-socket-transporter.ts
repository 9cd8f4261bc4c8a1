/**
 * A Moleculer transporter over one Unix domain socket, for the embedded platform: `npm start` (the hub) listens
 * on `<DATA_DIR>/node.sock` and an operator's `npm run repl` (a client) joins it as a node without services.
 *
 * Why not one of Moleculer 0.15's own: TCP binds every interface (tcp-reader.js listens on `{ port }` only)
 * and announces itself by UDP multicast; Redis, NATS, MQTT and AMQP need a server the embedded mode has none of.
 * A socket file is reachable only from this machine, by users the file's mode (0600) allows.
 *
 * Star topology: a client sends every packet to the hub; the hub hands it to its own subscriptions and
 * forwards it to every other client; each receiver keeps what it subscribed to (Moleculer's own topic names).
 * Frames: 4-byte topic length, 4-byte body length, topic, body.
 */
import fs from "node:fs";
import net from "node:net";
import path from "node:path";
import { Transporters } from "moleculer";

/** Where an embedded node listens for REPLs: in its data directory (this machine only, mode 0600). */
export function embeddedSocketPath(dataDir: string): string {
  return path.resolve(dataDir, "node.sock");
}

export interface LocalSocketOptions {
  path: string;
  /** hub: listens (the embedded node); client: connects (the REPL). */
  role: "hub" | "client";
}

/** Frames in, whole packets out; a stream may cut a frame anywhere. */
export class FrameReader {
  private buffer: Buffer = Buffer.alloc(0);
  constructor(private readonly onFrame: (topic: string, body: Buffer) => void) {}

  push(chunk: Buffer): void {
    this.buffer = this.buffer.length ? Buffer.concat([this.buffer, chunk]) : chunk;
    while (this.buffer.length >= 8) {
      const topicLength = this.buffer.readUInt32BE(0);
      const bodyLength = this.buffer.readUInt32BE(4);
      const end = 8 + topicLength + bodyLength;
      if (this.buffer.length < end) return;
      const topic = this.buffer.toString("utf8", 8, 8 + topicLength);
      const body = this.buffer.subarray(8 + topicLength, end);
      this.buffer = this.buffer.subarray(end);
      this.onFrame(topic, body);
    }
  }
}

export function frame(topic: string, body: Buffer): Buffer {
  const t = Buffer.from(topic, "utf8");
  const head = Buffer.alloc(8);
  head.writeUInt32BE(t.length, 0);
  head.writeUInt32BE(body.length, 4);
  return Buffer.concat([head, t, body]);
}

/** Is a process listening on this socket? (A file left by a killed node answers ECONNREFUSED.) */
function socketAnswers(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = net.connect(path);
    s.once("connect", () => {
      s.destroy();
      resolve(true);
    });
    s.once("error", () => resolve(false));
  });
}

export class LocalSocketTransporter extends Transporters.Base {
  private readonly socketPath: string;
  private readonly role: "hub" | "client";
  private server: net.Server | null = null;
  private readonly peers = new Set<net.Socket>();
  /** topic → Moleculer command, for this node's subscriptions. */
  private readonly topics = new Map<string, string>();

  constructor(opts: LocalSocketOptions) {
    super(opts);
    this.socketPath = opts.path;
    this.role = opts.role;
  }

  override async connect(): Promise<void> {
    if (this.role === "hub") await this.listen();
    else await this.dial();
    await this.onConnected();
  }

  private async listen(): Promise<void> {
    if (fs.existsSync(this.socketPath)) {
      if (await socketAnswers(this.socketPath)) {
        throw new Error(`another node of this platform already listens on ${this.socketPath}`);
      }
      fs.unlinkSync(this.socketPath); // left by a node that was killed
    }
    const server = net.createServer((socket) => this.adopt(socket));
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(this.socketPath, () => {
        server.off("error", reject);
        resolve();
      });
    });
    fs.chmodSync(this.socketPath, 0o600);
    this.server = server;
  }

  private async dial(): Promise<void> {
    const socket = net.connect(this.socketPath);
    await new Promise<void>((resolve, reject) => {
      socket.once("connect", resolve);
      socket.once("error", reject);
    });
    socket.on("close", () => {
      if (this.connected) this.logger.error(`the platform node at ${this.socketPath} went away`);
      this.connected = false;
    });
    this.adopt(socket);
  }

  private adopt(socket: net.Socket): void {
    this.peers.add(socket);
    const reader = new FrameReader((topic, body) => {
      // The hub forwards a client's packet to the other clients before keeping what it subscribed to.
      if (this.role === "hub") this.forward(frame(topic, body), socket);
      this.deliver(topic, body);
    });
    socket.on("data", (chunk: Buffer) => reader.push(chunk));
    socket.on("error", (err) => this.logger.debug(`local socket peer: ${err.message}`));
    socket.on("close", () => this.peers.delete(socket));
  }

  private forward(bytes: Buffer, except: net.Socket | null): void {
    for (const peer of this.peers) if (peer !== except && !peer.destroyed) peer.write(bytes);
  }

  private deliver(topic: string, body: Buffer): void {
    const cmd = this.topics.get(topic);
    if (cmd !== undefined) void this.receive(cmd, body);
  }

  override async disconnect(): Promise<void> {
    this.connected = false;
    for (const peer of this.peers) peer.end();
    this.peers.clear();
    const server = this.server;
    this.server = null;
    if (server) await new Promise<void>((resolve) => server.close(() => resolve()));
  }

  override subscribe(cmd: string, nodeID?: string): Promise<void> {
    this.topics.set(this.getTopicName(cmd, nodeID), cmd);
    return Promise.resolve();
  }

  // Moleculer's own balancer is on (hasBuiltInBalancer false): these are never asked for.
  override subscribeBalancedRequest(): Promise<void> {
    return Promise.resolve();
  }
  override subscribeBalancedEvent(): Promise<void> {
    return Promise.resolve();
  }

  override send(topic: string, data: Buffer): Promise<void> {
    this.forward(frame(topic, data), null);
    return Promise.resolve();
  }
}
