/**
 * `serveBoundedHttp`: the plain HTTP/1.1 servers of the health and admin ports, with a time bound
 * on every connection. `Deno.serve` has no header, idle or handshake timeout, so a client that
 * connects and sends nothing (or trickles a request, or idles on a keep-alive connection) would
 * hold its connection forever. These endpoints are small GETs (probes, scrapes), so this server
 * reads one request head (at most 16 KiB), answers it with `Connection: close` and closes; a
 * connection that has not been answered within `timeoutMs` of being accepted is closed.
 *
 * It binds only its own port (no loopback helper), so the binaries' permissions stay as they are.
 * A bind failure is a `CONFIG` error naming the flag and the address.
 *
 * @module
 */

import { errorMessage, KnpError } from "@knp/core/errors";

/** Default bound on a connection from accept to the end of its response. */
export const HTTP_CONNECTION_TIMEOUT_MS = 10_000;

/** Largest request head read. */
const MAX_HEAD = 16 * 1024;

/** Options of {@linkcode serveBoundedHttp}. */
export interface BoundedHttpOptions {
  /** The flag that set the port, for the bind error (e.g. "--health-port"). */
  flag: string;
  /** The address to listen on. */
  hostname: string;
  /** 0 picks a free port. */
  port: number;
  /** Answers each request. */
  handler: (req: Request) => Response | Promise<Response>;
  /** Closes a connection not answered this long after accept. @default 10000 */
  timeoutMs?: number;
}

/** A running bounded HTTP server. */
export interface BoundedHttpServer {
  /** The bound port. */
  readonly port: number;
  /** Open connections. */
  readonly connections: number;
  /** Stops accepting and closes every connection. */
  close(): Promise<void>;
}

/** "host:port", with IPv6 hosts in brackets. */
function address(host: string, port: number): string {
  return host.includes(":") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Binds `hostname:port` or throws a `CONFIG` error naming `flag` and the address. */
function listenOrThrow(flag: string, hostname: string, port: number): Deno.TcpListener {
  try {
    return Deno.listen({ hostname, port });
  } catch (err) {
    if (err instanceof Deno.errors.NotCapable) throw err;
    throw new KnpError(
      "CONFIG",
      `${flag}: cannot listen on ${address(hostname, port)}: ${errorMessage(err)}`,
      { cause: err },
    );
  }
}

/** Starts the server. @throws {KnpError} `CONFIG` when the port cannot be bound */
export function serveBoundedHttp(options: BoundedHttpOptions): BoundedHttpServer {
  const listener = listenOrThrow(options.flag, options.hostname, options.port);
  const timeoutMs = options.timeoutMs ?? HTTP_CONNECTION_TIMEOUT_MS;
  const open = new Set<Deno.Conn>();
  const accepting = (async () => {
    for await (const conn of listener) {
      open.add(conn);
      serveOne(conn, options, timeoutMs).finally(() => {
        open.delete(conn);
        closeQuietly(conn);
      });
    }
  })().catch(() => {/* listener closed */});
  return {
    port: (listener.addr as Deno.NetAddr).port,
    get connections() {
      return open.size;
    },
    async close() {
      closeQuietly(listener);
      await accepting;
      for (const conn of open) closeQuietly(conn);
    },
  };
}

function closeQuietly(c: { close(): void }): void {
  try {
    c.close();
  } catch { /* closed */ }
}

/** Reads one request head, answers it, within `timeoutMs` of accept (else closes). */
async function serveOne(
  conn: Deno.Conn,
  options: BoundedHttpOptions,
  timeoutMs: number,
): Promise<void> {
  const timer = setTimeout(() => closeQuietly(conn), timeoutMs);
  try {
    const head = await readHead(conn);
    if (head === undefined) return;
    const response = await respond(head, conn, options);
    await writeAll(conn, response);
    // Half-close and wait for the client's close, so unread request bytes cannot turn our close
    // into a reset that loses the response (the timer still bounds this).
    await conn.closeWrite();
    const sink = new Uint8Array(4096);
    while (await conn.read(sink) !== null) { /* discard */ }
  } catch {
    /* closed by the peer or by the timer */
  } finally {
    clearTimeout(timer);
  }
}

/** The request head as text, or undefined on EOF or an oversized head. */
async function readHead(conn: Deno.Conn): Promise<string | undefined> {
  const buffer = new Uint8Array(MAX_HEAD);
  let have = 0;
  const decoder = new TextDecoder("latin1");
  while (have < buffer.length) {
    const n = await conn.read(buffer.subarray(have));
    if (n === null) return undefined;
    have += n;
    const text = decoder.decode(buffer.subarray(0, have));
    const end = text.indexOf("\r\n\r\n");
    if (end !== -1) return text.slice(0, end);
  }
  return undefined;
}

/** Runs the handler for `head` and serializes its response (or a 400). */
async function respond(
  head: string,
  conn: Deno.Conn,
  options: BoundedHttpOptions,
): Promise<Uint8Array> {
  const [requestLine = "", ...lines] = head.split("\r\n");
  const match = /^([A-Z]+) (\S+) HTTP\/1\.[01]$/.exec(requestLine);
  if (match === null) return serialize(new Response("bad request\n", { status: 400 }), false);
  const method = match[1] ?? "GET";
  const target = match[2] ?? "/";
  const headers = new Headers();
  for (const line of lines) {
    const colon = line.indexOf(":");
    if (colon <= 0) continue;
    try {
      headers.append(line.slice(0, colon).trim(), line.slice(colon + 1).trim());
    } catch { /* an invalid header is dropped */ }
  }
  const local = conn.localAddr as Deno.NetAddr;
  const host = headers.get("host") ?? address(local.hostname, local.port);
  let url: URL;
  try {
    url = new URL(target, `http://${host}`);
  } catch {
    return serialize(new Response("bad request\n", { status: 400 }), false);
  }
  let request: Request;
  try {
    request = new Request(url, { method, headers });
  } catch {
    return serialize(new Response("bad request\n", { status: 400 }), false);
  }
  const response = await options.handler(request);
  return serialize(response, method !== "HEAD");
}

const STATUS_TEXT: Record<number, string> = {
  200: "OK",
  301: "Moved Permanently",
  400: "Bad Request",
  404: "Not Found",
  500: "Internal Server Error",
  503: "Service Unavailable",
};

/** An HTTP/1.1 response with `Connection: close` and a `Content-Length`. */
async function serialize(response: Response, withBody: boolean): Promise<Uint8Array> {
  const body = new Uint8Array(await response.arrayBuffer());
  let text = `HTTP/1.1 ${response.status} ${STATUS_TEXT[response.status] ?? "Status"}\r\n`;
  for (const [name, value] of response.headers) {
    if (name !== "content-length" && name !== "connection") text += `${name}: ${value}\r\n`;
  }
  text += `content-length: ${body.length}\r\nconnection: close\r\n\r\n`;
  const headBytes = new TextEncoder().encode(text);
  const out = new Uint8Array(headBytes.length + (withBody ? body.length : 0));
  out.set(headBytes);
  if (withBody) out.set(body, headBytes.length);
  return out;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  for (let off = 0; off < bytes.length;) off += await conn.write(bytes.subarray(off));
}
