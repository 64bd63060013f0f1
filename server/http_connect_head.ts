/**
 * The HTTP-CONNECT request head: finding its end, checking the target, and parsing it into a
 * {@linkcode ConnectRequest} (or an {@linkcode HttpError} to answer).
 *
 * @module
 */

import { HttpError } from "./http_connect_errors.ts";

/** A parsed CONNECT request head. */
export interface ConnectRequest {
  target: string;
  userAgent: string;
  /** The W3C `traceparent` header, passed on in the DIAL_REQ (see `@knp/transport/dial_trace`). */
  traceparent: string | undefined;
  rest: Uint8Array;
}

/** Finds `\r\n\r\n` at or after `from`; returns the index just past it, or -1. */
export function headEnd(buf: Uint8Array, length: number, from = 0): number {
  for (let i = Math.max(3, from + 3); i < length; i++) {
    if (buf[i] === 10 && buf[i - 1] === 13 && buf[i - 2] === 10 && buf[i - 3] === 13) return i + 1;
  }
  return -1;
}

/** Validates an authority-form target "host:port" / "[v6]:port". */
export function validConnectTarget(target: string): boolean {
  const m = /^(\[[0-9A-Fa-f:.]+\]|[^\s:/?#@\[\]]+):(\d{1,5})$/.exec(target);
  if (!m) return false;
  const port = Number(m[2]);
  return port > 0 && port <= 65535;
}

/** Parses a request head. @throws {HttpError} with the status to answer */
export function parseConnectHead(head: string, rest: Uint8Array): ConnectRequest {
  const lines = head.split("\r\n");
  const requestLine = /^([A-Za-z]+) (\S+) HTTP\/1\.([01])$/.exec(lines[0] ?? "");
  if (!requestLine) throw new HttpError(400, "Bad Request", "malformed HTTP request line");
  const [, method, target, minor] = requestLine;
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    if (line === "") continue;
    const i = line.indexOf(":");
    if (i <= 0) throw new HttpError(400, "Bad Request", "malformed HTTP header line");
    headers.set(line.slice(0, i).trim().toLowerCase(), line.slice(i + 1).trim());
  }
  if (method !== "CONNECT") {
    throw new HttpError(405, "Method Not Allowed", "this proxy only supports CONNECT passthrough");
  }
  if (minor === "1" && !headers.has("host")) {
    throw new HttpError(400, "Bad Request", "missing required Host header");
  }
  if (!validConnectTarget(target!)) {
    throw new HttpError(400, "Bad Request", `invalid CONNECT target ${JSON.stringify(target)}`);
  }
  const traceparent = headers.get("traceparent");
  return { target: target!, userAgent: headers.get("user-agent") ?? "", traceparent, rest };
}
