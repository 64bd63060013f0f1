/**
 * The knp agent link over a WebSocket: the same Packets as gRPC, framed as
 * `[varint length][Packet]…` inside binary messages. Packets sent in the same turn of the event
 * loop share one message, which saves most of the per-message cost on busy links.
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

import { decodePacket, encodedLength, encodePacketInto } from "@knp/proto";
import type { DecodedPacket, Packet } from "@knp/proto";
import { payloadBytes } from "@knp/proto";
import { errorMessage, KnpError } from "@knp/core/errors";
import type { Timers } from "@knp/core/timers";
import type { KeepaliveOptions, PacketHandler, PacketStream } from "./packet_stream.ts";
import { DoneSignal, SendAccounting } from "./packet_stream.ts";
import { Keepalive } from "./keepalive.ts";

/** Largest binary message this side builds. */
const MAX_BATCH = 256 * 1024;
/** Largest message accepted (a 4 MiB DATA, like gRPC's limit, plus framing). */
export const MAX_MESSAGE: number = 4 * 1024 * 1024 + 1024;

function varintSize(n: number): number {
  let size = 1;
  while (n >= 0x80) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

function writeVarint(out: Uint8Array, pos: number, n: number): number {
  while (n >= 0x80) {
    out[pos++] = (n & 0x7f) | 0x80;
    n = Math.floor(n / 128);
  }
  out[pos++] = n;
  return pos;
}

/** Splits a binary message into packets. @throws {KnpError} on bad framing */
export function* unframe(message: Uint8Array): Generator<DecodedPacket> {
  let pos = 0;
  while (pos < message.length) {
    let len = 0;
    let shift = 1;
    let b: number;
    do {
      if (pos >= message.length || shift > 2 ** 28) {
        throw new KnpError("PACKET_DECODE", "malformed frame length");
      }
      b = message[pos++]!;
      len += (b & 0x7f) * shift;
      shift *= 128;
    } while (b & 0x80);
    if (pos + len > message.length) throw new KnpError("PACKET_DECODE", "frame past message end");
    yield decodePacket(message.subarray(pos, pos + len));
    pos += len;
  }
}

/** Encodes packets into one message, each payload copied once. */
export function frame(packets: readonly Packet[]): Uint8Array {
  const lengths = packets.map(encodedLength);
  let size = 0;
  for (const len of lengths) size += varintSize(len) + len;
  const out = new Uint8Array(size);
  let pos = 0;
  for (let i = 0; i < packets.length; i++) {
    pos = writeVarint(out, pos, lengths[i]!);
    pos = encodePacketInto(packets[i]!, out, pos);
  }
  return out;
}

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
  ping(): void;
  onpong: (() => unknown) | null;
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
  #batch: Packet[] = [];
  #batchBytes = 0;
  #batchPayload = 0;
  #callbacks: (() => void)[] = [];
  #flushScheduled = false;
  #inbox: DecodedPacket[] = [];
  #paused = false;
  #closed = false;
  #ended = false;
  #polling = false;
  #handed = 0;
  #done = new DoneSignal();
  #keepalive: Keepalive | undefined;
  #maxMessage: number;

  /** Carries packets over the open WebSocket `ws`; `peer` names the other side in errors. */
  constructor(ws: WebSocket, peer: string, options: WebSocketPacketStreamOptions = {}) {
    this.#ws = ws;
    this.peer = peer;
    this.#maxMessage = options.maxMessageBytes ?? MAX_MESSAGE;
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
    const ws = this.#ws;
    const pinging = canPing(ws);
    this.#keepalive = new Keepalive(this.peer, options, {
      ping: () => {
        if (pinging) ws.ping();
      },
      expired: (error) => this.close(error),
    }, timers);
    if (pinging) ws.onpong = () => this.#keepalive?.alive();
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
    this.#batch.push(packet);
    this.#batchBytes += payload + 32;
    this.#batchPayload += payload;
    if (onSent) this.#callbacks.push(onSent);
    const ok = this.#acct.add(payload);
    if (this.#batchBytes >= MAX_BATCH) this.#flush();
    else if (!this.#flushScheduled) {
      this.#flushScheduled = true;
      queueMicrotask(() => this.#flush());
    }
    return ok;
  }

  #flush(): void {
    this.#flushScheduled = false;
    if (this.#batch.length === 0 || this.#ended) return;
    let message: Uint8Array;
    try {
      message = frame(this.#batch);
    } catch (err) {
      this.#end(new KnpError("PROTOCOL", `cannot encode a packet: ${errorMessage(err)}`));
      return;
    }
    const payload = this.#batchPayload;
    const callbacks = this.#callbacks;
    this.#batch = [];
    this.#batchBytes = 0;
    this.#batchPayload = 0;
    this.#callbacks = [];
    try {
      this.#ws.send(message);
    } catch (err) {
      this.#end(new KnpError("TUNNEL_CLOSED", `link send failed: ${errorMessage(err)}`));
      return;
    }
    // The WebSocket owns the bytes now; count them until its buffer empties.
    this.#handed += payload;
    for (const cb of callbacks) cb();
    this.#watchBuffer();
  }

  /** Moves handed-over bytes out of the account as the WebSocket's own buffer empties. */
  #watchBuffer(): void {
    if (this.#polling) return;
    const check = () => {
      if (this.#ended) return;
      const inSocket = this.#ws.bufferedAmount;
      if (inSocket <= MAX_BATCH || this.#handed === 0) {
        this.#acct.remove(this.#handed);
        this.#handed = 0;
        this.#polling = false;
        return;
      }
      setTimeout(check, 1);
    };
    this.#polling = true;
    if (this.#ws.bufferedAmount <= MAX_BATCH) queueMicrotask(check);
    else setTimeout(check, 1);
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
    this.#flush();
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
    if (!(data instanceof ArrayBuffer)) {
      return this.close(new KnpError("PROTOCOL", "unexpected text message on the agent link"));
    }
    if (data.byteLength > this.#maxMessage) {
      return this.close(new KnpError("PACKET_DECODE", "message too large"));
    }
    try {
      for (const packet of unframe(new Uint8Array(data))) this.#inbox.push(packet);
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
    this.#acct.flush();
    this.#done.settle(error);
    this.#inbox = [];
    const handler = this.#handler;
    if (handler) handler.onEnd(error);
  }
}
