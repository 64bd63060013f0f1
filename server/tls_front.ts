/**
 * `TlsFront`: terminates TLS for a local plaintext `Deno.serve`. Deno's HTTP server binds its own
 * TLS listener and cannot change its certificate while it runs; a {@linkcode TlsListener} can.
 * So the public port is a `TlsListener`, and each decrypted connection is spliced to a plaintext
 * `Deno.serve` on a loopback port. A certificate reload swaps the TLS context in place: the public
 * socket is never closed or rebound, and open connections keep their sessions.
 *
 * The HTTP handler is told the public connection's peer.
 *
 * @module
 */

import type { TLSSocket } from "node:tls";
import { TlsListener } from "@knp/transport/tls_listener";
import type { TlsMaterial } from "@knp/transport/tls_files";
import type { Logger } from "@knp/core/log";

/** Options of {@linkcode TlsFront.start}. */
export interface TlsFrontOptions {
  hostname?: string | undefined;
  port: number;
  /** Certificate and key of the public port. */
  tls: TlsMaterial;
  /** Bound on a TLS handshake. */
  handshakeTimeoutMs: number;
  /** The plaintext HTTP handler; `peer` is the public connection's "host:port". */
  handler: (req: Request, peer: string) => Response;
  logger: Logger;
}

/** Copies everything `conn` yields into `socket`, honouring `socket`'s backpressure. */
async function connToSocket(conn: Deno.TcpConn, socket: TLSSocket): Promise<void> {
  const buffer = new Uint8Array(64 * 1024);
  for (;;) {
    const n = await conn.read(buffer);
    if (n === null) break;
    if (!socket.write(buffer.slice(0, n))) {
      await new Promise<void>((resolve) => {
        socket.once("drain", resolve);
        socket.once("close", resolve);
      });
    }
  }
}

/** Copies everything `socket` yields into `conn`, pausing `socket` while `conn` writes. */
function socketToConn(socket: TLSSocket, conn: Deno.TcpConn, onError: () => void): void {
  socket.on("data", async (chunk: Uint8Array) => {
    socket.pause();
    try {
      for (let off = 0; off < chunk.byteLength;) off += await conn.write(chunk.subarray(off));
      socket.resume();
    } catch {
      onError();
    }
  });
  socket.on("end", () => conn.closeWrite().catch(onError));
}

/** A TLS port in front of a plaintext local HTTP server. */
export class TlsFront {
  readonly #listener: TlsListener;
  readonly #server: Deno.HttpServer<Deno.NetAddr>;

  private constructor(listener: TlsListener, server: Deno.HttpServer<Deno.NetAddr>) {
    this.#listener = listener;
    this.#server = server;
  }

  /** Binds the public TLS port and the loopback HTTP server. @throws {Error} on bind failure */
  static async start(options: TlsFrontOptions): Promise<TlsFront> {
    const peers = new Map<number, string>();
    const server = Deno.serve(
      { hostname: "127.0.0.1", port: 0, onListen() {} },
      (req, info) => options.handler(req, peerOf(peers, info.remoteAddr)),
    );
    const inner = server.addr.port;
    try {
      const listener = await TlsListener.listen({
        hostname: options.hostname,
        port: options.port,
        tls: options.tls,
        handshakeTimeoutMs: options.handshakeTimeoutMs,
        onConnection: (socket) => splice(socket, inner, peers),
        onHandshakeError: (err) => {
          options.logger.info("TLS handshake failed on the WebSocket agent link", {
            error: err.message,
          });
        },
      });
      return new TlsFront(listener, server);
    } catch (err) {
      await server.shutdown();
      throw err;
    }
  }

  /** The public TLS port. */
  get port(): number {
    return this.#listener.port;
  }

  /** New handshakes use `material`; the public socket and open connections are untouched. */
  updateTls(material: TlsMaterial): void {
    this.#listener.updateTls(material);
  }

  /** Stops both servers; open HTTP connections may finish first. */
  async close(): Promise<void> {
    await this.#server.shutdown();
    await this.#listener.close();
  }
}

/** The peer of the public connection behind a loopback connection, as "host:port". */
function peerOf(peers: Map<number, string>, inner: Deno.NetAddr): string {
  return peers.get(inner.port) ?? `${inner.hostname}:${inner.port}`;
}

/** Connects one decrypted public connection to the loopback server, both ways. */
function splice(socket: TLSSocket, innerPort: number, peers: Map<number, string>): void {
  const peer = `${socket.remoteAddress}:${socket.remotePort}`;
  socket.pause();
  Deno.connect({ hostname: "127.0.0.1", port: innerPort }).then((conn) => {
    const key = conn.localAddr.port;
    peers.set(key, peer);
    conn.setNoDelay(true);
    let closed = false;
    const close = () => {
      if (closed) return;
      closed = true;
      peers.delete(key);
      socket.destroy();
      try {
        conn.close();
      } catch { /* closed */ }
    };
    socket.on("error", close);
    socket.on("close", close);
    socketToConn(socket, conn, close);
    socket.resume();
    connToSocket(conn, socket).then(() => socket.end(), close);
  }, () => socket.destroy());
}
