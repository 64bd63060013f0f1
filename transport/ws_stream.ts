/**
 * The knp agent link over a WebSocket: the same Packets as gRPC, framed as
 * `[varint length][Packet]…` inside binary messages. Packets sent in the same turn of the event
 * loop share one message, which saves most of the per-message cost on busy links.
 *
 * Fair sending: the link is shared by every connection of an agent, so what waits to be sent waits
 * in a {@linkcode FairQueue} (per-connection deficit round robin, connections that send little
 * first), and only a bounded amount is handed to the socket ahead of it: at most
 * {@linkcode IN_FLIGHT_BYTES} the peer has not yet processed. The peer's processing is observed
 * with WebSocket pings whose payload is the byte count sent so far; a knp peer answers a ping
 * (with the same payload) after it handled every message before it. So a small message of one
 * connection waits behind at most that much of other connections' bulk data, not behind
 * everything the kernel's socket buffers can hold. Over a socket that cannot ping (Deno's own
 * server-side `WebSocket`) the bound is the socket's `bufferedAmount` instead.
 *
 * Used only between knp servers and agents, always with per-connection flow control, so the
 * receive side needs no transport-level pause: `pause()` only holds delivery back in order.
 *
 * With `keepalive` the stream pings the peer every `intervalMs` and ends with a `TIMEOUT`
 * `KnpError` when nothing (pong or message) arrives within `timeoutMs` of a ping. Pinging needs a
 * socket with `ping()` and `onpong` (the agent's `ClientWebSocket`); over one without (Deno's
 * server-side `WebSocket`, which answers pings by itself but cannot send them: use
 * `Deno.upgradeWebSocket`'s `idleTimeout` there) only incoming messages count as signs of life.
 *
 * @module
 */

import { type DecodedPacket, encodedLength, type Packet, payloadBytes } from "@knp/proto";
import { framedSize, frameInto, unframe } from "./ws_message.ts";
import { errorMessage, KnpError } from "@knp/core/errors";
import type { Timers } from "@knp/core/timers";
import type { KeepaliveOptions, PacketHandler, PacketStream } from "./packet_stream.ts";
import { DoneSignal, SendAccounting } from "./packet_stream.ts";
import { Keepalive } from "./keepalive.ts";
import { FairQueue, packetFlow } from "./fair_queue.ts";
import { giveBackMessageBuffer, isLentMessageBuffer, shareMessageBuffer } from "./message_pool.ts";

/** Largest binary message this side builds. */
const MAX_BATCH = 256 * 1024;
/** Bytes handed to the socket that the peer may not have processed yet (see the module doc). */
export const IN_FLIGHT_BYTES: number = 1024 * 1024;
/** A ping asks for an acknowledgement once at least this many bytes went out since the last. */
const ACK_EVERY = 256 * 1024;
/** Framing overhead counted per packet when scheduling (a varint and the packet's fields). */
const PACKET_OVERHEAD = 32;
/** Largest message accepted (a 4 MiB DATA, like gRPC's limit, plus framing). */
export const MAX_MESSAGE: number = 4 * 1024 * 1024 + 1024;

export { frame, framedSize, frameInto, unframe } from "./ws_message.ts";

/** Options of {@linkcode WebSocketPacketStream}. */
export interface WebSocketPacketStreamOptions {
  /** Ping the peer and end the stream when it goes silent (off by default). */
  keepalive?: KeepaliveOptions | undefined;
  /** The clock of the keepalive. @default realTimers */
  timers?: Timers | undefined;
  /** Largest message accepted, in bytes (`--knp-max-message-size`). @default MAX_MESSAGE */
  maxMessageBytes?: number | undefined;
}

/** A socket that can ping, like the agent's `ClientWebSocket`. */
interface PingingSocket {
  ping(payload?: Uint8Array): void;
  onpong: ((event: { data?: unknown }) => unknown) | null;
}

/**
 * A socket that builds a binary frame around a payload written in place (knp's own
 * `ClientWebSocket` and `ServerWebSocket`): the batch is encoded straight into the frame.
 */
interface FramingSocket {
  sendBinaryWith(length: number, fill: (out: Uint8Array, offset: number) => void): void;
}

function canFrame(ws: WebSocket): ws is WebSocket & FramingSocket {
  return typeof (ws as Partial<FramingSocket>).sendBinaryWith === "function";
}

/** A packet waiting for its turn. */
interface Pending {
  packet: Packet;
  payload: number;
  onSent: (() => void) | undefined;
}

/** The byte count carried by an acknowledgement ping (8 bytes, big-endian float64). */
function ackPayload(sent: number): Uint8Array {
  const out = new Uint8Array(8);
  new DataView(out.buffer).setFloat64(0, sent);
  return out;
}

/** The byte count of a pong that answers an acknowledgement ping, else undefined. */
function ackedBytes(data: unknown): number | undefined {
  const bytes = data instanceof Uint8Array
    ? data
    : data instanceof ArrayBuffer
    ? new Uint8Array(data)
    : undefined;
  if (!bytes || bytes.length !== 8) return undefined;
  const n = new DataView(bytes.buffer, bytes.byteOffset, 8).getFloat64(0);
  return Number.isSafeInteger(n) && n >= 0 ? n : undefined;
}

function canPing(ws: WebSocket): ws is WebSocket & PingingSocket {
  return typeof (ws as Partial<PingingSocket>).ping === "function" && "onpong" in ws;
}

/** A WebSocket (client or server side, already open) as a {@linkcode PacketStream}. */
export class WebSocketPacketStream implements PacketStream {
  readonly peer: string;
  #ws: WebSocket;
  #handler: PacketHandler | undefined;
  #acct = new SendAccounting();
  #queue = new FairQueue<Pending>();
  #pumpScheduled = false;
  /** Whether the peer acknowledges (the socket can ping); else `bufferedAmount` bounds. */
  #acking: boolean;
  /** Message bytes handed to the socket, ever. */
  #sent = 0;
  /** Of those, the bytes the peer acknowledged. */
  #acked = 0;
  /** `#sent` when the last acknowledgement was asked for. */
  #asked = 0;
  #polling = false;
  #inbox: DecodedPacket[] = [];
  #paused = false;
  #closed = false;
  #ended = false;
  #done = new DoneSignal();
  #keepalive: Keepalive | undefined;
  #maxMessage: number;

  /** Carries packets over the open WebSocket `ws`; `peer` names the other side in errors. */
  constructor(ws: WebSocket, peer: string, options: WebSocketPacketStreamOptions = {}) {
    this.#ws = ws;
    this.peer = peer;
    this.#maxMessage = options.maxMessageBytes ?? MAX_MESSAGE;
    this.#acking = canPing(ws);
    if (canPing(ws)) ws.onpong = (event) => this.#onPong(event?.data);
    if (options.keepalive) this.#startKeepalive(options.keepalive, options.timers);
    ws.binaryType = "arraybuffer";
    ws.onmessage = (event) => this.#onMessage(event.data);
    ws.onclose = (event) => {
      const clean = event.code === 1000 || event.code === 1005;
      this.#end(
        clean
          ? undefined
          : new KnpError("TUNNEL_CLOSED", `link closed: ${event.code} ${event.reason}`),
      );
    };
    ws.onerror = () => {};
  }

  get bufferedBytes(): number {
    return this.#acct.buffered;
  }

  get closed(): boolean {
    return this.#closed || this.#ended;
  }

  get done(): Promise<Error | undefined> {
    return this.#done.promise;
  }

  #startKeepalive(options: KeepaliveOptions, timers: Timers | undefined): void {
    this.#keepalive = new Keepalive(this.peer, options, {
      // Keepalive pings carry the byte count too (a peer may answer only the latest ping).
      ping: () => {
        if (this.#acking) this.#ping();
      },
      expired: (error) => this.close(error),
    }, timers);
    this.#keepalive.start();
  }

  start(handler: PacketHandler): void {
    this.#handler = handler;
    if (this.#ended) queueMicrotask(() => handler.onEnd());
    else this.#deliver();
  }

  send(packet: Packet, onSent?: () => void): boolean {
    if (this.closed) return false;
    const payload = payloadBytes(packet);
    this.#queue.push(packetFlow(packet), { packet, payload, onSent }, payload + PACKET_OVERHEAD);
    const ok = this.#acct.add(payload);
    if (this.#queue.bytes >= MAX_BATCH) this.#pump(false);
    else if (!this.#pumpScheduled) {
      this.#pumpScheduled = true;
      queueMicrotask(() => this.#pump(false));
    }
    return ok;
  }

  /** Room for more bytes ahead of the peer (see the module doc). */
  #room(): number {
    const ahead = this.#acking ? this.#sent - this.#acked : this.#ws.bufferedAmount;
    return IN_FLIGHT_BYTES - ahead;
  }

  /**
   * Sends messages of queued packets, in the fair queue's order, while there is room ahead of
   * the peer (`all`: regardless, at close). Each turn builds at most one message of MAX_BATCH.
   */
  #pump(all: boolean): void {
    this.#pumpScheduled = false;
    while (this.#queue.length > 0 && !this.#ended && (all || this.#room() > 0)) {
      if (!this.#sendMessage()) return;
    }
    if (this.#queue.length === 0 || this.#ended) return;
    if (this.#acking) this.#askAck();
    else this.#pollBuffer();
  }

  /** Frames the next batch of the queue into one message and hands it over; false on failure. */
  #sendMessage(): boolean {
    const packets: Packet[] = [];
    const callbacks: (() => void)[] = [];
    let size = 0;
    let payload = 0;
    while (size < MAX_BATCH) {
      const next = this.#queue.shift();
      if (!next) break;
      packets.push(next.packet);
      if (next.onSent) callbacks.push(next.onSent);
      size += next.payload + PACKET_OVERHEAD;
      payload += next.payload;
    }
    let lengths: number[];
    try {
      lengths = packets.map(encodedLength);
    } catch (err) {
      this.#end(new KnpError("PROTOCOL", `cannot encode a packet: ${errorMessage(err)}`));
      return false;
    }
    const length = framedSize(lengths);
    try {
      const ws = this.#ws;
      if (canFrame(ws)) {
        ws.sendBinaryWith(length, (out, at) => frameInto(packets, lengths, out, at));
      } else {
        const message = new Uint8Array(length);
        frameInto(packets, lengths, message, 0);
        ws.send(message);
      }
    } catch (err) {
      this.#end(new KnpError("TUNNEL_CLOSED", `link send failed: ${errorMessage(err)}`));
      return false;
    }
    // The packets are copied into the frame: a pooled message's buffer can be reused.
    for (const packet of packets) {
      if (packet.type === "DATA") giveBackMessageBuffer(packet.data.data);
    }
    this.#sent += length;
    // The socket owns the bytes now; what bounds it is the room ahead of the peer.
    this.#acct.remove(payload);
    for (const cb of callbacks) cb();
    if (this.#acking && this.#sent - this.#asked >= ACK_EVERY) this.#askAck();
    return true;
  }

  /** Pings with the byte count sent so far; the peer's pong acknowledges them. */
  #askAck(): void {
    if (this.#asked !== this.#sent) this.#ping();
  }

  #ping(): void {
    this.#asked = this.#sent;
    try {
      (this.#ws as unknown as PingingSocket).ping(ackPayload(this.#sent));
    } catch { /* closing: the end follows */ }
  }

  #onPong(data: unknown): void {
    this.#keepalive?.alive();
    const acked = ackedBytes(data);
    if (acked === undefined || acked <= this.#acked || acked > this.#sent) return;
    this.#acked = acked;
    if (this.#queue.length > 0 && !this.#pumpScheduled) this.#pump(false);
  }

  /** Without acknowledgements: sends more once the socket's own buffer has room again. */
  #pollBuffer(): void {
    if (this.#polling) return;
    this.#polling = true;
    setTimeout(() => {
      this.#polling = false;
      if (!this.#ended) this.#pump(false);
    }, 1);
  }

  onDrain(callback: () => void): void {
    this.#acct.onDrain(callback);
  }

  pause(): void {
    this.#paused = true;
  }

  resume(): void {
    if (!this.#paused) return;
    this.#paused = false;
    this.#deliver();
  }

  close(error?: Error): void {
    if (this.closed) return;
    this.#closed = true;
    this.#pump(true);
    try {
      if (error) {
        this.#ws.close(
          error instanceof KnpError && error.code === "PACKET_DECODE" ? 1008 : 1011,
          error.message.slice(0, 120),
        );
      } else this.#ws.close(1000);
    } catch { /* already closing */ }
    this.#end(error);
  }

  #onMessage(data: unknown): void {
    if (this.#ended) return;
    this.#keepalive?.alive();
    if (!(data instanceof ArrayBuffer || data instanceof Uint8Array)) {
      return this.close(new KnpError("PROTOCOL", "unexpected text message on the agent link"));
    }
    if (data.byteLength > this.#maxMessage) {
      return this.close(new KnpError("PACKET_DECODE", "message too large"));
    }
    try {
      const bytes = data instanceof Uint8Array ? data : new Uint8Array(data);
      // A pooled message: each DATA packet whose payload is a view of it holds a share.
      const lent = isLentMessageBuffer(bytes);
      let holders = 0;
      for (const packet of unframe(bytes)) {
        this.#inbox.push(packet);
        if (lent && packet.type === "DATA" && packet.data.data.buffer === bytes.buffer) holders++;
      }
      if (lent) shareMessageBuffer(bytes, holders);
    } catch (err) {
      return this.close(
        new KnpError("PACKET_DECODE", `malformed packet: ${errorMessage(err)}`, { cause: err }),
      );
    }
    this.#deliver();
  }

  #deliver(): void {
    const handler = this.#handler;
    if (!handler) return;
    while (!this.#paused && this.#inbox.length > 0 && !this.#ended) {
      handler.onPacket(this.#inbox.shift()!);
    }
  }

  #end(error?: Error): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#keepalive?.stop();
    this.#queue.clear();
    this.#acct.flush();
    this.#done.settle(error);
    this.#inbox = [];
    const handler = this.#handler;
    if (handler) handler.onEnd(error);
  }
}
