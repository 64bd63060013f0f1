// This module is browser compatible.
/**
 * A small, dependency-free protobuf codec for the Konnectivity `Packet` (see `client.proto`).
 *
 * The output is byte-for-byte what the Go peers produce: proto3 implicit presence (zero numbers,
 * empty strings and empty bytes are left out, so a DIAL_REQ has no `type` field), int64 as plain
 * varints (negative values take 10 bytes), and the oneof payload always written, even when empty
 * (`DRAIN` is `08 06 42 00`). The decoder skips unknown fields, keeps every int64 exact as a
 * `bigint`, and returns DATA bytes as a view into its input, without copying.
 *
 * @module
 */
import { PacketDecodeError } from "./errors.ts";
import { type DecodedPacket, type Packet, PacketType, type PacketTypeName } from "./packet.ts";

const STR = 0;
const I64 = 1;
const BYTES = 2;
type Kind = typeof STR | typeof I64 | typeof BYTES;
type Fields = Record<string, unknown>;

/** How one packet type maps onto the wire. Payload field `n` is `names[n - 1]`/`kinds[n - 1]`. */
interface Spec {
  readonly type: PacketTypeName;
  readonly typeNumber: number;
  /** Field number of the payload inside `Packet`. */
  readonly field: number;
  /** Name of the oneof member in the proto, used in error messages. */
  readonly key: string;
  /** Property of the TypeScript `Packet` holding the payload; undefined for DRAIN. */
  readonly prop: string | undefined;
  readonly names: readonly string[];
  readonly kinds: readonly Kind[];
  readonly create: () => Fields;
}

const EMPTY = new Uint8Array(0);

function defineSpec(
  type: PacketTypeName,
  field: number,
  key: string,
  fields: [string, Kind][],
): Spec {
  const names = fields.map(([name]) => name);
  const kinds = fields.map(([, kind]) => kind);
  const create = () => {
    const msg: Fields = {};
    for (const [name, kind] of fields) msg[name] = kind === STR ? "" : kind === I64 ? 0n : EMPTY;
    return msg;
  };
  const prop = type === "DRAIN" ? undefined : key;
  return { type, typeNumber: PacketType[type], field, key, prop, names, kinds, create };
}

const SPECS: readonly Spec[] = [
  defineSpec("DIAL_REQ", 2, "dialRequest", [["protocol", STR], ["address", STR], ["random", I64]]),
  defineSpec("DIAL_RSP", 3, "dialResponse", [["error", STR], ["connectId", I64], ["random", I64]]),
  defineSpec("CLOSE_REQ", 5, "closeRequest", [["connectId", I64]]),
  defineSpec("CLOSE_RSP", 6, "closeResponse", [["error", STR], ["connectId", I64]]),
  defineSpec("DATA", 4, "data", [["connectId", I64], ["error", STR], ["data", BYTES]]),
  defineSpec("DIAL_CLS", 7, "closeDial", [["random", I64]]),
  defineSpec("DRAIN", 8, "drain", []),
  // knp extension, only on streams that negotiated flow control.
  defineSpec("KNP_WINDOW", 15, "knpWindow", [["connectId", I64], ["bytes", I64]]),
];
const SPEC_BY_TYPE: (Spec | undefined)[] = [];
for (const s of SPECS) SPEC_BY_TYPE[s.typeNumber] = s;
const SPEC_BY_NAME = new Map(SPECS.map((s) => [s.type as string, s]));
const SPEC_BY_FIELD: (Spec | undefined)[] = [];
for (const s of SPECS) SPEC_BY_FIELD[s.field] = s;

const MAX_SAFE = BigInt(Number.MAX_SAFE_INTEGER);
const INT64_MAX = (1n << 63n) - 1n;
const INT64_MIN = -(1n << 63n);
const TWO_56 = 1n << 56n;
const encoder = new TextEncoder();
// ignoreBOM keeps a leading U+FEFF in the text, as Go does; invalid UTF-8 becomes U+FFFD.
const decoder = new TextDecoder("utf-8", { ignoreBOM: true });
const scratch = new DataView(new ArrayBuffer(8));
// UTF-8 lengths of the string fields, filled by bodyLength() and used by encodePacket().
const strLens = [0, 0, 0];

// ---------------------------------------------------------------------------------- encoding

function varintSize(n: number): number {
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
    const name = spec.names[i];
    const v = msg[name];
    if (spec.kinds[i] === I64) {
      const size = int64Size(v, name);
      if (size !== 0) n += 1 + size;
      continue;
    }
    let len: number;
    if (spec.kinds[i] === STR) {
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

function writeVarint(out: Uint8Array, pos: number, n: number): number {
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
    const v = msg[spec.names[i]];
    const tag = ((i + 1) << 3) | (spec.kinds[i] === I64 ? 0 : 2);
    if (spec.kinds[i] === I64) {
      if (v === 0n) continue;
      out[pos++] = tag;
      pos = writeInt64(out, pos, v as bigint);
    } else if (spec.kinds[i] === STR) {
      const len = strLens[i];
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

// ---------------------------------------------------------------------------------- decoding

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
      b = buf[p++];
      lo |= (b & 0x7f) << shift; // at shift 28 only the low 4 bits land in lo
      if (shift === 28) hi = (b & 0x7f) >>> 4;
      if (b < 0x80) return this.#done(p, lo, hi);
    }
    for (let shift = 3; shift < 32; shift += 7) {
      if (p >= end) throw fail("truncated varint", start);
      b = buf[p++];
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

  /** Reads a field tag; returns `fieldNumber << 3 | wireType` as an unsigned number. */
  tag(end: number): number {
    const at = this.pos;
    let t = this.buf[at];
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
        if (buf[i] >= 0x80) return decoder.decode(buf.subarray(start, end));
        s += String.fromCharCode(buf[i]);
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
    const i = (tag >>> 3) - 1;
    const kind = i < spec.kinds.length ? spec.kinds[i] : -1;
    const wireType = tag & 7;
    if (kind === I64 && wireType === 0) msg[spec.names[i]] = r.int64(end);
    else if (kind === STR && wireType === 2) msg[spec.names[i]] = r.string(r.length(end));
    else if (kind === BYTES && wireType === 2) {
      const len = r.length(end);
      msg[spec.names[i]] = r.buf.subarray(r.pos, r.pos += len);
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
 * import { decodePacket } from "./codec.ts";
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
