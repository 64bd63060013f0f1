// This module is browser compatible.
/**
 * The Konnectivity `Packet` as a TypeScript discriminated union, and builders for each kind.
 *
 * Field names follow the upstream protobuf messages (`random` is the dial ID, `connectId` is the
 * agent-assigned connection ID). Every int64 is a `bigint`: Go clients pick dial IDs with
 * `rand.Int63()`, which exceeds `Number.MAX_SAFE_INTEGER`.
 *
 * @module
 */

/** Numeric values of the `PacketType` enum on the wire. */
export const PacketType = {
  DIAL_REQ: 0,
  DIAL_RSP: 1,
  CLOSE_REQ: 2,
  CLOSE_RSP: 3,
  DATA: 4,
  DIAL_CLS: 5,
  DRAIN: 6,
  /**
   * knp extension: per-connection flow-control credit. Only sent on streams where both sides
   * negotiated it (see `proto/header.ts` FLOW_CONTROL_KEY); upstream peers never see it.
   */
  KNP_WINDOW: 15,
} as const;

/** Name of a known packet type. */
export type PacketTypeName = keyof typeof PacketType;

/** `DialRequest` (Packet field 2). */
export interface DialRequest {
  /** Network of the dial; "tcp" in practice. */
  protocol: string;
  /** "host:port" to dial. */
  address: string;
  /** The dial's id, chosen by the requester; echoed in the DIAL_RSP. */
  random: bigint;
  /**
   * knp extension (field 15, which upstream peers skip as unknown): the W3C `traceparent` of the
   * span that sent the dial, so the next hop's span is its child. Absent unless tracing is on.
   */
  traceparent?: string;
}

/** `DialResponse` (Packet field 3). An empty `error` means success. */
export interface DialResponse {
  /** Why the dial failed; empty on success. */
  error: string;
  /** The connection's id, assigned by the agent (0 when the dial failed). */
  connectId: bigint;
  /** The `random` of the DIAL_REQ this answers. */
  random: bigint;
}

/** `Data` (Packet field 4). */
export interface Data {
  /** The connection the bytes belong to. */
  connectId: bigint;
  /** An error text; upstream peers leave it empty. */
  error: string;
  /** The bytes. */
  data: Uint8Array;
}

/** `CloseRequest` (Packet field 5). */
export interface CloseRequest {
  /** The connection to close. */
  connectId: bigint;
}

/** `CloseResponse` (Packet field 6). */
export interface CloseResponse {
  /** Why closing failed; empty on success. */
  error: string;
  /** The connection that was closed. */
  connectId: bigint;
}

/** `CloseDial` (Packet field 7). */
export interface CloseDial {
  /** The `random` of the pending dial to cancel. */
  random: bigint;
}

/**
 * `KnpWindow` (Packet field 15, knp extension): the receiver of connection `connectId` has passed
 * `bytes` more bytes on, so the sender may send that many more.
 */
export interface KnpWindow {
  /** The connection the window belongs to. */
  connectId: bigint;
  /** How many more bytes the sender may send. */
  bytes: bigint;
}

/** A packet of a known type; the payload always matches the type. */
export type Packet =
  | { type: "DIAL_REQ"; dialRequest: DialRequest }
  | { type: "DIAL_RSP"; dialResponse: DialResponse }
  | { type: "CLOSE_REQ"; closeRequest: CloseRequest }
  | { type: "CLOSE_RSP"; closeResponse: CloseResponse }
  | { type: "DATA"; data: Data }
  | { type: "DIAL_CLS"; closeDial: CloseDial }
  | { type: "DRAIN" }
  | { type: "KNP_WINDOW"; knpWindow: KnpWindow };

/**
 * A packet whose type number this implementation does not know (a newer peer's extension).
 * Receivers ignore it.
 */
export interface UnknownPacket {
  /** Marks a packet of an unknown type. */
  type: "UNKNOWN";
  /** The type number it carried. */
  typeNumber: number;
}

/** What the decoder yields. */
export type DecodedPacket = Packet | UnknownPacket;

/** Builds a DIAL_REQ; a `traceparent` (knp extension) is included only when given. */
export function dialRequest(
  address: string,
  random: bigint,
  protocol = "tcp",
  traceparent?: string,
): Packet {
  const request: DialRequest = { protocol, address, random };
  if (traceparent !== undefined) request.traceparent = traceparent;
  return { type: "DIAL_REQ", dialRequest: request };
}

/** Builds a DIAL_RSP; pass an error text for a failed dial (connectId is then 0). */
export function dialResponse(random: bigint, connectId: bigint, error = ""): Packet {
  return { type: "DIAL_RSP", dialResponse: { error, connectId, random } };
}

/** Builds a DATA packet. The bytes are referenced, not copied. */
export function dataPacket(connectId: bigint, data: Uint8Array): Packet {
  return { type: "DATA", data: { connectId, error: "", data } };
}

/** Builds a CLOSE_REQ. */
export function closeRequest(connectId: bigint): Packet {
  return { type: "CLOSE_REQ", closeRequest: { connectId } };
}

/** Builds a CLOSE_RSP; an empty error means a clean close. */
export function closeResponse(connectId: bigint, error = ""): Packet {
  return { type: "CLOSE_RSP", closeResponse: { error, connectId } };
}

/** Builds a DIAL_CLS (cancel the pending dial with this dial ID). */
export function closeDial(random: bigint): Packet {
  return { type: "DIAL_CLS", closeDial: { random } };
}

/** Builds a KNP_WINDOW credit grant (knp extension; only on negotiated streams). */
export function knpWindow(connectId: bigint, bytes: number | bigint): Packet {
  return { type: "KNP_WINDOW", knpWindow: { connectId, bytes: BigInt(bytes) } };
}

/** Builds a DRAIN. */
export function drain(): Packet {
  return { type: "DRAIN" };
}

/** Bytes of payload a packet carries (DATA bytes; 0 for control packets). */
export function payloadBytes(packet: DecodedPacket): number {
  return packet.type === "DATA" ? packet.data.data.byteLength : 0;
}

/** Picks a random positive int63 dial ID, like Go's `rand.Int63()` (usually above 2^53). */
export function randomDialId(): bigint {
  const buf = new BigUint64Array(1);
  crypto.getRandomValues(buf);
  return (buf[0]! & 0x7fff_ffff_ffff_ffffn) || 1n;
}
