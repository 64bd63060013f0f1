/**
 * Failure answers of the HTTP-CONNECT frontend. kube-apiserver reports only the status line of a
 * failed CONNECT (`code 502: <reason phrase>`), so the reason phrase carries the whole story: the
 * reason, then the knp tag with the kind, the server and the agent —
 * `HTTP/1.1 502 Bad Gateway: dial tcp 10.0.0.7:80: connect: connection refused [knp: kind=dial-refused server=s1 agent=a1]`.
 * The phrase is one line of visible ASCII and spaces, at most {@linkcode MAX_REASON_PHRASE} long;
 * the body repeats it in full, one field a line.
 *
 * @module
 */

import { type DialErrorKind, HTTP_STATUS, parseDialError } from "@knp/core/dial_errors";

/** Longest reason phrase (status text, message and tag). */
export const MAX_REASON_PHRASE = 512;

/** Where a failure came from: the parts of the knp tag. */
export interface FailureOrigin {
  kind?: DialErrorKind | undefined;
  serverId?: string | undefined;
  agentId?: string | undefined;
}

/** An answer that ends a request: status, body text (`message`) and where it came from. */
export class HttpError extends Error {
  /** The one-line reason (the body's first line). */
  readonly reason: string;
  constructor(
    readonly status: number,
    readonly statusText: string,
    message: string,
    readonly origin: FailureOrigin = {},
  ) {
    super(message);
    this.reason = message.split("\n", 1)[0] ?? "";
  }

  /** The dial error kind, for dial failures. */
  get kind(): DialErrorKind | undefined {
    return this.origin.kind;
  }
}

/** Keeps only visible ASCII and spaces (no CR/LF): what a reason phrase may carry. */
function visibleAscii(text: string): string {
  return text.replace(/[^\x20-\x7e]+/g, " ").replace(/ {2,}/g, " ").trim();
}

/** The knp tag of an answer: `[knp: kind=… server=… agent=…]` (the fields that are known). */
function tag(origin: FailureOrigin, serverId: string): string {
  const parts: string[] = [];
  if (origin.kind) parts.push(`kind=${origin.kind}`);
  parts.push(`server=${origin.serverId ?? serverId}`);
  if (origin.agentId) parts.push(`agent=${origin.agentId}`);
  return visibleAscii(`[knp: ${parts.join(" ")}]`);
}

/** The status line's reason phrase: status text, reason and tag; bounded, one line. */
export function reasonPhrase(error: HttpError, serverId: string): string {
  const suffix = ` ${tag(error.origin, serverId)}`;
  const head = `${error.statusText}: `;
  let reason = visibleAscii(error.reason);
  const room = MAX_REASON_PHRASE - head.length - suffix.length;
  if (reason.length > room) reason = reason.slice(0, Math.max(0, room - 3)) + "...";
  return `${head}${reason}${suffix}`;
}

/** The whole answer: status line with the reason phrase, headers and the plain-text body. */
export function responseBytes(error: HttpError, serverId: string): Uint8Array {
  const body = error.message.endsWith("\n") ? error.message : error.message + "\n";
  const extra = error.kind ? `X-Knp-Error-Kind: ${error.kind}\r\n` : "";
  const allow = error.status === 405 ? "Allow: CONNECT\r\n" : "";
  return new TextEncoder().encode(
    `HTTP/1.1 ${error.status} ${reasonPhrase(error, serverId)}\r\n` +
      "Content-Type: text/plain; charset=utf-8\r\nX-Content-Type-Options: nosniff\r\n" +
      `${extra}${allow}Connection: close\r\n\r\n${body}`,
  );
}

/** The answer for a failed dial: status from the taxonomy; reason, kind and IDs in the body. */
export function dialFailure(errorText: string, serverId: string): HttpError {
  const info = parseDialError(errorText);
  const [status, statusText] = HTTP_STATUS[info.kind];
  const origin = { kind: info.kind, serverId: info.serverId ?? serverId, agentId: info.agentId };
  const lines = [
    info.kind === "no-agent" ? `currently no tunnels available: ${info.message}` : info.message,
    `kind: ${info.kind}`,
    `server: ${origin.serverId}`,
  ];
  if (info.agentId) lines.push(`agent: ${info.agentId}`);
  return new HttpError(status, statusText, lines.join("\n") + "\n", origin);
}

/** The answer when too many clients are sending their request heads at once. */
export function overloaded(message: string, serverId: string): HttpError {
  const body = `${message}\nkind: server-overloaded\nserver: ${serverId}\n`;
  return new HttpError(503, "Service Unavailable", body, { kind: "server-overloaded", serverId });
}
