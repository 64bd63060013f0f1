/**
 * The message format of knp's WebSocket agent link: `[varint length][Packet]…` inside one binary
 * message ({@linkcode frame}, {@linkcode frameInto}, {@linkcode unframe}). No I/O.
 *
 * @module
 */

import { decodePacket, encodedLength, encodePacketInto, varintSize, writeVarint } from "@knp/proto";
import type { DecodedPacket, Packet } from "@knp/proto";
import { KnpError } from "@knp/core/errors";

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
  const out = new Uint8Array(framedSize(lengths));
  frameInto(packets, lengths, out, 0);
  return out;
}

/** Size of the message {@linkcode frameInto} writes for packets of these encoded lengths. */
export function framedSize(lengths: readonly number[]): number {
  let size = 0;
  for (const len of lengths) size += varintSize(len) + len;
  return size;
}

/**
 * Writes the message of `packets` (whose encoded lengths are `lengths`) into `out` at `offset`,
 * each payload copied once; `out` needs {@linkcode framedSize} bytes of room. Returns the end.
 */
export function frameInto(
  packets: readonly Packet[],
  lengths: readonly number[],
  out: Uint8Array,
  offset: number,
): number {
  let pos = offset;
  for (let i = 0; i < packets.length; i++) {
    pos = writeVarint(out, pos, lengths[i]!);
    pos = encodePacketInto(packets[i]!, out, pos);
  }
  return pos;
}
