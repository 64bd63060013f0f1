/**
 * Typed errors shared by server, agent and client. Every error has a stable `code`; where another
 * error caused it, `cause` carries that one.
 *
 * @module
 */

import type { DialErrorKind } from "./dial_errors.ts";
export { PacketDecodeError } from "@knp/proto";

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
  | "UNAUTHENTICATED"
  | "PERMISSION_DENIED"
  | "POLICY_DENIED"
  | "OVERLOADED"
  | "INVALID_FLAG"
  | "CONFIG";

/** Base class of every knp error. */
export class KnpError extends Error {
  /** Stable, machine-readable error code. */
  readonly code: KnpErrorCode;
  /** An error with a stable `code`; `options.cause` carries the error that caused it. */
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

/** Extra facts about a failed dial (from the server's knp tag, when present). */
export interface DialErrorDetails {
  /** What went wrong, from the shared taxonomy (dial_errors.ts). */
  kind?: DialErrorKind;
  /** The server that reported the failure. */
  serverId?: string;
  /** The agent that reported the failure. */
  agentId?: string;
}

/** A dial through the tunnel failed. The message keeps the agent's or server's text. */
export class DialError extends KnpError {
  /** How the dial ended, as upstream's client reports it. */
  readonly reason: DialFailureReason;
  /** What went wrong, when the server said so or the text tells. */
  readonly kind: DialErrorKind;
  /** The server that reported the failure, when known. */
  readonly serverId: string | undefined;
  /** The agent that reported the failure, when known. */
  readonly agentId: string | undefined;
  /** A failed dial: `message` keeps the peer's text, `reason` says how it ended. */
  constructor(
    message: string,
    reason: DialFailureReason,
    options?: ErrorOptions & DialErrorDetails,
  ) {
    super("DIAL_FAILED", message, options);
    this.name = "DialError";
    this.reason = reason;
    this.kind = options?.kind ?? "unknown";
    this.serverId = options?.serverId;
    this.agentId = options?.agentId;
  }
}

/** Returns a readable message for any thrown value. */
export function errorMessage(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}
