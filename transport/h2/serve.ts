/**
 * `serveH2Grpc`: the native HTTP/2 transport's drop-in for grpc-js's `serveGrpc` — the same
 * options and the same `IncomingStream` shape — serving one of the two gRPC services with
 * {@linkcode H2ServerConnection}s: h2c on a Unix socket or plain TCP (`Deno.listen`), and TLS
 * (with client certificates required or only requested) through node:tls, adapted to bytes by
 * `fromNodeSocket` (see `serve_tls.ts`).
 *
 * ```ts ignore
 * const server = await serveH2Grpc({
 *   service: "proxy",
 *   address: "unix:/tmp/knp.sock",
 *   onStream: (incoming) => incoming.stream.start({ onPacket() {}, onEnd() {} }),
 * });
 * await server.close(true);
 * ```
 *
 * @module
 */

import { chmod, rm } from "node:fs/promises";
import type { ServeGrpcOptions } from "../grpc_server.ts";
import type { IncomingStream, PeerTls } from "../grpc_stream.ts";
import { METHODS } from "../grpc_stream.ts";
import type { ByteSocket } from "../byte_socket.ts";
import type { TLSSocket } from "node:tls";
import type { PacketStream } from "../packet_stream.ts";
import { keepaliveFor } from "../keepalive.ts";
import { H2ServerConnection } from "./connection.ts";
import type { H2ServerStream } from "./server_stream.ts";
import type { LocalSettings } from "./settings.ts";
import { listenTls } from "./serve_tls.ts";

export type { LocalSettings };

/** {@linkcode IncomingStream} with the stream as the {@linkcode PacketStream} it is. */
export interface H2IncomingStream extends Omit<IncomingStream, "stream"> {
  /** The packet stream of the call. */
  stream: PacketStream;
}

/** Options of {@linkcode serveH2Grpc}: those of `serveGrpc`, plus HTTP/2 tuning. */
export interface ServeH2GrpcOptions extends Omit<ServeGrpcOptions, "onStream"> {
  /** Our windows and frame limits. @default 8 MiB stream / 16 MiB connection windows */
  settings?: Partial<LocalSettings> | undefined;
  /** Upper bound of one coalesced write, in bytes. */
  batchBytes?: number | undefined;
  /**
   * TLS only: takes every connection that did not negotiate ALPN "h2" (ALPN "http/1.1" or none);
   * with it the listener offers ALPN `["h2", "http/1.1"]`, without it only "h2". Such a connection
   * skips `acceptClient` (which judges HTTP/2 clients): the handler gets the client's TLS facts
   * (when certificates are only requested) and decides itself. @default none
   */
  onOtherProtocol?:
    | ((socket: TLSSocket, peer: string, peerTls: PeerTls | undefined) => void)
    | undefined;
  /** Called for every new call. */
  onStream(incoming: H2IncomingStream): void;
}

/** A running server (the same shape as `serveGrpc`'s). */
export interface H2ServerHandle {
  /** Bound TCP port (0 for a UDS). */
  port: number;
  /** Live connections. */
  readonly connections: number;
  /** Stops the server: `graceful` drains open calls with GOAWAY; otherwise they are cut. */
  close(graceful?: boolean): Promise<void>;
}

/** An accepted connection: its bytes, peer name and TLS facts. */
export interface Accepted {
  /** The byte stream. */
  socket: ByteSocket;
  /** "host:port" or "unix:path". */
  peer: string;
  /** TLS facts when client certificates are only requested. */
  peerTls?: PeerTls | undefined;
}

/** A listening socket handing out {@linkcode Accepted} connections. */
export interface Acceptor {
  /** Bound TCP port (0 for a UDS). */
  port: number;
  /** Stops accepting. */
  stop(): Promise<void>;
}

/**
 * Serves one of the two services over the native HTTP/2 transport.
 * @throws {Error} when the address cannot be bound
 */
export async function serveH2Grpc(options: ServeH2GrpcOptions): Promise<H2ServerHandle> {
  const connections = new Set<H2ServerConnection>();
  const serve = (accepted: Accepted) => {
    const conn = connectionFor(accepted, options);
    connections.add(conn);
    void conn.run();
    void conn.closed.then(() => connections.delete(conn));
  };
  const udsPath = options.address.startsWith("unix:") ? options.address.slice(5) : undefined;
  let acceptor: Acceptor;
  if (udsPath) acceptor = listenPlain(Deno.listen({ transport: "unix", path: udsPath }), serve);
  else if (options.tls) acceptor = await listenTls(options, serve);
  else {
    const [hostname, port] = splitHostPort(options.address);
    acceptor = listenPlain(Deno.listen({ hostname, port }), serve);
  }
  if (udsPath) await chmod(udsPath, 0o770);
  return {
    port: acceptor.port,
    get connections() {
      return connections.size;
    },
    async close(graceful = false) {
      await acceptor.stop();
      await Promise.all([...connections].map((c) => c.shutdown(graceful)));
      if (udsPath) await rm(udsPath, { force: true });
    },
  };
}

/** A connection serving the options' service on an accepted socket. */
function connectionFor(accepted: Accepted, options: ServeH2GrpcOptions): H2ServerConnection {
  const keepalive = options.keepalive ?? keepaliveFor(options.keepaliveTimeMs ?? 3_600_000);
  const session = {};
  return new H2ServerConnection(accepted.socket, {
    peer: accepted.peer,
    path: METHODS[options.service].path,
    maxMessageBytes: options.maxMessageBytes ?? 4 * 1024 * 1024 + 1024,
    settings: options.settings,
    keepalive,
    idleTimeoutMs: options.idleTimeoutMs,
    batchBytes: options.batchBytes,
    onStream(stream) {
      options.onStream(incomingFor(stream, accepted, session));
    },
  });
}

/** The call as an {@linkcode H2IncomingStream}. */
function incomingFor(
  stream: H2ServerStream,
  accepted: Accepted,
  session: object,
): H2IncomingStream {
  return {
    stream,
    peer: accepted.peer,
    session,
    peerTls: accepted.peerTls,
    metadata: (key) => metadataValues(stream.headers.get(key.toLowerCase()), key),
    sendHeaders: (headers) => stream.sendHeaders(headers),
    reject: (error) => stream.close(error),
  };
}

/** Header values as gRPC metadata: `-bin` values base64-decoded (and split on commas). */
function metadataValues(values: string[] | undefined, key: string): string[] {
  if (!values) return [];
  if (!key.endsWith("-bin")) return values;
  return values.flatMap((v) => v.split(",")).map((v) =>
    new TextDecoder().decode(Uint8Array.fromBase64(v.trim(), { lastChunkHandling: "loose" }))
  );
}

/** Accepts connections of a Deno listener (TCP or Unix) until stopped. */
function listenPlain(listener: Deno.Listener, serve: (a: Accepted) => void): Acceptor {
  const loop = (async () => {
    try {
      for await (const conn of listener) {
        if (conn.remoteAddr.transport === "tcp") (conn as Deno.TcpConn).setNoDelay(true);
        serve({ socket: conn, peer: peerOf(conn.remoteAddr) });
      }
    } catch { /* listener closed */ }
  })();
  const addr = listener.addr;
  return {
    port: addr.transport === "tcp" ? addr.port : 0,
    async stop() {
      try {
        listener.close();
      } catch { /* closed already */ }
      await loop;
    },
  };
}

function peerOf(addr: Deno.Addr): string {
  if (addr.transport === "tcp" || addr.transport === "udp") {
    return addr.hostname.includes(":")
      ? `[${addr.hostname}]:${addr.port}`
      : `${addr.hostname}:${addr.port}`;
  }
  return `unix:${"path" in addr ? addr.path || "" : ""}`;
}

/** "host:port" (IPv6 in brackets) as hostname and port. */
export function splitHostPort(address: string): [string, number] {
  const at = address.lastIndexOf(":");
  const host = address.slice(0, at).replace(/^\[|\]$/g, "");
  return [host || "0.0.0.0", Number(address.slice(at + 1))];
}
