/**
 * Listeners of the HTTP-CONNECT frontend: plaintext on a Unix domain socket (`Deno.listen`), or
 * TCP with TLS and mandatory client certificates (node:tls, since `Deno.listenTls` cannot verify
 * client certificates). HTTP/1.1 only.
 *
 * @module
 */

import { chmod, rm } from "node:fs/promises";
import { createServer, type SecureContextOptions, type TLSSocket } from "node:tls";
import { Buffer } from "node:buffer";
import type { ByteSocket } from "@knp/transport/byte_socket";
import { fromNodeSocket } from "@knp/transport/byte_socket";
import { errorMessage } from "@knp/core/errors";
import type { TlsMaterial } from "@knp/transport/grpc_stream";
import { type Logger, nullLogger } from "@knp/core/log";
import { HttpConnectFrontend, type HttpConnectLimits } from "./http_connect_frontend.ts";
import type { ProxyServer } from "./proxy_server.ts";

/** Options of {@linkcode serveHttpConnect}. */
export interface HttpConnectListenerOptions extends HttpConnectLimits {
  core: ProxyServer;
  /** Unix socket path (plaintext); otherwise TCP on hostname:port with TLS. */
  udsPath?: string;
  hostname?: string;
  port?: number;
  /** TLS for TCP: cert, key and the CA that verifies client certificates (required). */
  tls?: TlsMaterial;
  /** Extra node:tls context options (min version, ciphers). */
  tlsOptions?: SecureContextOptions;
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

function contextOptions(tls: TlsMaterial, extra: SecureContextOptions = {}): SecureContextOptions {
  return {
    ...extra,
    cert: tls.cert && Buffer.from(tls.cert),
    key: tls.key && Buffer.from(tls.key),
    ca: tls.ca && Buffer.from(tls.ca),
  };
}

/** Starts an HTTP-CONNECT listener feeding `core`. */
export async function serveHttpConnect(
  options: HttpConnectListenerOptions,
): Promise<HttpConnectListener> {
  const log = options.logger ?? nullLogger;
  const maxPendingHeads = options.maxPendingHeads ?? 1024;
  let pendingHeads = 0;
  let open = 0;
  const sockets = new Set<ByteSocket>();

  async function handle(socket: ByteSocket, peer: string): Promise<void> {
    open++;
    sockets.add(socket);
    const frontend = new HttpConnectFrontend(socket, peer, options.core.serverId, options);
    try {
      if (pendingHeads >= maxPendingHeads) {
        await socket.write(
          new TextEncoder().encode(
            "HTTP/1.1 503 Service Unavailable\r\nContent-Type: text/plain; charset=utf-8\r\n" +
              "Connection: close\r\n\r\nserver overloaded: too many connections sending request headers\n",
          ),
        ).catch(() => {});
        socket.close();
        return;
      }
      pendingHeads++;
      let ok: boolean;
      try {
        ok = await frontend.readHead();
      } finally {
        pendingHeads--;
      }
      if (!ok) return;
      const ended = Promise.withResolvers<void>();
      const conn = options.core.serveFrontend(wrapEnd(frontend, ended.resolve), frontend.userAgent);
      void conn;
      await ended.promise;
    } catch (err) {
      log.warn("http-connect connection failed", { peer, error: errorMessage(err) });
      socket.close();
    } finally {
      open--;
      sockets.delete(socket);
    }
  }

  if (options.udsPath) {
    await rm(options.udsPath, { force: true });
    const listener = Deno.listen({ transport: "unix", path: options.udsPath });
    await chmod(options.udsPath, 0o770);
    (async () => {
      for await (const conn of listener) handle(conn, "unix");
    })().catch(() => {});
    return {
      port: 0,
      get connections() {
        return open;
      },
      updateTls() {},
      async close() {
        listener.close();
        for (const s of sockets) s.close();
        await rm(options.udsPath!, { force: true });
      },
    };
  }

  if (!options.tls?.cert || !options.tls.key || !options.tls.ca) {
    throw new TypeError("HTTP-CONNECT over TCP needs a certificate, a key and a client CA");
  }
  const server = createServer({
    ...contextOptions(options.tls, options.tlsOptions),
    requestCert: true,
    rejectUnauthorized: true,
    ALPNProtocols: ["http/1.1"],
    // The TLS handshake counts against the head's time bound (node's default is 120 s).
    handshakeTimeout: options.headerTimeoutMs ?? 10_000,
  }, (socket: TLSSocket) => {
    handle(fromNodeSocket(socket), `${socket.remoteAddress}:${socket.remotePort}`);
  });
  server.on("tlsClientError", (err: Error, socket?: TLSSocket) => {
    log.info("TLS handshake failed on the HTTP-CONNECT frontend", { error: err.message });
    // Deno's node:tls reports a failed or timed-out handshake but leaves the socket open.
    socket?.destroy();
  });
  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(options.port ?? 8090, options.hostname || "0.0.0.0", () => resolve());
  });
  const address = server.address();
  return {
    port: typeof address === "object" && address ? address.port : 0,
    get connections() {
      return open;
    },
    updateTls(tls, extra) {
      server.setSecureContext(contextOptions(tls, { ...options.tlsOptions, ...extra }));
    },
    async close() {
      for (const s of sockets) s.close();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}

/** Calls `onEnd` once the frontend stream is over (the handler chain stays the core's). */
function wrapEnd(frontend: HttpConnectFrontend, onEnd: () => void): HttpConnectFrontend {
  const start = frontend.start.bind(frontend);
  frontend.start = (handler) =>
    start({
      onPacket: (p) => handler.onPacket(p),
      onEnd: (error) => {
        handler.onEnd(error);
        onEnd();
      },
    });
  return frontend;
}
