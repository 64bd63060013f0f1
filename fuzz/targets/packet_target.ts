/**
 * Fuzz target `packet`: the protobuf `Packet` codec (`decodePacket`, `encodePacket`,
 * `encodedLength`).
 *
 * Inputs: encodings of random valid packets (kept with the packet), the same mutated, several
 * encodings joined (protobuf merge rules), and random bytes.
 *
 * Invariants: a valid packet encodes to `encodedLength` bytes and decodes back equal to itself;
 * any bytes decode to a packet or throw `PacketDecodeError` with an offset inside the input; a
 * decoded known packet re-encodes, and that encoding is a fixpoint (decodes to the same packet and
 * re-encodes to the same bytes).
 *
 * @module
 */
import {
  decodePacket,
  encodedLength,
  encodePacket,
  type Packet,
  PacketDecodeError,
  PacketType,
  type PacketTypeName,
} from "@knp/proto";
import { concat, mutate } from "../mutate.ts";
import type { Rng } from "../rng.ts";
import { fromHex, invariant, type Target, toHex, unexpected } from "../target.ts";

/** One input: bytes, and the packet they encode when they are an untouched valid encoding. */
export interface PacketInput {
  bytes: Uint8Array;
  packet: Packet | undefined;
}

const TYPES = Object.keys(PacketType) as PacketTypeName[];
const TEXTS = [
  "",
  "tcp",
  "udp",
  "10.0.0.7:10250",
  "[fd00::7]:443",
  "dial timeout",
  "\ufeffbom",
  "é",
  "日本",
  "😀",
  "\ud800",
  "a\udc00b",
  "\u0000",
];

function randomText(rng: Rng): string {
  if (rng.chance(0.5)) return rng.pick(TEXTS);
  let s = "";
  const n = rng.size(80);
  for (let i = 0; i < n; i++) {
    s += String.fromCharCode(rng.chance(0.8) ? rng.range(0x20, 0x7e) : rng.int(0x10000));
  }
  return s;
}

function int64(rng: Rng): bigint {
  const v = rng.u64();
  return rng.chance(0.3) ? BigInt.asIntN(64, v) : BigInt.asIntN(64, -v);
}

/** A random valid packet of any known type. */
export function randomPacket(rng: Rng): Packet {
  const i = () => (rng.chance(0.2) ? 0n : int64(rng));
  const t = () => (rng.chance(0.4) ? "" : randomText(rng));
  switch (rng.pick(TYPES)) {
    case "DIAL_REQ":
      return { type: "DIAL_REQ", dialRequest: { protocol: t(), address: t(), random: i() } };
    case "DIAL_RSP":
      return { type: "DIAL_RSP", dialResponse: { error: t(), connectId: i(), random: i() } };
    case "CLOSE_REQ":
      return { type: "CLOSE_REQ", closeRequest: { connectId: i() } };
    case "CLOSE_RSP":
      return { type: "CLOSE_RSP", closeResponse: { error: t(), connectId: i() } };
    case "DATA":
      return { type: "DATA", data: { connectId: i(), error: t(), data: rng.bytes(rng.size(600)) } };
    case "DIAL_CLS":
      return { type: "DIAL_CLS", closeDial: { random: i() } };
    case "DRAIN":
      return { type: "DRAIN" };
    case "KNP_WINDOW":
      return { type: "KNP_WINDOW", knpWindow: { connectId: i(), bytes: i() } };
  }
}

function generate(rng: Rng): PacketInput {
  const mode = rng.int(10);
  if (mode < 3) {
    const packet = randomPacket(rng);
    return { bytes: encodePacket(packet), packet };
  }
  if (mode < 8) {
    const base = encodePacket(randomPacket(rng));
    return { bytes: mutate(rng, base, encodePacket(randomPacket(rng)), 6), packet: undefined };
  }
  if (mode < 9) {
    const parts = [encodePacket(randomPacket(rng)), encodePacket(randomPacket(rng))];
    if (rng.chance(0.5)) parts.push(rng.bytes(rng.size(8)));
    return { bytes: concat(...parts), packet: undefined };
  }
  return { bytes: rng.bytes(rng.size(64)), packet: undefined };
}

/** Structural equality of decoded values (bigint, string, number, bytes, plain objects). */
export function deepEqual(a: unknown, b: unknown): boolean {
  if (a === b) return true;
  if (a instanceof Uint8Array && b instanceof Uint8Array) {
    if (a.length !== b.length) return false;
    for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
    return true;
  }
  if (typeof a !== "object" || typeof b !== "object" || a === null || b === null) return false;
  const ka = Object.keys(a);
  if (ka.length !== Object.keys(b).length) return false;
  const ra = a as Record<string, unknown>;
  const rb = b as Record<string, unknown>;
  return ka.every((k) => Object.hasOwn(rb, k) && deepEqual(ra[k], rb[k]));
}

/** The packet with every string made well formed (the encoder writes lone surrogates as U+FFFD). */
function wellFormed(p: Packet): Packet {
  const copy = structuredClone(p) as unknown as Record<string, unknown>;
  for (const v of Object.values(copy)) {
    if (typeof v !== "object" || v === null || v instanceof Uint8Array) continue;
    const fields = v as Record<string, unknown>;
    for (const [k, f] of Object.entries(fields)) {
      if (typeof f === "string") fields[k] = f.toWellFormed();
    }
  }
  return copy as unknown as Packet;
}

function checkRoundTrip(packet: Packet, bytes: Uint8Array): void {
  invariant(encodedLength(packet) === bytes.length, "encodedLength differs from the encoding");
  let decoded;
  try {
    decoded = decodePacket(bytes);
  } catch (err) {
    throw unexpected("decodePacket of a valid encoding", err);
  }
  invariant(deepEqual(decoded, wellFormed(packet)), "a valid packet did not round-trip");
}

function checkFixpoint(decoded: Packet): void {
  let again: Uint8Array;
  try {
    again = encodePacket(decoded);
  } catch (err) {
    throw unexpected("encodePacket of a decoded packet", err);
  }
  let twice;
  try {
    twice = decodePacket(again);
  } catch (err) {
    throw unexpected("decodePacket of a re-encoded packet", err);
  }
  invariant(deepEqual(twice, decoded), "a re-encoded packet decodes differently");
  invariant(deepEqual(encodePacket(twice as Packet), again), "re-encoding is not a fixpoint");
}

function check(input: PacketInput): void {
  if (input.packet !== undefined) checkRoundTrip(input.packet, input.bytes);
  let decoded;
  try {
    decoded = decodePacket(input.bytes);
  } catch (err) {
    if (!(err instanceof PacketDecodeError)) throw unexpected("decodePacket", err);
    const ok = Number.isInteger(err.offset) && err.offset >= 0 && err.offset <= input.bytes.length;
    invariant(ok, `PacketDecodeError offset ${err.offset} outside the input`);
    return;
  }
  if (decoded.type === "UNKNOWN") {
    invariant(Number.isInteger(decoded.typeNumber), "UNKNOWN packet without an integer type");
    const known = (Object.values(PacketType) as number[]).includes(decoded.typeNumber);
    invariant(!known, `UNKNOWN packet with the known type number ${decoded.typeNumber}`);
    return;
  }
  checkFixpoint(decoded);
}

function packetToJson(p: Packet): unknown {
  return JSON.parse(JSON.stringify(p, (_k, v) => {
    if (typeof v === "bigint") return { bigint: v.toString() };
    if (v instanceof Uint8Array) return { hex: toHex(v) };
    return v;
  }));
}

function packetFromJson(json: unknown): Packet {
  return JSON.parse(JSON.stringify(json), (_k, v) => {
    if (v !== null && typeof v === "object" && typeof v.bigint === "string") {
      return BigInt(v.bigint);
    }
    if (v !== null && typeof v === "object" && typeof v.hex === "string") return fromHex(v.hex);
    return v;
  }) as Packet;
}

/** The `packet` target. */
export const packetTarget: Target<PacketInput> = {
  name: "packet",
  generate,
  check,
  toJson: (i) => ({ hex: toHex(i.bytes), packet: i.packet && packetToJson(i.packet) }),
  fromJson(json) {
    const j = json as { hex?: unknown; packet?: unknown };
    return { bytes: fromHex(j.hex), packet: j.packet ? packetFromJson(j.packet) : undefined };
  },
};
