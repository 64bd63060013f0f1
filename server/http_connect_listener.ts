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
import {
  type AbortableSocket,
  HttpConnectFrontend,
  type HttpConnectLimits,
} from "./http_connect_frontend.ts";
import { overloaded } from "./http_connect_errors.ts";
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
  /**
   * Most connections still sending their request head. A new connection beyond it evicts the
   * oldest one (answered 503), so a slowloris cannot lock out newer, well-behaved clients.
   * @default 1024
   */
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
  /**
   * Closes the listener. `graceful`: closes only the listening socket (new connections are
   * refused) and resolves once every open connection ended; a later `close()` cuts the rest.
   * Otherwise every connection is closed at once.
   */
  close(graceful?: boolean): Promise<void>;
}

/** Back-off after a failed accept (EMFILE and the like): doubles from the first to the last. */
export const ACCEPT_BACKOFF_MS = [5, 1_000] as const;

/** The open client connections of one listener, each read up to its CONNECT and then served. */
class ConnectionSet {
  readonly #options: HttpConnectListenerOptions;
  readonly #log: Logger;
  readonly #maxPendingHeads: number;
  readonly #sockets = new Set<ByteSocket>();
  /** Connections still sending their heads, oldest first (a Set keeps insertion order). */
  readonly #pendingHeads = new Set<HttpConnectFrontend>();
  /** Resolved, and replaced, each time the last open connection ends. */
  #idle = Promise.withResolvers<void>();

  constructor(options: HttpConnectListenerOptions) {
    this.#options = options;
    this.#log = options.logger ?? nullLogger;
    this.#maxPendingHeads = Math.max(1, options.maxPendingHeads ?? 1024);
  }

  get size(): number {
    return this.#sockets.size;
  }

  /**
   * Serves one client connection: reads its request head, then hands it to the core. Resolves
   * once the tunnel is handed over (or refused); its end is seen through the frontend's `done`,
   * not awaited here, so an idle tunnel holds one callback rather than a suspended function.
   */
  async handle(socket: AbortableSocket, peer: string): Promise<void> {
    this.#sockets.add(socket);
    this.#log.debug("http-connect connection opened", { peer, connections: this.#sockets.size });
    const { core } = this.#options;
    const frontend = new HttpConnectFrontend(socket, peer, core.serverId, this.#options);
    try {
      this.#admit(frontend);
      let ok: boolean;
      try {
        ok = await frontend.readHead();
      } finally {
        this.#pendingHeads.delete(frontend);
      }
      if (!ok) return this.#closed(socket, peer, undefined);
      core.serveFrontend(frontend, frontend.userAgent);
    } catch (err) {
      this.#log.warn("http-connect connection failed", { peer, error: errorMessage(err) });
      socket.close();
      return this.#closed(socket, peer, undefined);
    }
    // The frontend settles `done` just before it tells the core it ended (synchronously), so the
    // core has let go of it by the time this runs.
    frontend.done.then((error) => this.#closed(socket, peer, error?.message));
  }

  /** Forgets a connection that ended. */
  #closed(socket: ByteSocket, peer: string, error: string | undefined): void {
    this.#sockets.delete(socket);
    if (this.#sockets.size === 0) {
      this.#idle.resolve();
      this.#idle = Promise.withResolvers<void>();
    }
    // Tests await this record, then read the http_connections gauge (`connections`).
    this.#log.debug("http-connect connection closed", {
      peer,
      connections: this.#sockets.size,
      ...(error === undefined ? {} : { error }),
    });
  }

  /** Counts a new head in progress; at the limit the oldest one is answered 503 and closed. */
  #admit(frontend: HttpConnectFrontend): void {
    if (this.#pendingHeads.size >= this.#maxPendingHeads) {
      const oldest = this.#pendingHeads.values().next().value;
      if (oldest !== undefined) {
        this.#pendingHeads.delete(oldest);
        this.#log.debug("evicting the oldest connection still sending its head", {
          peer: oldest.peer,
          limit: this.#maxPendingHeads,
        });
        oldest.abortHead(overloaded(
          `server overloaded: too many connections sending request headers (limit ${this.#maxPendingHeads}); the oldest is closed`,
          this.#options.core.serverId,
        ));
      }
    }
    this.#pendingHeads.add(frontend);
  }

  closeAll(): void {
    for (const s of this.#sockets) s.close();
  }

  /** Resolves once no connection is open (at once when none is). */
  idle(): Promise<void> {
    return this.#sockets.size === 0 ? Promise.resolve() : this.#idle.promise;
  }
}

/** Starts an HTTP-CONNECT listener feeding `core`. */
export function serveHttpConnect(
  options: HttpConnectListenerOptions,
): Promise<HttpConnectListener> {
  const connections = new ConnectionSet(options);
  return options.udsPath
    ? serveUds(options.udsPath, connections, options.logger ?? nullLogger)
    : serveTls(options, connections);
}

/**
 * Accepts until the listener is closed. A failed accept (EMFILE: out of descriptors) is logged
 * and retried after a bounded back-off instead of ending the loop.
 */
async function acceptLoop(listener: Deno.Listener, connections: ConnectionSet, log: Logger) {
  let backoff = 0;
  while (true) {
    let conn: Deno.Conn;
    try {
      conn = await listener.accept();
    } catch (err) {
      if (err instanceof Deno.errors.BadResource || err instanceof Deno.errors.Interrupted) return;
      backoff = Math.min(Math.max(backoff * 2, ACCEPT_BACKOFF_MS[0]), ACCEPT_BACKOFF_MS[1]);
      log.warn("http-connect accept failed; retrying", { error: errorMessage(err), backoff });
      await new Promise((resolve) => setTimeout(resolve, backoff));
      continue;
    }
    backoff = 0;
    connections.handle(conn, "unix");
  }
}

async function serveUds(
  path: string,
  connections: ConnectionSet,
  log: Logger,
): Promise<HttpConnectListener> {
  await rm(path, { force: true });
  const listener = Deno.listen({ transport: "unix", path });
  await chmod(path, 0o770);
  acceptLoop(listener, connections, log);
  let listening = true;
  const stopAccepting = () => {
    if (listening) listener.close();
    listening = false;
  };
  return {
    port: 0,
    get connections() {
      return connections.size;
    },
    updateTls() {},
    async close(graceful = false) {
      stopAccepting();
      if (graceful) {
        // Without the file a client's connect fails at once (ENOENT), as after a full close.
        await rm(path, { force: true });
        await connections.idle();
        return;
      }
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
      const peer = `${socket.remoteAddress}:${socket.remotePort}`;
      connections.handle({ ...fromNodeSocket(socket), abort: () => resetSocket(socket) }, peer);
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
    async close(graceful = false) {
      if (graceful) {
        listener.stopAccepting();
        await connections.idle();
        return;
      }
      connections.closeAll();
      await listener.close();
    },
  };
}

/**
 * Resets a TLS client's TCP connection (RST). Deno's node:tls runs TLS over an inner TCP socket
 * (`_parent`), and only resetting that one sends an RST (the outer socket's `resetAndDestroy()`
 * just closes); elsewhere the outer socket is reset. A plain destroy is the fallback.
 */
function resetSocket(socket: TLSSocket): void {
  const inner = (socket as unknown as { _parent?: { resetAndDestroy?: () => void } })._parent;
  try {
    if (typeof inner?.resetAndDestroy === "function") inner.resetAndDestroy();
    else socket.resetAndDestroy();
  } catch { /* not a TCP socket underneath: destroyed below */ }
  socket.destroy();
}
