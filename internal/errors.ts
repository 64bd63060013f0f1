/**
 * Typed errors shared by server, agent and client. Every error has a stable `code`; where another
 * error caused it, `cause` carries that one.
 *
 * @module
 */

/** Stable error codes. */
export type KnpErrorCode =
  | "PACKET_DECODE"
  | "PROTOCOL"
  | "DIAL_FAILED"
  | "TUNNEL_CLOSED"
  | "CLOSE_TIMEOUT"
  | "NO_AGENT"
  | "BUFFER_OVERFLOW"
  | "STALLED"
  | "TIMEOUT"
  | "HANDSHAKE"
  | "INVALID_FLAG"
  | "CONFIG";

/** Base class of every knp error. */
export class KnpError extends Error {
  /** Stable, machine-readable error code. */
  readonly code: KnpErrorCode;
  constructor(code: KnpErrorCode, message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "KnpError";
    this.code = code;
  }
}

/** Why a dial failed; mirrors the konnectivity-client reasons. */
export type DialFailureReason =
  | "unknown"
  | "timeout"
  | "context"
  | "endpoint"
  | "dialclosed"
  | "tunnelclosed"
  | "tunnelstarted"
  | "streamsetup";

/** A dial through the tunnel failed. The message keeps the agent's or server's text. */
export class DialError extends KnpError {
  readonly reason: DialFailureReason;
  constructor(message: string, reason: DialFailureReason, options?: ErrorOptions) {
    super("DIAL_FAILED", message, options);
    this.name = "DialError";
    this.reason = reason;
  }
}

/** Bytes on the wire could not be decoded as a Packet. */
export class PacketDecodeError extends KnpError {
  /** Byte offset in the message where decoding failed. */
  readonly offset: number;
  constructor(message: string, offset: number, options?: ErrorOptions) {
    super("PACKET_DECODE", message, options);
    this.name = "PacketDecodeError";
    this.offset = offset;
  }
}

/** Returns a readable message for any thrown value. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
