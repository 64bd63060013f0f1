/**
 * What both ends of knp's WebSocket (client_websocket.ts, server_websocket.ts) share above the
 * frames: the event types, building the events, calling a handler without letting its exception
 * escape, and the argument checks of `ping()` and `close()`. Byte handling, masking and the
 * closing handshake differ per end and stay there.
 *
 * @module
 */

import { validCloseCode } from "./ws_frame.ts";

/** The event `onmessage` receives. */
export interface WebSocketMessageEvent {
  /** The event type, `"message"`. */ readonly type: string;
  /**
   * A string for text messages; an `ArrayBuffer` (or `Blob`, per `binaryType`) for binary, or a
   * `Uint8Array` view of a pooled buffer from a socket made with pooled messages.
   */
  readonly data: string | ArrayBuffer | Blob | Uint8Array<ArrayBuffer>;
}

/** The event `onpong` receives. */
export interface WebSocketPongEvent {
  /** The event type, `"pong"`. */ readonly type: string;
  /** The pong's payload (a ping's answer echoes the ping's). */
  readonly data: Uint8Array;
}

/** The event `onclose` receives (once per socket). */
export interface WebSocketCloseEvent {
  /** The event type, `"close"`. */ readonly type: string;
  /** The close code (1006 when the connection ended without a close frame). */
  readonly code: number;
  /** The close reason. */
  readonly reason: string;
  /** Both close frames were exchanged and the connection ended in order. */
  readonly wasClean: boolean;
}

/** The event `onerror` receives, right before `onclose`, when the connection failed. */
export interface WebSocketErrorEvent {
  /** The event type, `"error"`. */ readonly type: string;
  /** What went wrong. */
  readonly message?: string;
  /** The underlying error, when there is one. */
  readonly error?: unknown;
}

/** A close code and reason, sent or received. */
export interface CloseInfo {
  /** The close code. */
  code: number;
  /** The close reason. */
  reason: string;
}

/** Calls `handler` with `event` on `target`; an exception goes to `reportError`, not the caller. */
export function dispatch<E>(
  target: unknown,
  handler: ((this: unknown, event: E) => unknown) | null,
  event: E,
): void {
  if (!handler) return;
  try {
    handler.call(target, event);
  } catch (err) {
    reportError(err);
  }
}

/** The `onmessage` event for a received message, delivered as `binaryType` says. */
export function messageEvent(
  data: string | Uint8Array<ArrayBuffer>,
  binaryType: BinaryType,
): WebSocketMessageEvent {
  if (typeof data === "string") return { type: "message", data };
  if (binaryType === "blob") return { type: "message", data: new Blob([data]) };
  // A view of part of a buffer only comes from a parser with pooled messages.
  const whole = data.byteOffset === 0 && data.byteLength === data.buffer.byteLength;
  return { type: "message", data: whole ? data.buffer : data };
}

/** The `onerror` event for a failed connection. */
export function errorEvent(err: unknown): WebSocketErrorEvent {
  return { type: "error", message: err instanceof Error ? err.message : String(err), error: err };
}

/**
 * The `onclose` event: this end's failure code when it failed the connection; else the peer's
 * close frame (clean only when ours went out too); else 1006.
 */
export function closeEvent(
  failure: CloseInfo | undefined,
  received: CloseInfo | undefined,
  closeSent: boolean,
): WebSocketCloseEvent {
  if (failure) return { type: "close", ...failure, wasClean: false };
  return {
    type: "close",
    code: received?.code ?? 1006,
    reason: received?.reason ?? "",
    wasClean: received !== undefined && closeSent,
  };
}

/**
 * Checks a `close()` code.
 * @throws {DOMException} `InvalidAccessError` for a close code an endpoint may not send
 */
export function checkCloseCode(code: number | undefined): void {
  if (code !== undefined && !validCloseCode(code)) {
    throw new DOMException(`invalid close code ${code}`, "InvalidAccessError");
  }
}

/**
 * Checks a `ping()` payload.
 * @throws {RangeError} for a ping payload over 125 bytes
 */
export function checkPingPayload(payload: Uint8Array): void {
  if (payload.length > 125) throw new RangeError("a ping payload is at most 125 bytes");
}
