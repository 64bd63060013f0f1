/**
 * The client side of the gRPC transport: {@linkcode GrpcChannel}, one HTTP/2 connection that
 * opens {@linkcode GrpcPacketStream}s, and {@linkcode silenceGrpcLogs}.
 *
 * @module
 */

import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { checkServerIdentity, type PeerCertificate } from "node:tls";
import { isIP } from "node:net";
import { KnpError } from "@knp/core/errors";
import { GrpcPacketStream, identity, METHODS, serialize, type ServiceName } from "./grpc_stream.ts";
import { grpcError, grpcKeepaliveOptions, metadataValues } from "./grpc_internal.ts";
import type { KeepaliveOptions } from "./packet_stream.ts";
import type { TlsMaterial, TlsSource } from "./tls_files.ts";

export type { TlsMaterial, TlsSource };

/** Options of {@linkcode GrpcChannel}. */
export interface GrpcChannelOptions {
  /** "host:port" or "unix:/absolute/path". */
  target: string;
  /** TLS: CA to verify the server, optional client certificate. Absent: plaintext. */
  tls?: (TlsMaterial & { serverName?: string | undefined }) | undefined;
  /** HTTP/2 ping interval (none by default). */
  keepaliveTimeMs?: number | undefined;
  /** Keepalive with a timeout; overrides `keepaliveTimeMs`. */
  keepalive?: KeepaliveOptions | undefined;
}

function targetHost(target: string): string {
  if (target.startsWith("[")) return target.slice(1, target.indexOf("]"));
  const i = target.lastIndexOf(":");
  return i < 0 ? target : target.slice(0, i);
}

/** A client connection (one HTTP/2 connection) that opens streams. */
export class GrpcChannel {
  #client: grpc.Client;
  #open = 0;
  #closed = false;
  /** The grpc-js target: "host:port" or "unix:/path". */
  readonly target: string;

  /** Creates the channel; it connects when the first stream opens. */
  constructor(options: GrpcChannelOptions) {
    this.target = options.target;
    const channelOptions: grpc.ChannelOptions = {
      "grpc.max_receive_message_length": 4 * 1024 * 1024 + 1024,
      // Each GrpcChannel is its own connection, as upstream opens a new one per attempt.
      "grpc.use_local_subchannel_pool": 1,
    };
    if (options.keepaliveTimeMs) {
      channelOptions["grpc.keepalive_time_ms"] = options.keepaliveTimeMs;
      channelOptions["grpc.keepalive_permit_without_calls"] = 1;
    }
    if (options.keepalive) Object.assign(channelOptions, grpcKeepaliveOptions(options.keepalive));
    let credentials = grpc.credentials.createInsecure();
    if (options.tls) {
      const { ca, cert, key, serverName } = options.tls;
      // Deno's node:tls refuses an IP address as SNI name; grpc-js uses the target host. For an
      // IP target, send a placeholder SNI name and verify the certificate against the IP.
      const host = targetHost(options.target);
      const verifyName = serverName ?? host;
      const verifyOptions = isIP(verifyName) !== 0
        ? {
          checkServerIdentity: (_name: string, peer: PeerCertificate) =>
            checkServerIdentity(verifyName, peer),
        }
        : {};
      credentials = grpc.credentials.createSsl(
        ca ? Buffer.from(ca) : null,
        key ? Buffer.from(key) : null,
        cert ? Buffer.from(cert) : null,
        verifyOptions,
      );
      if (isIP(verifyName) !== 0) {
        channelOptions["grpc.ssl_target_name_override"] = "ip-address.knp.invalid";
      } else if (serverName) channelOptions["grpc.ssl_target_name_override"] = serverName;
    }
    this.#client = new grpc.Client(options.target, credentials, channelOptions);
  }

  /** Number of streams opened on this channel and not yet over. */
  get openStreams(): number {
    return this.#open;
  }

  /**
   * Opens a stream. With `awaitHeaders`, resolves once the server's response headers arrive (the
   * agent protocol needs `serverid`/`servercount` before anything else).
   */
  openStream(
    service: ServiceName,
    metadata: Record<string, string>,
    options: { awaitHeaders?: boolean; signal?: AbortSignal } = {},
  ): Promise<{ stream: GrpcPacketStream; headers: (key: string) => string[] }> {
    if (this.#closed) {
      return Promise.reject(new KnpError("TUNNEL_CLOSED", "channel is closed"));
    }
    const md = new grpc.Metadata();
    for (const [k, v] of Object.entries(metadata)) md.set(k, v);
    const call = this.#client.makeBidiStreamRequest(
      METHODS[service].path,
      serialize,
      identity,
      md,
    );
    this.#open++;
    const stream = new GrpcPacketStream(call, "client", this.target, () => this.#open--);
    if (!options.awaitHeaders) {
      return Promise.resolve({ stream, headers: () => [] });
    }
    return new Promise((resolve, reject) => {
      const onAbort = () => {
        call.cancel();
        reject(new KnpError("TIMEOUT", "gave up waiting for response headers"));
      };
      options.signal?.addEventListener("abort", onAbort, { once: true });
      const fail = (err: grpc.StatusObject | grpc.ServiceError) => {
        options.signal?.removeEventListener("abort", onAbort);
        reject(grpcError(err as grpc.ServiceError));
      };
      call.once("metadata", (md: grpc.Metadata) => {
        options.signal?.removeEventListener("abort", onAbort);
        call.off("error", fail);
        call.off("status", fail);
        resolve({ stream, headers: (key) => metadataValues(md, key) });
      });
      call.once("error", fail);
      call.once("status", fail);
    });
  }

  /** Closes the connection and every stream on it. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#client.close();
  }
}

/** Stops grpc-js from printing to the console (binaries log for themselves). */
export function silenceGrpcLogs(): void {
  grpc.setLogVerbosity(grpc.logVerbosity.NONE);
}
