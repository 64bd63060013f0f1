/**
 * Serving one of the two gRPC services with grpc-js: every call becomes a
 * {@linkcode GrpcPacketStream} handed to `onStream`.
 *
 * @module
 */

import * as grpc from "@grpc/grpc-js";
import type { Buffer } from "node:buffer";
import { chmod, rm } from "node:fs/promises";
import type { Socket } from "node:net";
import type { DetailedPeerCertificate, TLSSocket } from "node:tls";
import type { Packet } from "@knp/proto";
import {
  GrpcPacketStream,
  type IncomingStream,
  methodDefinition,
  METHODS,
  type PeerTls,
  type ServiceName,
} from "./grpc_stream.ts";
import { grpcKeepaliveOptions, metadataValues } from "./grpc_internal.ts";
import { watchSecureConnections, watchTlsClientErrors } from "./grpc_private.ts";
import { reloadingServerCredentials } from "./grpc_credentials.ts";
import type { KeepaliveOptions } from "./packet_stream.ts";
import type { TlsMaterial, TlsSource } from "./tls_files.ts";
import type { TlsPolicy } from "./tls_policy.ts";

export type { TlsMaterial, TlsPolicy, TlsSource };

/** Options of {@linkcode serveGrpc}. */
export interface ServeGrpcOptions {
  /** Which service to serve: the frontend's `proxy` or the agents' `agent`. */
  service: ServiceName;
  /** "host:port" or "unix:/absolute/path". */
  address: string;
  /**
   * TLS material; absent means plaintext (h2c), as upstream uses on the UDS. A CA enables mTLS.
   * A {@linkcode TlsSource} (e.g. `TlsFiles`) is hot-reloaded: new handshakes use the new
   * material, established connections keep theirs.
   */
  tls?: TlsMaterial | TlsSource | undefined;
  /** Minimum TLS version and cipher list (TLS only). @default { minVersion: "TLSv1.2" } */
  tlsPolicy?: TlsPolicy | undefined;
  /** HTTP/2 ping interval. @default 3600000 */
  keepaliveTimeMs?: number | undefined;
  /**
   * Closes a connection (GOAWAY) that has had no open call for this long, including one that
   * never sends anything. @default unbounded
   */
  idleTimeoutMs?: number | undefined;
  /** Keepalive with a timeout; overrides `keepaliveTimeMs`. */
  keepalive?: KeepaliveOptions | undefined;
  /** Largest message the server accepts, in bytes. @default 4195328 (4 MiB + 1 KiB) */
  maxMessageBytes?: number | undefined;
  /**
   * With a CA: "required" (default) refuses a client without a certificate the CA verifies in the
   * TLS handshake; "requested" lets every client in and hands each call the client's TLS facts
   * (`IncomingStream.peerTls`) for the caller to verify and explain.
   */
  clientCertificates?: "required" | "requested" | undefined;
  /**
   * With `clientCertificates: "requested"`: called once per completed TLS handshake with the
   * client's TLS facts; false closes the connection before HTTP/2 sees a byte of it (the caller
   * logs why). @default accept every client
   */
  acceptClient?: ((tls: PeerTls, peer: string) => boolean) | undefined;
  /** Called for every failed TLS handshake, with the peer's "host:port" (TLS only). */
  onTlsClientError?: ((error: Error & { code?: string }, peer: string) => void) | undefined;
  /** Called for every new call. */
  onStream(incoming: IncomingStream): void;
}

/** A running gRPC server. */
export interface GrpcServerHandle {
  /** Bound TCP port (0 for a UDS). */
  port: number;
  /** Stops the server: `graceful` waits for open calls; otherwise they are cut. */
  close(graceful?: boolean): Promise<void>;
}

/** What {@linkcode noDelayOnAccept} needs of grpc-js's private per-address HTTP/2 servers. */
interface Http2Servers {
  http2Servers?: Map<{ on(event: "connection", cb: (socket: Socket) => void): void }, unknown>;
}

/**
 * grpc-js sets `TCP_NODELAY` on the sockets it connects but not on those its server accepts, so a
 * small response written behind another waited for the peer's delayed ACK. Every accepted
 * connection gets it here, through grpc-js 1.14's private `http2Servers` map (absent: no change).
 */
function noDelayOnAccept(server: grpc.Server): void {
  const servers = (server as unknown as Http2Servers).http2Servers;
  for (const http2 of servers?.keys() ?? []) {
    http2.on("connection", (socket) => {
      try {
        socket.setNoDelay(true);
      } catch { /* not TCP (a UDS) */ }
    });
  }
}

const PEM_LINE = /.{1,64}/g;

/** A call whose connection's TLS facts are unknown: nothing about it is verified. */
const NO_TLS_FACTS: PeerTls = {
  authorized: false,
  authorizationError: "the connection's TLS facts are unknown",
  chain: [],
};

/** A DER certificate as PEM. */
function pemOf(der: Uint8Array): string {
  const b64 = btoa(String.fromCharCode(...der));
  return `-----BEGIN CERTIFICATE-----\n${
    b64.match(PEM_LINE)!.join("\n")
  }\n-----END CERTIFICATE-----\n`;
}

/** The client's chain as PEM, leaf first, as far as the socket has it. */
function peerChain(socket: TLSSocket): string[] {
  const chain: string[] = [];
  let cert = socket.getPeerCertificate(true) as DetailedPeerCertificate | undefined;
  while (cert?.raw && chain.length < 10) {
    chain.push(pemOf(cert.raw));
    if (cert.issuerCertificate === cert) break;
    cert = cert.issuerCertificate;
  }
  return chain;
}

/**
 * Remembers the TLS facts of every live client connection by the peer "host:port" its calls
 * report (unique among live TCP connections).
 */
function trackPeerTls(
  server: grpc.Server,
  accept: ((tls: PeerTls, peer: string) => boolean) | undefined,
): Map<string, PeerTls> {
  const peers = new Map<string, PeerTls>();
  watchSecureConnections(server, (socket, peer) => {
    const error = socket.authorizationError;
    const facts: PeerTls = {
      authorized: socket.authorized === true,
      authorizationError: error ? String((error as Error).message ?? error) : undefined,
      chain: peerChain(socket),
    };
    if (accept && !accept(facts, peer)) {
      socket.destroy();
      return;
    }
    peers.set(peer, facts);
    socket.once("close", () => peers.delete(peer));
  });
  return peers;
}

/** Hands every call of the service to `options.onStream`, with its connection's TLS facts. */
function addCallHandler(
  server: grpc.Server,
  options: ServeGrpcOptions,
  tlsOf: (peer: string) => PeerTls | undefined,
): void {
  const method = METHODS[options.service];
  server.addService(
    { [method.name]: methodDefinition(method.path) } as unknown as grpc.ServiceDefinition,
    {
      [method.name]: (call: grpc.ServerDuplexStream<Buffer, Packet>) => {
        const peer = call.getPeer();
        const stream = new GrpcPacketStream(call, "server", peer);
        options.onStream({
          stream,
          peer,
          session: sessionOf(call),
          peerTls: tlsOf(peer),
          metadata: (key) => metadataValues(call.metadata, key),
          sendHeaders(headers) {
            const md = new grpc.Metadata();
            for (const [k, v] of Object.entries(headers)) md.set(k, v);
            call.sendMetadata(md);
          },
          reject(error) {
            stream.close(error);
          },
        });
      },
    },
  );
}

/**
 * The HTTP/2 session a call arrived on, as a stable key of its connection (distinct for distinct
 * connections, on a UDS too), through grpc-js 1.14's private call chain (`call.call`,
 * `nextCall`, `stream.session`); undefined when that chain is absent.
 */
function sessionOf(call: unknown): object | undefined {
  let c = (call as { call?: unknown }).call;
  for (let i = 0; i < 8 && typeof c === "object" && c !== null; i++) {
    const session = (c as { stream?: { session?: unknown } }).stream?.session;
    if (typeof session === "object" && session !== null) return session;
    c = (c as { nextCall?: unknown }).nextCall;
  }
  return undefined;
}

/**
 * Serves one of the two services.
 *
 * @throws {Error} when the address cannot be bound
 */
export async function serveGrpc(options: ServeGrpcOptions): Promise<GrpcServerHandle> {
  const channelOptions: grpc.ServerOptions = {
    "grpc.keepalive_time_ms": options.keepaliveTimeMs ?? 3_600_000,
    "grpc.keepalive_permit_without_calls": 1,
    "grpc.max_receive_message_length": options.maxMessageBytes ?? 4 * 1024 * 1024 + 1024,
    ...(options.keepalive ? grpcKeepaliveOptions(options.keepalive) : {}),
    ...(options.idleTimeoutMs ? { "grpc.max_connection_idle_ms": options.idleTimeoutMs } : {}),
  };
  const server = new grpc.Server(channelOptions);
  const requested = options.tls !== undefined && options.clientCertificates === "requested";
  let peerTls = new Map<string, PeerTls>();
  addCallHandler(
    server,
    options,
    (peer) => requested ? peerTls.get(peer) ?? NO_TLS_FACTS : undefined,
  );
  const credentials = options.tls
    ? reloadingServerCredentials(options.tls, options.tlsPolicy ?? {}, options.clientCertificates)
    : grpc.ServerCredentials.createInsecure();
  let udsPath: string | undefined;
  if (options.address.startsWith("unix:")) udsPath = options.address.slice(5);
  const port = await new Promise<number>((resolve, reject) => {
    server.bindAsync(
      options.address,
      credentials,
      (err, port) => err ? reject(err) : resolve(port),
    );
  });
  noDelayOnAccept(server);
  if (requested) peerTls = trackPeerTls(server, options.acceptClient);
  if (udsPath) await chmod(udsPath, 0o770);
  if (options.onTlsClientError) watchTlsClientErrors(server, options.onTlsClientError);
  return {
    port: udsPath ? 0 : port,
    async close(graceful = false) {
      if (graceful) {
        await new Promise<void>((resolve) => server.tryShutdown(() => resolve()));
      } else {
        server.forceShutdown();
      }
      if (udsPath) await rm(udsPath, { force: true });
    },
  };
}
