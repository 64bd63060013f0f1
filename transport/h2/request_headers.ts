/**
 * Checks of received header lists (RFC 9113 §8.2–8.3): lowercase names, no connection-specific
 * fields, pseudo-headers known, unique and first, the required request pseudo-headers present,
 * and none in trailers. A failure is a malformed message: a stream error of type PROTOCOL_ERROR.
 *
 * @module
 */

import { ErrorCode, H2Error } from "./frame.ts";
import type { HeaderField } from "./hpack.ts";

/** The headers of one request, by name (lowercase), values in arrival order. */
export type HeaderMap = Map<string, string[]>;

const REQUEST_PSEUDO = new Set([":method", ":scheme", ":path", ":authority"]);
const CONNECTION_SPECIFIC = new Set([
  "connection",
  "keep-alive",
  "proxy-connection",
  "transfer-encoding",
  "upgrade",
]);

/** True for a field name with an uppercase letter or a byte HTTP does not allow in one. */
function badName(name: string): boolean {
  for (let i = 0; i < name.length; i++) {
    const c = name.charCodeAt(i);
    if (c <= 0x20 || c >= 0x7f || (c >= 0x41 && c <= 0x5a)) return true;
  }
  return name.length === 0;
}

/** True for a value with NUL, CR or LF, or white space at either end. */
function badValue(value: string): boolean {
  if (/[\0\r\n]/.test(value)) return true;
  return value.length > 0 && /^[ \t]|[ \t]$/.test(value);
}

function malformed(streamId: number, message: string): H2Error {
  return new H2Error(ErrorCode.PROTOCOL_ERROR, streamId, `malformed headers: ${message}`);
}

/** Checks one regular (non-pseudo) field. */
function checkRegular(streamId: number, name: string, value: string): void {
  if (CONNECTION_SPECIFIC.has(name)) throw malformed(streamId, `connection-specific ${name}`);
  if (name === "te" && value !== "trailers") throw malformed(streamId, `te: ${value}`);
}

/**
 * Validates a request header list and returns it as a map.
 * @throws {H2Error} a stream PROTOCOL_ERROR when the request is malformed
 */
export function requestHeaders(streamId: number, fields: HeaderField[]): HeaderMap {
  const map: HeaderMap = new Map();
  let regular = false;
  for (const [name, value] of fields) {
    if (badName(name) && !(name.startsWith(":") && !badName(name.slice(1)))) {
      throw malformed(streamId, `field name ${JSON.stringify(name)}`);
    }
    if (badValue(value)) throw malformed(streamId, `value of ${name}`);
    if (name.startsWith(":")) {
      if (regular) throw malformed(streamId, `${name} after a regular field`);
      if (!REQUEST_PSEUDO.has(name)) throw malformed(streamId, `pseudo-header ${name}`);
      if (map.has(name)) throw malformed(streamId, `second ${name}`);
    } else {
      regular = true;
      checkRegular(streamId, name, value);
    }
    const values = map.get(name);
    if (values) values.push(value);
    else map.set(name, [value]);
  }
  for (const required of [":method", ":scheme", ":path"]) {
    if (!map.has(required)) throw malformed(streamId, `no ${required}`);
  }
  if (map.get(":path")![0] === "") throw malformed(streamId, "empty :path");
  return map;
}

/**
 * Validates a trailer list (no pseudo-headers) and merges it into `into`.
 * @throws {H2Error} a stream PROTOCOL_ERROR when the trailers are malformed
 */
export function mergeTrailers(streamId: number, fields: HeaderField[], into: HeaderMap): void {
  for (const [name, value] of fields) {
    if (name.startsWith(":")) throw malformed(streamId, `pseudo-header ${name} in trailers`);
    if (badName(name)) throw malformed(streamId, `field name ${JSON.stringify(name)}`);
    if (badValue(value)) throw malformed(streamId, `value of ${name}`);
    checkRegular(streamId, name, value);
    const values = into.get(name);
    if (values) values.push(value);
    else into.set(name, [value]);
  }
}

/** The declared content-length of a request, or undefined. @throws {H2Error} when unparsable */
export function contentLength(streamId: number, map: HeaderMap): number | undefined {
  const values = map.get("content-length");
  if (!values) return undefined;
  const n = Number(values[0]);
  if (values.length !== 1 || !/^\d+$/.test(values[0]!) || !Number.isSafeInteger(n)) {
    throw malformed(streamId, "content-length");
  }
  return n;
}
