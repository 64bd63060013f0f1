/**
 * Listeners of the HTTP-CONNECT frontend: plaintext on a Unix domain socket (`Deno.listen`), or
 * TCP with TLS and mandatory client certificates (a {@linkcode TlsListener}, node:tls underneath,
 * since `Deno.listenTls` cannot verify client certificates; its material reloads in place).
 * HTTP/1.1 only.
 *
 * @module
 */

import { chmod, rm } from "node:fs/promises";
import type { SecureContextOptions, TLSSocket } from "node:tls";
import type { ByteSocket } from "@knp/transport/byte_socket";
import { fromNodeSocket } from "@knp/transport/byte_socket";
import { errorMessage } from "@knp/core/errors";
import type { TlsMaterial } from "@knp/transport/tls_files";
import { TlsListener } from "@knp/transport/tls_listener";
import { type Logger, nullLogger } from "@knp/core/log";
import { HttpConnectFrontend, type HttpConnectLimits } from "./http_connect_frontend.ts";
import type { ProxyServer } from "./proxy_server.ts";

/** Options of {@linkcode serveHttpConnect}. */
export interface HttpConnectListenerOptions extends HttpConnectLimits {
  core: ProxyServer;
  /** Unix socket path (plaintext); otherwise TCP on hostname:port with TLS. */
  udsPath?: string | undefined;
  hostname?: string | undefined;
  port?: number;
  /** TLS for TCP: cert, key and the CA that verifies client certificates (required). */
  tls?: TlsMaterial | undefined;
  /** Extra node:tls context options (min version, ciphers). */
  tlsOptions?: SecureContextOptions | undefined;
  /** Most connections still sending their request head; more get 503 at once. @default 1024 */
  maxPendingHeads?: number;
  logger?: Logger;
}

/** A running HTTP-CONNECT listener. */
export interface HttpConnectListener {
  port: number;
  /** Open client connections (upstream's `http_connections` gauge). */
  readonly connections: number;
  /** Swaps TLS material for new handshakes (hot reload); established tunnels are untouched. */
  updateTls(tls: TlsMaterial, extra?: SecureContextOptions): void;
  close(): Promise<void>;
}

const OVERLOADED = new TextEncoder().encode(
  "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n" +
    "Connection: close\r\n\r\nserver overloaded: too many connections sending request headers\n",
);

/** The open client connections of one listener, each read up to its CONNECT and then served. */
class ConnectionSet {
  readonly #options: HttpConnectListenerOptions;
  readonly #log: Logger;
  readonly #maxPendingHeads: number;
  readonly #sockets = new Set<ByteSocket>();
  #pendingHeads = 0;

  constructor(options: HttpConnectListenerOptions) {
    this.#options = options;
    this.#log = options.logger ?? nullLogger;
    this.#maxPendingHeads = options.maxPendingHeads ?? 1024;
  }

  get size(): number {
    return this.#sockets.size;
  }

  /** Serves one client connection until its tunnel is over. */
  async handle(socket: ByteSocket, peer: string): Promise<void> {
    this.#sockets.add(socket);
    const { core } = this.#options;
    const frontend = new HttpConnectFrontend(socket, peer, core.serverId, this.#options);
    try {
      if (this.#pendingHeads >= this.#maxPendingHeads) {
        await socket.write(OVERLOADED).catch(() => {});
        socket.close();
        return;
      }
      this.#pendingHeads++;
      let ok: boolean;
      try {
        ok = await frontend.readHead();
      } finally {
        this.#pendingHeads--;
      }
      if (!ok) return;
      await core.serveFrontend(frontend, frontend.userAgent).ended;
    } catch (err) {
      this.#log.warn("http-connect connection failed", { peer, error: errorMessage(err) });
      socket.close();
    } finally {
      this.#sockets.delete(socket);
    }
  }

  closeAll(): void {
    for (const s of this.#sockets) s.close();
  }
}

/** Starts an HTTP-CONNECT listener feeding `core`. */
export function serveHttpConnect(
  options: HttpConnectListenerOptions,
): Promise<HttpConnectListener> {
  const connections = new ConnectionSet(options);
  return options.udsPath ? serveUds(options.udsPath, connections) : serveTls(options, connections);
}

async function serveUds(path: string, connections: ConnectionSet): Promise<HttpConnectListener> {
  await rm(path, { force: true });
  const listener = Deno.listen({ transport: "unix", path });
  await chmod(path, 0o770);
  (async () => {
    for await (const conn of listener) connections.handle(conn, "unix");
  })().catch(() => {});
  return {
    port: 0,
    get connections() {
      return connections.size;
    },
    updateTls() {},
    async close() {
      listener.close();
      connections.closeAll();
      await rm(path, { force: true });
    },
  };
}

async function serveTls(
  options: HttpConnectListenerOptions,
  connections: ConnectionSet,
): Promise<HttpConnectListener> {
  const log = options.logger ?? nullLogger;
  if (!options.tls?.cert || !options.tls.key || !options.tls.ca) {
    throw new TypeError("HTTP-CONNECT over TCP needs a certificate, a key and a client CA");
  }
  const listener = await TlsListener.listen({
    hostname: options.hostname,
    port: options.port ?? 8090,
    tls: options.tls,
    requestClientCert: true,
    contextOptions: options.tlsOptions,
    alpnProtocols: ["http/1.1"],
    // The TLS handshake counts against the head's time bound (node's default is 120 s).
    handshakeTimeoutMs: options.headerTimeoutMs ?? 10_000,
    onConnection: (socket: TLSSocket) => {
      connections.handle(fromNodeSocket(socket), `${socket.remoteAddress}:${socket.remotePort}`);
    },
    onHandshakeError: (err) => {
      log.info("TLS handshake failed on the HTTP-CONNECT frontend", { error: err.message });
    },
  });
  return {
    port: listener.port,
    get connections() {
      return connections.size;
    },
    updateTls(tls, extra) {
      listener.updateTls(tls, { ...options.tlsOptions, ...extra });
    },
    async close() {
      connections.closeAll();
      await listener.close();
    },
  };
}
