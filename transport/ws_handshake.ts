/**
 * The HTTP side of the WebSocket opening handshake: the upgrade request, reading and checking
 * the `101` answer, and turning a refusal into a {@linkcode WebSocketHandshakeError} that carries
 * the server's reason. Used by `connectWebSocket` (ws_client.ts).
 *
 * @module
 */

/** Bound on the response head of the opening handshake. */
const MAX_RESPONSE_HEAD = 16 * 1024;
/** Bound on the body of a refusal kept for the error message. */
const MAX_REFUSAL_BODY = 16 * 1024;
/** How long a refusal's body may take to arrive. */
const REFUSAL_BODY_MS = 2_000;
const ACCEPT_GUID = "258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

const encoder = new TextEncoder();
const latin1 = new TextDecoder("latin1");

/** The upgrade was answered with something other than a valid `101 Switching Protocols`. */
export class WebSocketHandshakeError extends Error {
  /** HTTP status of the answer (0 when it was not HTTP at all). */
  readonly status: number;
  /** The status line as received, e.g. `HTTP/1.1 401 Unauthorized`. */
  readonly statusLine: string;
  /** The response body as text (trimmed, at most 16 KiB), empty when there was none. */
  readonly body: string;
  /** The server's `Retry-After` (e.g. with a 503) in milliseconds, when it sent a valid one. */
  retryAfterMs?: number;
  /** An error for an answer with this status, status line and body. */
  constructor(message: string, status = 0, statusLine = "", body = "") {
    super(message);
    this.name = "WebSocketHandshakeError";
    this.status = status;
    this.statusLine = statusLine;
    this.body = body;
  }
}

const TOKEN = /^[!#$%&'*+\-.^_`|~0-9A-Za-z]+$/;
const RESERVED_HEADERS = new Set([
  "host",
  "upgrade",
  "connection",
  "sec-websocket-key",
  "sec-websocket-version",
  "sec-websocket-extensions",
  "content-length",
  "transfer-encoding",
]);

function base64(bytes: Uint8Array): string {
  let bin = "";
  for (const b of bytes) bin += String.fromCharCode(b);
  return btoa(bin);
}

/** The `Sec-WebSocket-Accept` value for a key. Exported for tests. */
export async function acceptFor(key: string): Promise<string> {
  const digest = await crypto.subtle.digest("SHA-1", encoder.encode(key + ACCEPT_GUID));
  return base64(new Uint8Array(digest));
}

/** Status and headers (lowercase names) of the upgrade answer. */
export interface ResponseHead {
  /** The status line, e.g. `HTTP/1.1 101 Switching Protocols`. */
  statusLine: string;
  /** The HTTP status code. */
  status: number;
  /** Header values by lowercase name. */
  headers: Map<string, string>;
}

function parseHead(text: string): ResponseHead {
  const lines = text.split("\r\n");
  const statusLine = lines[0] ?? "";
  const match = /^HTTP\/1\.[01] (\d{3})(?: .*)?$/.exec(statusLine);
  if (!match) {
    throw new WebSocketHandshakeError(
      `the server did not answer with HTTP: ${JSON.stringify(statusLine.slice(0, 200))}`,
    );
  }
  const headers = new Map<string, string>();
  for (const line of lines.slice(1)) {
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    const name = line.slice(0, colon).trim().toLowerCase();
    const value = line.slice(colon + 1).trim();
    const prev = headers.get(name);
    headers.set(name, prev === undefined ? value : `${prev}, ${value}`);
  }
  return { statusLine, status: Number(match[1]), headers };
}

function indexOfHeadEnd(buf: Uint8Array, from: number, to: number): number {
  for (let i = Math.max(0, from); i + 3 < to; i++) {
    if (buf[i] === 13 && buf[i + 1] === 10 && buf[i + 2] === 13 && buf[i + 3] === 10) return i;
  }
  return -1;
}

/** Reads the rest of a refusal's body (bounded in size and time) and returns it as text. */
async function readRefusalBody(
  conn: Deno.Conn,
  head: ResponseHead,
  first: Uint8Array,
): Promise<string> {
  if (/^(1\d\d|204|304)$/.test(String(head.status))) return "";
  const length = head.headers.get("content-length");
  const chunked = /\bchunked\b/i.test(head.headers.get("transfer-encoding") ?? "");
  const want = length !== undefined && /^\d+$/.test(length)
    ? Math.min(Number(length), MAX_REFUSAL_BODY)
    : MAX_REFUSAL_BODY;
  const parts: Uint8Array[] = [first.subarray(0, want)];
  let have = parts[0]!.length;
  // A chunked body is complete at its last (zero-size) chunk.
  const lastChunk = () => /(^|\n)0+(;[^\r\n]*)?\r?\n/.test(latin1.decode(concat(parts)));
  const timer = setTimeout(() => {
    try {
      conn.close();
    } catch { /* closed */ }
  }, REFUSAL_BODY_MS);
  try {
    const buf = new Uint8Array(4096);
    while (have < want && !(chunked && lastChunk())) {
      const n = await conn.read(buf).catch(() => null);
      if (n === null) break;
      const part = buf.slice(0, Math.min(n, want - have));
      parts.push(part);
      have += part.length;
    }
  } finally {
    clearTimeout(timer);
  }
  let body = concat(parts);
  if (chunked) body = dechunk(body);
  return new TextDecoder().decode(body).trim();
}

function concat(parts: Uint8Array[]): Uint8Array {
  if (parts.length === 1) return parts[0]!;
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let pos = 0;
  for (const p of parts) {
    out.set(p, pos);
    pos += p.length;
  }
  return out;
}

/** Decodes a chunked body as far as it goes. */
function dechunk(data: Uint8Array): Uint8Array {
  const out: Uint8Array[] = [];
  let pos = 0;
  while (pos < data.length) {
    const lineEnd = data.indexOf(10, pos);
    if (lineEnd < 0) break;
    const size = parseInt(latin1.decode(data.subarray(pos, lineEnd)).trim().split(";")[0]!, 16);
    if (!Number.isFinite(size) || size <= 0) break;
    out.push(data.subarray(lineEnd + 1, Math.min(lineEnd + 1 + size, data.length)));
    pos = lineEnd + 1 + size + 2;
  }
  return concat(out.length ? out : [new Uint8Array(0)]);
}

/**
 * The extra request headers as pairs, checked.
 *
 * @throws {TypeError} for an invalid name or value, or a header the client sets itself
 */
export function checkedHeaders(headers: Record<string, string> = {}): [string, string][] {
  const extra: [string, string][] = [];
  for (const [name, value] of Object.entries(headers)) {
    if (!TOKEN.test(name)) throw new TypeError(`invalid header name ${JSON.stringify(name)}`);
    if (/[\r\n\0]/.test(value)) throw new TypeError(`invalid value of the header ${name}`);
    if (RESERVED_HEADERS.has(name.toLowerCase())) {
      throw new TypeError(`the header ${name} is set by the WebSocket client`);
    }
    extra.push([name, value]);
  }
  return extra;
}

/** A fresh `Sec-WebSocket-Key`. */
export function newKey(): string {
  return base64(crypto.getRandomValues(new Uint8Array(16)));
}

/** The bytes of the upgrade request for `target` with `key` and the extra headers. */
export function upgradeRequest(
  target: URL,
  key: string,
  extra: readonly [string, string][],
): Uint8Array {
  const defaultPort = target.protocol === "wss:" ? "443" : "80";
  const host = target.port && target.port !== defaultPort
    ? `${target.hostname}:${target.port}`
    : target.hostname;
  let request = `GET ${target.pathname || "/"}${target.search} HTTP/1.1\r\n` +
    `Host: ${host}\r\n` +
    "Upgrade: websocket\r\n" +
    "Connection: Upgrade\r\n" +
    `Sec-WebSocket-Key: ${key}\r\n` +
    "Sec-WebSocket-Version: 13\r\n";
  for (const [name, value] of extra) request += `${name}: ${value}\r\n`;
  request += "\r\n";
  return encoder.encode(request);
}

/** The answer's head and the bytes read past it (the first frames, or a refusal's body). */
export interface UpgradeResponse {
  /** Status and headers of the answer. */
  head: ResponseHead;
  /** Bytes read past the head. */
  rest: Uint8Array;
}

/**
 * Reads the response head of the upgrade.
 *
 * @throws {WebSocketHandshakeError} when it is too large or the server closes first
 * @throws the signal's reason once `signal` aborted
 */
export async function readResponseHead(
  conn: Deno.Conn,
  signal: AbortSignal,
): Promise<UpgradeResponse> {
  const buf = new Uint8Array(MAX_RESPONSE_HEAD);
  let len = 0;
  let headEnd = -1;
  while (headEnd < 0) {
    if (len === buf.length) {
      throw new WebSocketHandshakeError(
        `the upgrade response head is larger than ${MAX_RESPONSE_HEAD} bytes`,
      );
    }
    let n: number | null;
    try {
      n = await conn.read(buf.subarray(len));
    } catch (err) {
      if (signal.aborted) throw signal.reason;
      throw err;
    }
    if (signal.aborted) throw signal.reason;
    if (n === null) {
      throw new WebSocketHandshakeError(
        len === 0
          ? "the server closed the connection without answering the upgrade"
          : "the server closed the connection in the middle of the upgrade response",
      );
    }
    headEnd = indexOfHeadEnd(buf, len - 3, len + n);
    len += n;
  }
  const head = parseHead(latin1.decode(buf.subarray(0, headEnd)));
  return { head, rest: buf.subarray(headEnd + 4, len) };
}

/**
 * The error for a refusal (anything but `101`), with the response body read for its reason.
 */
export async function refusalError(
  conn: Deno.Conn,
  { head, rest }: UpgradeResponse,
): Promise<WebSocketHandshakeError> {
  const body = await readRefusalBody(conn, head, rest);
  const error = new WebSocketHandshakeError(
    `the server refused the WebSocket upgrade: ${head.statusLine}${body ? `: ${body}` : ""}`,
    head.status,
    head.statusLine,
    body,
  );
  const retryAfterMs = parseRetryAfter(head.headers.get("retry-after"), Date.now());
  if (retryAfterMs !== undefined) error.retryAfterMs = retryAfterMs;
  return error;
}

/**
 * A `Retry-After` value (delay-seconds or an HTTP-date, RFC 9110 §10.2.3) as milliseconds from
 * `now`; undefined when absent or invalid.
 */
export function parseRetryAfter(value: string | undefined, now: number): number | undefined {
  if (value === undefined) return undefined;
  if (/^\d+$/.test(value.trim())) return Number(value.trim()) * 1000;
  const at = Date.parse(value);
  return Number.isNaN(at) ? undefined : Math.max(0, at - now);
}

/**
 * Checks a `101` answer: upgrade headers, the accept value for `key`, no extension and no
 * subprotocol that was not offered.
 *
 * @throws {WebSocketHandshakeError} naming what is wrong
 */
export async function checkUpgrade(
  head: ResponseHead,
  key: string,
  extra: readonly [string, string][],
): Promise<void> {
  const fail = (what: string) => {
    throw new WebSocketHandshakeError(
      `invalid upgrade response (${what})`,
      head.status,
      head.statusLine,
    );
  };
  if (head.headers.get("upgrade")?.toLowerCase() !== "websocket") fail("no Upgrade: websocket");
  if (
    !(head.headers.get("connection") ?? "").toLowerCase().split(",").some((t) =>
      t.trim() === "upgrade"
    )
  ) fail("no Connection: Upgrade");
  if (head.headers.get("sec-websocket-accept") !== await acceptFor(key)) {
    fail("wrong Sec-WebSocket-Accept");
  }
  if (head.headers.has("sec-websocket-extensions")) fail("an extension nobody asked for");
  const protocol = head.headers.get("sec-websocket-protocol");
  if (protocol !== undefined) {
    const offered = extra.find(([n]) => n.toLowerCase() === "sec-websocket-protocol")?.[1] ?? "";
    if (!offered.split(",").some((p) => p.trim() === protocol)) {
      fail("a subprotocol nobody asked for");
    }
  }
}
