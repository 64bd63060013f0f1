// This module is browser compatible.
/**
 * The decoding half of the `Packet` codec (see `codec.ts` for the wire format): unknown fields
 * are skipped, every int64 stays exact as a `bigint`, and DATA bytes are a view into the input.
 *
 * @module
 */
import { PacketDecodeError } from "./errors.ts";
import type { DecodedPacket, Packet } from "./packet.ts";
import {
  BYTES,
  type Fields,
  I64,
  OPT,
  type Spec,
  SPEC_BY_FIELD,
  SPEC_BY_TYPE,
  STR,
} from "./packet_spec.ts";

// ignoreBOM keeps a leading U+FEFF in the text, as Go does; invalid UTF-8 becomes U+FFFD.
const decoder = new TextDecoder("utf-8", { ignoreBOM: true });

function fail(message: string, offset: number): PacketDecodeError {
  return new PacketDecodeError(`${message} at offset ${offset}`, offset);
}

/** A cursor over the input; `end` bounds every read to the enclosing message. */
class Reader {
  pos = 0;
  /** Low and high 32 bits (unsigned) of the last varint read. */
  lo = 0;
  hi = 0;
  constructor(readonly buf: Uint8Array) {}

  varint(end: number): void {
    const buf = this.buf;
    const start = this.pos;
    let p = start, lo = 0, hi = 0, b = 0;
    for (let shift = 0; shift < 35; shift += 7) {
      if (p >= end) throw fail("truncated varint", start);
      b = buf[p++]!; // p < end <= buf.length
      lo |= (b & 0x7f) << shift; // at shift 28 only the low 4 bits land in lo
      if (shift === 28) hi = (b & 0x7f) >>> 4;
      if (b < 0x80) return this.#done(p, lo, hi);
    }
    for (let shift = 3; shift < 32; shift += 7) {
      if (p >= end) throw fail("truncated varint", start);
      b = buf[p++]!; // p < end <= buf.length
      if (shift === 31 && b > 1) {
        throw fail(b >= 0x80 ? "varint longer than 10 bytes" : "varint overflowing 64 bits", start);
      }
      hi |= (b & 0x7f) << shift;
      if (b < 0x80) return this.#done(p, lo, hi);
    }
  }

  #done(p: number, lo: number, hi: number): void {
    this.pos = p;
    this.lo = lo >>> 0;
    this.hi = hi >>> 0;
  }

  /**
   * Reads a field tag; returns `fieldNumber << 3 | wireType` as an unsigned number.
   * Callers check `pos < end` (and `end <= buf.length`) first.
   */
  tag(end: number): number {
    const at = this.pos;
    let t = this.buf[at]!;
    if (t < 0x80) this.pos++;
    else {
      this.varint(end);
      if (this.hi !== 0) throw fail("field number above 2^29-1", at);
      t = this.lo;
    }
    if (t >>> 3 === 0) throw fail("invalid field number 0", at);
    return t;
  }

  /** Reads a length prefix and checks that many bytes remain before `end`. */
  length(end: number): number {
    const at = this.pos;
    this.varint(end);
    const len = this.hi * 4294967296 + this.lo;
    if (len > end - this.pos) {
      throw fail(`length ${len} exceeds the ${end - this.pos} remaining bytes`, at);
    }
    return len;
  }

  int64(end: number): bigint {
    this.varint(end);
    const { lo, hi } = this;
    if (hi < 0x200000) return BigInt(hi * 4294967296 + lo);
    return BigInt.asIntN(64, (BigInt(hi) << 32n) | BigInt(lo));
  }

  string(len: number): string {
    const buf = this.buf;
    const start = this.pos;
    const end = (this.pos += len);
    if (len <= 32) {
      let s = "";
      for (let i = start; i < end; i++) {
        // i < end: length() checked that `len` bytes remain in `buf`.
        const c = buf[i]!;
        if (c >= 0x80) return decoder.decode(buf.subarray(start, end));
        s += String.fromCharCode(c);
      }
      return s;
    }
    return decoder.decode(buf.subarray(start, end));
  }

  skip(wireType: number, end: number, tagAt: number): void {
    if (wireType === 0) return this.varint(end);
    if (wireType === 3 || wireType === 4) {
      throw fail(`unsupported group wire type ${wireType}`, tagAt);
    }
    if (wireType !== 1 && wireType !== 2 && wireType !== 5) {
      throw fail(`invalid wire type ${wireType}`, tagAt);
    }
    const n = wireType === 1 ? 8 : wireType === 5 ? 4 : this.length(end);
    if (n > end - this.pos) throw fail("truncated fixed-width field", this.pos);
    this.pos += n;
  }
}

/** Decodes one payload message into `msg` (fields already in `msg` are merged, as protobuf does). */
function decodePayload(r: Reader, end: number, spec: Spec, msg: Fields): Fields {
  while (r.pos < end) {
    const tagAt = r.pos;
    const tag = r.tag(end);
    const i = spec.index[tag >>> 3] ?? -1;
    const kind = i >= 0 ? spec.kinds[i] : -1;
    const wireType = tag & 7;
    // Past this point a known kind means 0 <= i < kinds.length === names.length.
    if (kind === I64 && wireType === 0) msg[spec.names[i]!] = r.int64(end);
    else if ((kind === STR || kind === OPT) && wireType === 2) {
      msg[spec.names[i]!] = r.string(r.length(end));
    } else if (kind === BYTES && wireType === 2) {
      const len = r.length(end);
      msg[spec.names[i]!] = r.buf.subarray(r.pos, r.pos += len);
    } else r.skip(wireType, end, tagAt);
  }
  return msg;
}

/**
 * Parses protobuf bytes into a packet.
 *
 * A packet type this implementation does not know yields `{ type: "UNKNOWN", typeNumber }`.
 * The DATA bytes of the result are a view into `bytes`; copy them before reusing the input.
 *
 * @example Decode a CLOSE_REQ
 * ```ts
 * import assert from "node:assert/strict";
 * import { decodePacket } from "./decode_packet.ts";
 * const p = decodePacket(new Uint8Array([0x08, 0x02, 0x2a, 0x02, 0x08, 0x01]));
 * assert.deepEqual(p, { type: "CLOSE_REQ", closeRequest: { connectId: 1n } });
 * ```
 *
 * @param bytes One protobuf-encoded `Packet` (without gRPC framing).
 * @returns The decoded packet.
 * @throws {PacketDecodeError} If the bytes are malformed, or the payload does not match the
 * packet type.
 */
export function decodePacket(bytes: Uint8Array): DecodedPacket {
  const r = new Reader(bytes);
  const end = bytes.length;
  let typeNumber = 0;
  let payloadSpec: Spec | undefined;
  let payload: Fields | undefined;
  let payloadAt = 0;
  while (r.pos < end) {
    const tagAt = r.pos;
    const tag = r.tag(end);
    const spec = SPEC_BY_FIELD[tag >>> 3];
    if (tag === 0x08) {
      r.varint(end);
      typeNumber = r.lo | 0; // an enum is an int32; Go truncates wider values the same way
    } else if (spec !== undefined && (tag & 7) === 2) {
      const len = r.length(end);
      // The same member again merges into it; a different member replaces it.
      const into = spec === payloadSpec ? payload! : spec.create();
      payload = decodePayload(r, r.pos + len, spec, into);
      payloadSpec = spec;
      payloadAt = tagAt;
    } else r.skip(tag & 7, end, tagAt);
  }
  const spec = typeNumber >= 0 ? SPEC_BY_TYPE[typeNumber] : undefined;
  if (spec === undefined) return { type: "UNKNOWN", typeNumber };
  if (payloadSpec === undefined) {
    throw new PacketDecodeError(`packet type ${spec.type} has no ${spec.key} payload`, end);
  }
  if (payloadSpec !== spec) {
    throw new PacketDecodeError(
      `packet type ${spec.type} carries payload ${payloadSpec.key}`,
      payloadAt,
    );
  }
  if (spec.prop === undefined) return { type: "DRAIN" };
  return { type: spec.type, [spec.prop]: payload } as unknown as Packet;
}
