/**
 * The gRPC-over-HTTP/2 pieces above the frames: length-prefixed messages (a {@linkcode
 * MessageDeframer} with a size limit, and the 5-byte prefix), status codes and the mapping from
 * knp's errors to them, and the percent-encoding of `grpc-message`.
 *
 * @module
 */

import { KnpError } from "@knp/core/errors";
import { encodePacket, type Packet, varintSize, writeVarint } from "@knp/proto";
import { takeMessageBuffer } from "../message_pool.ts";

/** gRPC status codes used here. */
export const GrpcStatus = {
  OK: 0,
  CANCELLED: 1,
  UNKNOWN: 2,
  INVALID_ARGUMENT: 3,
  DEADLINE_EXCEEDED: 4,
  PERMISSION_DENIED: 7,
  RESOURCE_EXHAUSTED: 8,
  UNIMPLEMENTED: 12,
  INTERNAL: 13,
  UNAVAILABLE: 14,
  UNAUTHENTICATED: 16,
} as const;

/** Size of a message's length prefix: compressed flag and 32-bit length. */
export const MESSAGE_PREFIX_BYTES = 5;

/** The gRPC status a stream closed with `error` ends with (as grpc_stream.ts maps it). */
export function statusFor(error: Error): number {
  if (error instanceof KnpError) {
    switch (error.code) {
      case "PACKET_DECODE":
      case "PROTOCOL":
        return GrpcStatus.INVALID_ARGUMENT;
      case "HANDSHAKE":
      case "UNAUTHENTICATED":
        return GrpcStatus.UNAUTHENTICATED;
      case "PERMISSION_DENIED":
      case "POLICY_DENIED":
        return GrpcStatus.PERMISSION_DENIED;
      case "BUFFER_OVERFLOW":
      case "OVERLOADED":
        return GrpcStatus.RESOURCE_EXHAUSTED;
      case "TIMEOUT":
        return GrpcStatus.DEADLINE_EXCEEDED;
    }
  }
  return GrpcStatus.UNAVAILABLE;
}

/** Percent-encodes a status message (gRPC's PROTOCOL-HTTP2: bytes outside 0x20..0x7e and `%`). */
export function encodeGrpcMessage(message: string): string {
  const bytes = new TextEncoder().encode(message);
  let out = "";
  for (const b of bytes) {
    if (b >= 0x20 && b <= 0x7e && b !== 0x25) out += String.fromCharCode(b);
    else out += `%${b.toString(16).toUpperCase().padStart(2, "0")}`;
  }
  return out;
}

/** Decodes a percent-encoded status message; malformed escapes are kept as they are. */
export function decodeGrpcMessage(text: string): string {
  if (!text.includes("%")) return text;
  const bytes: number[] = [];
  for (let i = 0; i < text.length; i++) {
    const hex = text.slice(i + 1, i + 3);
    if (text[i] === "%" && /^[0-9a-fA-F]{2}$/.test(hex)) {
      bytes.push(parseInt(hex, 16));
      i += 2;
    } else bytes.push(text.charCodeAt(i) & 0xff);
  }
  return new TextDecoder().decode(Uint8Array.from(bytes));
}

/** Writes the 5-byte prefix of an uncompressed message of `length` bytes at `at`. */
export function writeMessagePrefix(out: Uint8Array, at: number, length: number): void {
  out[at] = 0;
  out[at + 1] = length >>> 24;
  out[at + 2] = (length >>> 16) & 0xff;
  out[at + 3] = (length >>> 8) & 0xff;
  out[at + 4] = length & 0xff;
}

/** A message the deframer refuses: what the peer gets as status and message. */
export class MessageError extends KnpError {
  /** gRPC status to end the stream with. */
  readonly status: number;

  /** A refusal with gRPC `status`. */
  constructor(status: number, message: string) {
    super(status === GrpcStatus.RESOURCE_EXHAUSTED ? "BUFFER_OVERFLOW" : "PROTOCOL", message);
    this.status = status;
  }
}

/**
 * Cuts the DATA bytes of one stream into messages. Every message is a buffer of its own (exact
 * size): the pushed chunks may be views of a read buffer that is reused once `push` returns.
 * Large ones may come from transport/message_pool.ts (`pooled`).
 */
export class MessageDeframer {
  readonly #maxBytes: number;
  #header = new Uint8Array(MESSAGE_PREFIX_BYTES);
  #headerFill = 0;
  #body: Uint8Array | undefined;
  #bodyFill = 0;

  readonly #take: (bytes: number) => Uint8Array;

  /**
   * Accepts messages up to `maxBytes`. `pooled`: large messages come from
   * transport/message_pool.ts (the server; never where the caller's code sees the buffers).
   */
  constructor(maxBytes: number, pooled = false) {
    this.#maxBytes = maxBytes;
    this.#take = pooled ? takeMessageBuffer : (bytes) => new Uint8Array(bytes);
  }

  /** True between messages (no partial message held). */
  get idle(): boolean {
    return this.#headerFill === 0 && this.#body === undefined;
  }

  /**
   * Adds bytes; calls `onMessage` for each message completed.
   * @throws {MessageError} for a compressed or oversized message
   */
  push(chunk: Uint8Array, onMessage: (message: Uint8Array) => void): void {
    let at = 0;
    while (at < chunk.length) {
      if (this.#body === undefined) {
        if (this.#headerFill === 0 && chunk.length - at >= MESSAGE_PREFIX_BYTES) {
          const length = this.#check(chunk, at);
          at += MESSAGE_PREFIX_BYTES;
          if (chunk.length - at >= length) {
            const message = this.#take(length);
            message.set(chunk.subarray(at, at + length));
            onMessage(message);
            at += length;
            continue;
          }
          this.#body = this.#take(length);
          this.#bodyFill = 0;
          continue;
        }
        const take = Math.min(MESSAGE_PREFIX_BYTES - this.#headerFill, chunk.length - at);
        this.#header.set(chunk.subarray(at, at + take), this.#headerFill);
        this.#headerFill += take;
        at += take;
        if (this.#headerFill < MESSAGE_PREFIX_BYTES) return;
        this.#headerFill = 0;
        this.#body = this.#take(this.#check(this.#header, 0));
        this.#bodyFill = 0;
      }
      const take = Math.min(this.#body.length - this.#bodyFill, chunk.length - at);
      this.#body.set(chunk.subarray(at, at + take), this.#bodyFill);
      this.#bodyFill += take;
      at += take;
      if (this.#bodyFill === this.#body.length) {
        const message = this.#body;
        this.#body = undefined;
        onMessage(message);
      }
    }
  }

  #check(bytes: Uint8Array, at: number): number {
    if (bytes[at] !== 0) {
      throw new MessageError(GrpcStatus.INTERNAL, "compressed message without grpc-encoding");
    }
    const length = ((bytes[at + 1]! << 24) >>> 0) + ((bytes[at + 2]! << 16) |
      (bytes[at + 3]! << 8) | bytes[at + 4]!);
    if (length > this.#maxBytes) {
      throw new MessageError(
        GrpcStatus.RESOURCE_EXHAUSTED,
        `received message larger than max (${length} vs. ${this.#maxBytes})`,
      );
    }
    return length;
  }
}

/** DATA payloads from this size on are queued as a view (the message head is built apart). */
export const VIEW_MIN_BYTES = 4096;

/**
 * The bytes of a DATA packet's gRPC message that precede its payload: the 5-byte prefix and the
 * packet's protobuf fields up to the payload's length (DATA's `data` is its last field), so that
 * `head + payload` is the whole message and the payload needs no copy. Undefined for another
 * packet or a payload under {@linkcode VIEW_MIN_BYTES}.
 */
export function dataMessageHead(packet: Packet): Uint8Array | undefined {
  if (packet.type !== "DATA") return undefined;
  const size = packet.data.data.byteLength;
  if (size < VIEW_MIN_BYTES) return undefined;
  // The packet without its payload: [type field][Data tag][varint body][fields before `data`].
  const meta = encodePacket({ type: "DATA", data: { ...packet.data, data: EMPTY } });
  let at = 2; // past the type field (08 04)
  const tag = meta[at++]!;
  let fields = 0;
  for (let shift = 0;; shift += 7) {
    const b = meta[at++]!;
    fields += (b & 0x7f) * 2 ** shift;
    if (b < 0x80) break;
  }
  const body = fields + 1 + varintSize(size) + size;
  const proto = 3 + varintSize(body) + body;
  const head = new Uint8Array(MESSAGE_PREFIX_BYTES + proto - size);
  writeMessagePrefix(head, 0, proto);
  let pos = MESSAGE_PREFIX_BYTES;
  head[pos++] = meta[0]!;
  head[pos++] = meta[1]!;
  head[pos++] = tag;
  pos = writeVarint(head, pos, body);
  head.set(meta.subarray(at), pos);
  pos += meta.length - at;
  head[pos++] = DATA_BYTES_TAG;
  writeVarint(head, pos, size);
  return head;
}

const EMPTY = new Uint8Array(0);
/** Field 3 (`Data.data`), length-delimited. */
const DATA_BYTES_TAG = (3 << 3) | 2;
