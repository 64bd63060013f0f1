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
import type { Packet } from "@knp/proto";
import {
  GrpcPacketStream,
  type IncomingStream,
  methodDefinition,
  METHODS,
  type ServiceName,
} from "./grpc_stream.ts";
import { grpcKeepaliveOptions, metadataValues } from "./grpc_internal.ts";
import { watchTlsClientErrors } from "./grpc_private.ts";
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

/**
 * Serves one of the two services.
 *
 * @throws {Error} when the address cannot be bound
 */
export async function serveGrpc(options: ServeGrpcOptions): Promise<GrpcServerHandle> {
  const channelOptions: grpc.ServerOptions = {
    "grpc.keepalive_time_ms": options.keepaliveTimeMs ?? 3_600_000,
    "grpc.keepalive_permit_without_calls": 1,
    "grpc.max_receive_message_length": 4 * 1024 * 1024 + 1024,
    ...(options.keepalive ? grpcKeepaliveOptions(options.keepalive) : {}),
    ...(options.idleTimeoutMs ? { "grpc.max_connection_idle_ms": options.idleTimeoutMs } : {}),
  };
  const server = new grpc.Server(channelOptions);
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
  const credentials = options.tls
    ? reloadingServerCredentials(options.tls, options.tlsPolicy ?? {})
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
