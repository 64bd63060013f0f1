/**
 * The halves of a native gRPC stream that the client (`client_stream.ts`) and the server
 * (`server_stream.ts`) share: {@linkcode MessageOutbox}, the send queue of length-prefixed
 * messages that the write scheduler takes from within the peer's windows, and
 * {@linkcode MessageInbox}, the receive side that counts DATA against our stream window, deframes
 * messages and delivers them as packets while not paused (the window is credited back only as
 * they are delivered). What ends a call differs between the roles and stays in the stream classes.
 *
 * @module
 */

import { decodePacket, encodedLength, encodePacketInto, payloadBytes } from "@knp/proto";
import type { Packet } from "@knp/proto";
import { errorMessage, KnpError } from "@knp/core/errors";
import type { PacketHandler } from "../packet_stream.ts";
import { SendAccounting } from "../packet_stream.ts";
import { ErrorCode, H2Error } from "./frame.ts";
import { dataMessageHead, MESSAGE_PREFIX_BYTES, MessageDeframer } from "./grpc_message.ts";
import { giveBackMessageBuffer } from "../message_pool.ts";
import { writeMessagePrefix } from "./grpc_message.ts";

/** Packets queued as gRPC messages, taken in pieces by the write scheduler. */
export class MessageOutbox {
  /** Bytes queued and not yet taken. */
  bytes = 0;
  #out: Uint8Array[] = [];
  #outDone: ((() => void) | undefined)[] = [];
  #offset = 0;
  #acct = new SendAccounting();

  /** Payload bytes sent and not yet written. */
  get buffered(): number {
    return this.#acct.buffered;
  }

  /** Queues `packet`; false once the buffered payload passed the high-water mark. */
  push(packet: Packet, onSent: (() => void) | undefined): boolean {
    const bytes = payloadBytes(packet);
    const ok = this.#acct.add(bytes);
    // A bulk payload is queued as a view behind its message head: one copy, into the write.
    const head = dataMessageHead(packet);
    if (head) this.#queue(head, undefined);
    const last = head ? (packet as Packet & { type: "DATA" }).data.data : messageOf(packet);
    // A small DATA payload was copied into its message: its pooled buffer's share goes back now.
    if (!head && packet.type === "DATA") giveBackMessageBuffer(packet.data.data);
    this.#queue(last, () => {
      // Written: a pooled message's buffer (see message_pool.ts) can be reused.
      if (head) giveBackMessageBuffer(last);
      this.#acct.remove(bytes);
      onSent?.();
    });
    return ok;
  }

  #queue(piece: Uint8Array, done: (() => void) | undefined): void {
    this.#out.push(piece);
    this.#outDone.push(done);
    this.bytes += piece.length;
  }

  /** Calls `callback` once the buffered payload fell below the low-water mark. */
  onDrain(callback: () => void): void {
    this.#acct.onDrain(callback);
  }

  /** Takes up to `limit` bytes as `pieces`; callbacks of messages taken whole go to `done`. */
  take(limit: number, pieces: Uint8Array[], done: (() => void)[]): number {
    let taken = 0;
    while (taken < limit && this.#out.length > 0) {
      const head = this.#out[0]!;
      const n = Math.min(limit - taken, head.length - this.#offset);
      pieces.push(head.subarray(this.#offset, this.#offset + n));
      taken += n;
      this.#offset += n;
      if (this.#offset === head.length) {
        this.#out.shift();
        const cb = this.#outDone.shift();
        if (cb) done.push(cb);
        this.#offset = 0;
      }
    }
    this.bytes -= taken;
    return taken;
  }

  /** Drops what is queued and releases the send accounting. */
  clear(): void {
    this.#out = [];
    this.#outDone = [];
    this.#offset = 0;
    this.bytes = 0;
    this.#acct.flush();
  }

  /** Releases the send accounting (the stream ended). */
  flush(): void {
    this.#acct.flush();
  }
}

/** What delivery needs of its stream: whether it ended, and how to close it. */
export interface InboxStream {
  readonly ended: boolean;
  close(error: Error): void;
}

/** Received messages of a stream, delivered as packets while not paused. */
export class MessageInbox {
  /** Set while delivery is held (until `start`, and between `pause` and `resume`). */
  paused = true;
  handler: PacketHandler | undefined;
  #deframer: MessageDeframer;
  #window: number;
  #inbox: Uint8Array[] = [];
  #held = 0;

  /**
   * Messages up to `maxMessageBytes` within our stream window of `window` bytes; `pooled`: see
   * {@linkcode MessageDeframer}.
   */
  constructor(maxMessageBytes: number, window: number, pooled = false) {
    this.#deframer = new MessageDeframer(maxMessageBytes, pooled);
    this.#window = window;
  }

  /** True when no message is partly received. */
  get idle(): boolean {
    return this.#deframer.idle;
  }

  /** True when no message is held for delivery. */
  get empty(): boolean {
    return this.#inbox.length === 0;
  }

  /** Sets our initial window for the stream. */
  set window(bytes: number) {
    this.#window = bytes;
  }

  /** Counts `flowBytes` of DATA on stream `id`. @throws {H2Error} when the peer overran the window */
  charge(id: number, flowBytes: number): void {
    this.#window -= flowBytes;
    if (this.#window < 0) {
      throw new H2Error(ErrorCode.FLOW_CONTROL_ERROR, id, "stream window exceeded");
    }
  }

  /** Holds `flowBytes` until delivered; deframes `data` unless `discard`. @throws {MessageError} */
  accept(data: Uint8Array, flowBytes: number, discard: boolean): void {
    this.#held += flowBytes;
    if (!discard) this.#deframer.push(data, (message) => this.#inbox.push(message));
  }

  /**
   * Delivers held messages to the handler while not paused and `stream` has not ended (a malformed
   * packet closes it). Returns the bytes to credit back once the inbox is empty (our window counts
   * them as free again), or -1 while messages are still held.
   */
  deliver(stream: InboxStream): number {
    const handler = this.handler!;
    while (!this.paused && this.#inbox.length > 0 && !stream.ended) {
      const message = this.#inbox.shift()!;
      let packet;
      try {
        packet = decodePacket(message);
      } catch (err) {
        const reason = err instanceof Error ? err.message : errorMessage(err);
        stream.close(new KnpError("PACKET_DECODE", `malformed packet: ${reason}`, { cause: err }));
        break;
      }
      handler.onPacket(packet);
    }
    if (this.#inbox.length > 0 && !stream.ended) return -1;
    this.#inbox = [];
    const held = this.#held;
    this.#window += held;
    this.#held = 0;
    return held;
  }
}

/** A packet as one length-prefixed gRPC message. */
function messageOf(packet: Packet): Uint8Array {
  const length = encodedLength(packet);
  const message = new Uint8Array(MESSAGE_PREFIX_BYTES + length);
  writeMessagePrefix(message, 0, length);
  encodePacketInto(packet, message, MESSAGE_PREFIX_BYTES);
  return message;
}
