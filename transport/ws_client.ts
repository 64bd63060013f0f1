/**
 * A minimal RFC 6455 WebSocket client over Deno's own TCP and TLS, for the agent link.
 *
 * Deno's `WebSocket` client leaves Nagle's algorithm on (it clears `TCP_NODELAY`) and offers no way
 * to change that, so a small write that follows another small write waits for the peer's delayed
 * ACK (~40 ms on Linux). This client connects with `Deno.connect`, sets `TCP_NODELAY`, then starts
 * TLS on that socket with `Deno.startTls`. With `proxy`, the TCP connection goes to an HTTP proxy,
 * which is asked for a `CONNECT` tunnel to the server; TLS then runs inside the tunnel.
 *
 * `Deno.startTls` cannot present a client certificate. With `cert` and `key` in the options the
 * client uses `Deno.connectTls` instead, which can, but whose socket keeps Nagle's algorithm on
 * (Deno 2.9 has no way to set `TCP_NODELAY` on a `TlsConn`). knp's own server cannot ask for client
 * certificates anyway (the agent proves its identity inside the link's handshake), so the agent
 * does not pass them.
 *
 * ```ts
 * async function hello(ca: string): Promise<void> {
 *   const ws = await connectWebSocket("wss://localhost:8096/knp/v1/agent", { caCerts: [ca] });
 *   ws.onmessage = (e) => console.log(e.data);
 *   ws.send("hello");
 * }
 * ```
 *
 * {@linkcode ClientWebSocket} has the part of the browser `WebSocket` interface knp's link code
 * uses ({@linkcode WebSocketSubset}); see there for the (few, deliberate) differences.
 *
 * @module
 */

import { ClientWebSocket } from "./client_websocket.ts";
import { DEFAULT_MAX_MESSAGE_BYTES, ZERO_MASK_HEADER } from "./ws_frame.ts";
import { connectTarget, type HttpProxy, openProxyTunnel } from "./http_proxy.ts";
import {
  checkedHeaders,
  checkUpgrade,
  newKey,
  readResponseHead,
  refusalError,
  upgradeRequest,
} from "./ws_handshake.ts";

export {
  ClientWebSocket,
  type WebSocketCloseEvent,
  type WebSocketErrorEvent,
  type WebSocketMessageEvent,
  type WebSocketPongEvent,
  type WebSocketSubset,
} from "./client_websocket.ts";
export { DEFAULT_MAX_MESSAGE_BYTES } from "./ws_frame.ts";
export { WebSocketHandshakeError } from "./ws_handshake.ts";

/** Default bound on the opening handshake (connect, TLS, upgrade). */
const DEFAULT_OPEN_TIMEOUT_MS = 30_000;

/** Options of {@linkcode connectWebSocket}. */
export interface ConnectWebSocketOptions {
  /** PEM CA certificates trusted for `wss:` in addition to the default roots. */
  caCerts?: string[];
  /**
   * PEM client certificate and key presented in the TLS handshake. Only `Deno.connectTls` can
   * present one, and its socket keeps Nagle's algorithm on: leave these out unless the server (or
   * a TLS proxy in front of it) asks for a client certificate.
   */
  cert?: string;
  /** PEM private key of `cert`. */
  key?: string;
  /** Extra request headers of the upgrade request. */
  headers?: Record<string, string>;
  /** Aborts the opening handshake (connect, TLS, upgrade); ignored once the socket is open. */
  signal?: AbortSignal;
  /** Bound on the opening handshake. @default 30000 */
  timeoutMs?: number;
  /** Largest message (after reassembly) accepted; a larger one closes with 1009. */
  maxMessageBytes?: number;
  /**
   * The name the server's certificate is verified against (and sent as SNI) when it differs from
   * the URL's host: an address found by resolving that name. Not with `cert`/`key`.
   */
  serverName?: string | undefined;
  /**
   * ALPN protocols offered before `http/1.1` (appended unless listed), e.g. for a load balancer
   * that routes by ALPN (the agent's `--alpn-proto`). @default []
   */
  alpnProtocols?: readonly string[] | undefined;
  /**
   * An HTTP proxy to reach the server through (`CONNECT host:port`, then TLS inside the tunnel).
   * Not with `cert`/`key` (`Deno.connectTls` cannot run on a tunnel).
   */
  proxy?: HttpProxy | undefined;
  /**
   * Large binary messages come from transport/message_pool.ts (a `Uint8Array` view when the
   * buffer is larger): for a consumer that gives them back (the agent's link). @default false
   */
  pooledMessages?: boolean;
}

/** The ALPN protocols offered: the extra ones, then `http/1.1` unless among them. */
function alpnOf(options: ConnectWebSocketOptions): string[] {
  const extra = options.alpnProtocols ?? [];
  return extra.includes("http/1.1") ? [...extra] : [...extra, "http/1.1"];
}

/** The TCP connection to the server: direct, or a tunnel through `proxy`. */
async function openTcp(
  hostname: string,
  port: number,
  proxy: HttpProxy | undefined,
  signal: AbortSignal,
): Promise<Deno.TcpConn> {
  const to = proxy ?? { hostname, port };
  const tcp = await Deno.connect({ hostname: to.hostname, port: to.port, signal });
  tcp.setNoDelay(true);
  if (!proxy) return tcp;
  try {
    const early = await openProxyTunnel(tcp, connectTarget(hostname, port), proxy, signal);
    if (early.length > 0) throw new Error("the server spoke before the client through the proxy");
    return tcp;
  } catch (err) {
    try {
      tcp.close();
    } catch { /* closed */ }
    throw err;
  }
}

async function openConnection(
  url: URL,
  options: ConnectWebSocketOptions,
  signal: AbortSignal,
): Promise<Deno.Conn> {
  const hostname = url.hostname.startsWith("[") ? url.hostname.slice(1, -1) : url.hostname;
  const secure = url.protocol === "wss:";
  const port = url.port ? Number(url.port) : secure ? 443 : 80;
  const withCert = options.cert !== undefined && options.key !== undefined;
  if (secure && withCert && options.proxy) {
    throw new SyntaxError("a client certificate in the TLS handshake cannot go through a proxy");
  }
  if (secure && withCert) {
    // The only way to present a client certificate; Nagle stays on (see the module doc).
    const conn = await Deno.connectTls({
      hostname,
      port,
      ...(options.caCerts !== undefined ? { caCerts: options.caCerts } : {}),
      cert: options.cert,
      key: options.key,
      alpnProtocols: alpnOf(options),
    });
    return conn;
  }
  const tcp = await openTcp(hostname, port, options.proxy, signal);
  if (!secure) return tcp;
  try {
    return await Deno.startTls(tcp, {
      hostname: options.serverName ?? hostname,
      ...(options.caCerts !== undefined ? { caCerts: options.caCerts } : {}),
      alpnProtocols: alpnOf(options),
    });
  } catch (err) {
    try {
      tcp.close();
    } catch { /* consumed */ }
    throw err;
  }
}

/**
 * The abort signal of one opening handshake (the caller's signal or the timeout, whichever comes
 * first), which also closes the connection being opened when it fires.
 */
class OpeningGuard {
  readonly #controller = new AbortController();
  readonly #outer: AbortSignal | undefined;
  readonly #timer: ReturnType<typeof setTimeout>;
  readonly #onAbort = () => this.#controller.abort(this.#outer?.reason);
  readonly #closeConn = () => this.closeConn();
  /** Rejects with the signal's reason once it aborts. */
  readonly aborted: Promise<never>;
  conn: Deno.Conn | undefined;

  constructor(outer: AbortSignal | undefined, timeoutMs: number) {
    this.#outer = outer;
    this.#timer = setTimeout(() => {
      this.#controller.abort(
        new DOMException(
          `WebSocket opening handshake timed out after ${timeoutMs} ms`,
          "TimeoutError",
        ),
      );
    }, timeoutMs);
    if (outer?.aborted) this.#onAbort();
    else outer?.addEventListener("abort", this.#onAbort, { once: true });
    const signal = this.signal;
    signal.addEventListener("abort", this.#closeConn, { once: true });
    this.aborted = new Promise<never>((_, reject) => {
      const fail = () => reject(signal.reason);
      if (signal.aborted) fail();
      else signal.addEventListener("abort", fail, { once: true });
    });
    this.aborted.catch(() => {});
  }

  get signal(): AbortSignal {
    return this.#controller.signal;
  }

  closeConn(): void {
    try {
      this.conn?.close();
    } catch { /* closed */ }
  }

  dispose(): void {
    clearTimeout(this.#timer);
    this.#outer?.removeEventListener("abort", this.#onAbort);
    this.signal.removeEventListener("abort", this.#closeConn);
  }
}

function checkedUrl(url: string): URL {
  const target = new URL(url);
  if (target.protocol !== "ws:" && target.protocol !== "wss:") {
    throw new SyntaxError(`not a WebSocket URL: ${url}`);
  }
  if (target.hash) throw new SyntaxError(`a WebSocket URL has no fragment: ${url}`);
  return target;
}

/** Opens the connection unless the guard fires first; one that completes later is closed. */
async function connect(
  target: URL,
  options: ConnectWebSocketOptions,
  guard: OpeningGuard,
): Promise<Deno.Conn> {
  const signal = guard.signal;
  const opening = openConnection(target, options, signal);
  opening.then((c) => {
    if (!signal.aborted) return;
    try {
      c.close();
    } catch { /* closed */ }
  }, () => {});
  guard.conn = await Promise.race([opening, guard.aborted]).catch((err) => {
    throw signal.aborted ? signal.reason : err;
  });
  if (signal.aborted) throw signal.reason;
  return guard.conn;
}

/** Sends the upgrade request and checks the answer; the socket is open after it. */
async function upgrade(
  conn: Deno.Conn,
  target: URL,
  extra: [string, string][],
  signal: AbortSignal,
  maxMessageBytes: number,
  pooled: boolean,
): Promise<ClientWebSocket> {
  const key = newKey();
  const request = upgradeRequest(target, key, extra);
  for (let off = 0; off < request.length;) off += await conn.write(request.subarray(off));
  const response = await readResponseHead(conn, signal);
  if (response.head.status !== 101) {
    const refusal = await refusalError(conn, response);
    if (signal.aborted) throw signal.reason;
    throw refusal;
  }
  await checkUpgrade(response.head, key, extra);
  // Only inside TLS, where no intermediary on the path reads the frames.
  const zeroKey = target.protocol === "wss:" && response.head.headers.get(ZERO_MASK_HEADER) === "1";
  return new ClientWebSocket(conn, target.href, response.rest, maxMessageBytes, pooled, zeroKey);
}

/**
 * Opens a client WebSocket (`ws:` or `wss:`): connects (with `TCP_NODELAY`), sends the upgrade
 * request with `headers`, and checks the `101` answer.
 *
 * @throws {WebSocketHandshakeError} when the server answers anything but a valid `101`; for an
 *   HTTP refusal its message carries the status line and the response body (the server's reason).
 * @throws the signal's reason when `signal` aborts, a `TimeoutError` `DOMException` after
 *   `timeoutMs`, or the connection's error (refused, TLS, …).
 */
export async function connectWebSocket(
  url: string,
  options: ConnectWebSocketOptions = {},
): Promise<ClientWebSocket> {
  const target = checkedUrl(url);
  const extra = checkedHeaders(options.headers);
  const guard = new OpeningGuard(options.signal, options.timeoutMs ?? DEFAULT_OPEN_TIMEOUT_MS);
  try {
    const conn = await connect(target, options, guard);
    const maxMessageBytes = options.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
    const pooled = options.pooledMessages ?? false;
    return await upgrade(conn, target, extra, guard.signal, maxMessageBytes, pooled);
  } catch (err) {
    guard.closeConn();
    throw err;
  } finally {
    guard.dispose();
  }
}
