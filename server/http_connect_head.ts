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

/** The request line: method, request-target, HTTP minor version. */
const REQUEST_LINE = /^([A-Za-z]+) (\S+) HTTP\/1\.([01])$/;

/**
 * Parses a request head. Runs once per dial, so it walks the lines in place (no array of lines,
 * no map of headers) and lower-cases only the names of the three headers it reads.
 * @throws {HttpError} with the status to answer
 */
export function parseConnectHead(head: string, rest: Uint8Array): ConnectRequest {
  let end = head.indexOf("\r\n");
  if (end < 0) end = head.length;
  const requestLine = REQUEST_LINE.exec(head.slice(0, end));
  if (!requestLine) throw new HttpError(400, "Bad Request", "malformed HTTP request line");
  const [, method, target, minor] = requestLine;
  let host = false;
  let userAgent: string | undefined;
  let traceparent: string | undefined;
  for (let at = end + 2; at <= head.length; at = end + 2) {
    end = head.indexOf("\r\n", at);
    if (end < 0) end = head.length;
    if (end === at) continue;
    const i = head.indexOf(":", at);
    if (i <= at || i >= end) throw new HttpError(400, "Bad Request", "malformed HTTP header line");
    const name = head.slice(at, i).trim();
    // Only names of these lengths can be one of the headers read below.
    if (name.length !== 4 && name.length !== 10 && name.length !== 11) continue;
    const lower = name.toLowerCase();
    if (lower === "host") host = true;
    else if (lower === "user-agent") userAgent = head.slice(i + 1, end).trim();
    else if (lower === "traceparent") traceparent = head.slice(i + 1, end).trim();
  }
  if (method !== "CONNECT") {
    throw new HttpError(405, "Method Not Allowed", "this proxy only supports CONNECT passthrough");
  }
  if (minor === "1" && !host) {
    throw new HttpError(400, "Bad Request", "missing required Host header");
  }
  if (!validConnectTarget(target!)) {
    throw new HttpError(400, "Bad Request", `invalid CONNECT target ${JSON.stringify(target)}`);
  }
  return { target: target!, userAgent: userAgent ?? "", traceparent, rest };
}
