// This module is browser compatible.
/**
 * A small, dependency-free protobuf codec for the Konnectivity `Packet` (see `client.proto`).
 *
 * The output is byte-for-byte what the Go peers produce: proto3 implicit presence (zero numbers,
 * empty strings and empty bytes are left out, so a DIAL_REQ has no `type` field), int64 as plain
 * varints (negative values take 10 bytes), and the oneof payload always written, even when empty
 * (`DRAIN` is `08 06 42 00`). The decoder (`decode_packet.ts`) skips unknown fields, keeps every int64 exact as a
 * `bigint`, and returns DATA bytes as a view into its input, without copying.
 *
 * @module
 */
import type { Packet } from "./packet.ts";
import { type Fields, I64, OPT, type Spec, SPEC_BY_NAME, STR } from "./packet_spec.ts";

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const INT64_MAX = (1n << 63n) - 1n;
const INT64_MIN = -(1n << 63n);
const TWO_56 = 1n << 56n;
const encoder = new TextEncoder();
const scratch = new DataView(new ArrayBuffer(8));
// UTF-8 lengths of the string fields, filled by bodyLength() and used by encodePacket().
const strLens = [0, 0, 0, 0];

// ---------------------------------------------------------------------------------- encoding

/** Bytes the protobuf varint of `n` takes (a non-negative integer up to 2^53). */
export function varintSize(n: number): number {
  if (n < 0x80) return 1;
  if (n < 0x4000) return 2;
  if (n < 0x200000) return 3;
  if (n < 0x10000000) return 4;
  if (n < 0x800000000) return 5;
  if (n < 0x40000000000) return 6;
  if (n < 0x2000000000000) return 7;
  return 8; // callers never pass more than 2^53
}

/** Bytes taken by the varint of an int64, or 0 for zero (not emitted). */
function int64Size(v: unknown, name: string): number {
  if (typeof v !== "bigint") throw new TypeError(`Field "${name}" must be a bigint`);
  if (v === 0n) return 0;
  if (v > 0n) {
    if (v <= MAX_SAFE) return varintSize(Number(v));
    if (v <= INT64_MAX) return v < TWO_56 ? 8 : 9;
  } else if (v >= INT64_MIN) {
    return 10;
  }
  throw new RangeError(`Field "${name}" is out of the int64 range: ${v}`);
}

function utf8Length(s: string): number {
  let n = s.length;
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x80) continue;
    if (c < 0x800) n += 1;
    else if ((c & 0xfc00) === 0xd800 && (s.charCodeAt(i + 1) & 0xfc00) === 0xdc00) {
      i++;
      n += 2; // two UTF-16 units, four bytes
    } else n += 2; // includes lone surrogates, written as U+FFFD
  }
  return n;
}

function bodyLength(spec: Spec, msg: Fields): number {
  let n = 0;
  for (let i = 0; i < spec.kinds.length; i++) {
    const name = spec.names[i]!; // names and kinds have the same length
    const v = msg[name];
    if (spec.kinds[i] === I64) {
      const size = int64Size(v, name);
      if (size !== 0) n += 1 + size;
      continue;
    }
    let len: number;
    if (spec.kinds[i] === OPT && v === undefined) continue;
    if (spec.kinds[i] === STR || spec.kinds[i] === OPT) {
      if (typeof v !== "string") throw new TypeError(`Field "${name}" must be a string`);
      len = strLens[i] = utf8Length(v);
    } else {
      if (!(v instanceof Uint8Array)) throw new TypeError(`Field "${name}" must be a Uint8Array`);
      len = v.byteLength;
    }
    if (len !== 0) n += 1 + varintSize(len) + len;
  }
  return n;
}

function specAndPayload(p: Packet): [Spec, Fields | undefined] {
  const spec = SPEC_BY_NAME.get(p.type);
  if (spec === undefined) throw new TypeError(`Cannot encode packet type "${p.type}"`);
  if (spec.prop === undefined) return [spec, undefined];
  const msg = (p as unknown as Fields)[spec.prop];
  if (msg === null || typeof msg !== "object") {
    throw new TypeError(`Cannot encode packet type ${p.type} without a ${spec.key} payload`);
  }
  return [spec, msg as Fields];
}

/** Writes the protobuf varint of `n` (up to 2^53) into `out` at `pos`; returns the end. */
export function writeVarint(out: Uint8Array, pos: number, n: number): number {
  while (n >= 0x80) {
    out[pos++] = (n & 0x7f) | 0x80;
    n = n >= 0x80000000 ? Math.floor(n / 128) : n >>> 7;
  }
  out[pos++] = n;
  return pos;
}

function writeInt64(out: Uint8Array, pos: number, v: bigint): number {
  if (v > 0n && v <= MAX_SAFE) return writeVarint(out, pos, Number(v));
  scratch.setBigInt64(0, v, true); // two's complement split without bigint arithmetic
  let lo = scratch.getUint32(0, true);
  let hi = scratch.getUint32(4, true);
  while (hi !== 0 || lo >= 0x80) {
    out[pos++] = (lo & 0x7f) | 0x80;
    lo = ((lo >>> 7) | (hi << 25)) >>> 0;
    hi >>>= 7;
  }
  out[pos++] = lo;
  return pos;
}

/**
 * Returns the number of bytes {@linkcode encodePacket} produces for a packet.
 *
 * @param p The packet.
 * @returns Its encoded size in bytes.
 * @throws {TypeError} If a field has the wrong type or the payload is missing.
 * @throws {RangeError} If an int64 field is outside the int64 range.
 */
export function encodedLength(p: Packet): number {
  const [spec, msg] = specAndPayload(p);
  const body = msg === undefined ? 0 : bodyLength(spec, msg);
  return (spec.typeNumber === 0 ? 0 : 2) + 1 + varintSize(body) + body;
}

/**
 * Serialises a packet to protobuf bytes, exactly as the Go peers do.
 *
 * @example Encode a DATA packet
 * ```ts
 * import assert from "node:assert/strict";
 * import { encodePacket } from "./codec.ts";
 * import { dataPacket } from "./packet.ts";
 * const bytes = encodePacket(dataPacket(1n, new TextEncoder().encode("hi")));
 * assert.deepEqual(bytes, new Uint8Array([0x08, 0x04, 0x22, 0x06, 0x08, 0x01, 0x1a, 0x02, 0x68, 0x69]));
 * ```
 *
 * @param p The packet. DATA bytes are copied into the result once.
 * @returns A new buffer holding exactly the encoded packet.
 * @throws {TypeError} If a field has the wrong type or the payload is missing.
 * @throws {RangeError} If an int64 field is outside the int64 range.
 */
export function encodePacket(p: Packet): Uint8Array {
  const out = new Uint8Array(encodedLength(p));
  encodePacketInto(p, out, 0);
  return out;
}

/**
 * Serialises a packet into `out` at `offset` (which must have {@linkcode encodedLength} bytes of
 * room), so a batch of packets can share one buffer with a single copy of each payload.
 *
 * @returns The offset just past the packet.
 * @throws {TypeError} If a field has the wrong type or the payload is missing.
 * @throws {RangeError} If an int64 field is outside the int64 range, or `out` is too small.
 */
export function encodePacketInto(p: Packet, out: Uint8Array, offset: number): number {
  const [spec, msg] = specAndPayload(p);
  const body = msg === undefined ? 0 : bodyLength(spec, msg);
  if (offset + (spec.typeNumber === 0 ? 0 : 2) + 1 + varintSize(body) + body > out.length) {
    throw new RangeError("encodePacketInto: buffer too small");
  }
  let pos = offset;
  if (spec.typeNumber !== 0) {
    out[pos++] = 0x08; // field 1, varint
    out[pos++] = spec.typeNumber;
  }
  out[pos++] = (spec.field << 3) | 2;
  pos = writeVarint(out, pos, body);
  if (msg === undefined) return pos;
  for (let i = 0; i < spec.kinds.length; i++) {
    const v = msg[spec.names[i]!]; // names and kinds have the same length
    const tag = (spec.numbers[i]! << 3) | (spec.kinds[i] === I64 ? 0 : 2);
    if (spec.kinds[i] === I64) {
      if (v === 0n) continue;
      out[pos++] = tag;
      pos = writeInt64(out, pos, v as bigint);
    } else if (spec.kinds[i] === STR || spec.kinds[i] === OPT) {
      if (v === undefined) continue; // an absent optional string
      const len = strLens[i]!; // bodyLength() set it for this string field
      if (len === 0) continue;
      out[pos++] = tag;
      pos = writeVarint(out, pos, len);
      const s = v as string;
      if (len === s.length && len <= 64) { // ASCII only
        for (let j = 0; j < len; j++) out[pos + j] = s.charCodeAt(j);
      } else encoder.encodeInto(s, out.subarray(pos, pos + len));
      pos += len;
    } else {
      const bytes = v as Uint8Array;
      if (bytes.byteLength === 0) continue;
      out[pos++] = tag;
      pos = writeVarint(out, pos, bytes.byteLength);
      out.set(bytes, pos);
      pos += bytes.byteLength;
    }
  }
  return pos;
}
