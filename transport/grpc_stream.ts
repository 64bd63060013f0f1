/**
 * The grpc-js side of a bidirectional call as a {@linkcode PacketStream}, plus what the server
 * (`grpc_server.ts`) and the client (`grpc_channel.ts`) share: the two package-less services
 * (`/ProxyService/Proxy`, `/AgentService/Connect`) with our own Packet codec, and error mapping.
 * grpc-js is touched only by the `grpc_*.ts` modules; its private API only by `grpc_private.ts`.
 *
 * Malformed packets end only the stream they arrived on, with gRPC status INVALID_ARGUMENT and a
 * message saying what was wrong.
 *
 * @module
 */

import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { decodePacket, encodePacket } from "@knp/proto";
import { AGENT_METHOD_PATH, PROXY_METHOD_PATH } from "@knp/proto";
import type { Packet } from "@knp/proto";
import { payloadBytes } from "@knp/proto";
import { errorMessage, KnpError } from "@knp/core/errors";
import type { PacketHandler, PacketStream } from "./packet_stream.ts";
import { DoneSignal, SendAccounting } from "./packet_stream.ts";
import { grpcError, retryTrailers } from "./grpc_internal.ts";
import type { TlsMaterial, TlsSource } from "./tls_files.ts";
import type { TlsPolicy } from "./tls_policy.ts";

export type { TlsMaterial, TlsPolicy, TlsSource };

/** Encodes a packet for grpc-js. @internal */
export function serialize(packet: Packet): Buffer {
  const bytes = encodePacket(packet);
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

/** The identity deserializer: packets are decoded by the stream. @internal */
export function identity(buf: Buffer): Buffer {
  return buf;
}

/** The grpc-js method definition of a service's only method. @internal */
export function methodDefinition(path: string): {
  path: string;
  requestStream: boolean;
  responseStream: boolean;
  requestSerialize: (packet: Packet) => Buffer;
  requestDeserialize: (buf: Buffer) => Buffer;
  responseSerialize: (packet: Packet) => Buffer;
  responseDeserialize: (buf: Buffer) => Buffer;
} {
  return {
    path,
    requestStream: true,
    responseStream: true,
    requestSerialize: serialize,
    requestDeserialize: identity,
    responseSerialize: serialize,
    responseDeserialize: identity,
  };
}

/** Which of the two services a server or call is for. */
export type ServiceName = "proxy" | "agent";

/** Method name and path of each service. @internal */
export const METHODS: Record<ServiceName, { name: string; path: string }> = {
  proxy: { name: "Proxy", path: PROXY_METHOD_PATH },
  agent: { name: "Connect", path: AGENT_METHOD_PATH },
};

type AnyDuplex =
  | grpc.ServerDuplexStream<Buffer, Packet>
  | grpc.ClientDuplexStream<Packet, Buffer>;

/** gRPC status code a stream is closed with, from our error codes. */
function statusFor(error: Error): grpc.status {
  if (error instanceof KnpError) {
    switch (error.code) {
      case "PACKET_DECODE":
      case "PROTOCOL":
        return grpc.status.INVALID_ARGUMENT;
      case "HANDSHAKE":
      case "UNAUTHENTICATED":
        return grpc.status.UNAUTHENTICATED;
      case "PERMISSION_DENIED":
      case "POLICY_DENIED":
        return grpc.status.PERMISSION_DENIED;
      case "BUFFER_OVERFLOW":
      case "OVERLOADED":
        return grpc.status.RESOURCE_EXHAUSTED;
      case "TIMEOUT":
        return grpc.status.DEADLINE_EXCEEDED;
    }
  }
  return grpc.status.UNAVAILABLE;
}

/** A grpc-js bidirectional call seen as a {@linkcode PacketStream}. */
export class GrpcPacketStream implements PacketStream {
  readonly peer: string;
  #call: AnyDuplex;
  #side: "server" | "client";
  #handler: PacketHandler | undefined;
  #acct: SendAccounting;
  #closed = false;
  #ended = false;
  #onFinal: (() => void) | undefined;
  #done = new DoneSignal();

  /** Wraps a grpc-js duplex `call` of one `side`; `onFinal` runs once the stream is over. */
  constructor(call: AnyDuplex, side: "server" | "client", peer: string, onFinal?: () => void) {
    this.#call = call;
    this.#side = side;
    this.peer = peer;
    this.#acct = new SendAccounting();
    this.#onFinal = onFinal;
    call.pause();
    call.on("data", (buf: Buffer) => this.#onData(buf));
    call.on("error", (err: grpc.ServiceError) => this.#end(grpcError(err)));
    if (side === "server") {
      // The client half-closed or went away: the stream is over for us.
      call.on("end", () => this.#end());
      call.on(
        "cancelled",
        () => this.#end(new KnpError("TUNNEL_CLOSED", "stream cancelled by peer")),
      );
    } else {
      (call as grpc.ClientDuplexStream<Packet, Buffer>).on("status", (s: grpc.StatusObject) => {
        if (s.code === grpc.status.OK) this.#end();
        else this.#end(grpcError({ ...s, message: s.details } as grpc.ServiceError));
      });
    }
  }

  get bufferedBytes(): number {
    return this.#acct.buffered;
  }

  get closed(): boolean {
    return this.#closed || this.#ended;
  }

  get done(): Promise<Error | undefined> {
    return this.#done.promise;
  }

  start(handler: PacketHandler): void {
    this.#handler = handler;
    this.#call.resume();
  }

  send(packet: Packet, onSent?: () => void): boolean {
    if (this.closed) return false;
    const bytes = payloadBytes(packet);
    const ok = this.#acct.add(bytes);
    try {
      this.#call.write(packet, () => {
        this.#acct.remove(bytes);
        onSent?.();
      });
    } catch (err) {
      this.#acct.remove(bytes);
      this.#end(new KnpError("TUNNEL_CLOSED", `send failed: ${errorMessage(err)}`, { cause: err }));
      return false;
    }
    return ok;
  }

  onDrain(callback: () => void): void {
    this.#acct.onDrain(callback);
  }

  pause(): void {
    this.#call.pause();
  }

  resume(): void {
    if (!this.#ended) this.#call.resume();
  }

  close(error?: Error): void {
    if (this.closed) return;
    this.#closed = true;
    if (this.#side === "server") {
      const call = this.#call as grpc.ServerDuplexStream<Buffer, Packet>;
      if (error) {
        const metadata = retryTrailers(error);
        call.emit("error", { code: statusFor(error), details: error.message, metadata });
      } else call.end();
    } else {
      const call = this.#call as grpc.ClientDuplexStream<Packet, Buffer>;
      if (error) call.cancel();
      else call.end();
    }
    // A server-side stream is over for us once we close it; a client-side one ends on its status.
    if (this.#side === "server" || error) this.#end(error);
  }

  #onData(buf: Buffer): void {
    if (this.#ended) return;
    let packet;
    try {
      packet = decodePacket(buf);
    } catch (err) {
      const error = err instanceof KnpError
        ? err
        : new KnpError("PACKET_DECODE", errorMessage(err), { cause: err });
      this.#closed = false;
      this.close(
        new KnpError("PACKET_DECODE", `malformed packet: ${error.message}`, { cause: err }),
      );
      return;
    }
    this.#handler?.onPacket(packet);
  }

  #end(error?: Error): void {
    if (this.#ended) return;
    this.#ended = true;
    this.#acct.flush();
    this.#done.settle(error);
    this.#onFinal?.();
    const handler = this.#handler;
    if (handler) handler.onEnd(error);
    else queueMicrotask(() => this.#handler?.onEnd(error));
  }
}

/** What a server-side stream handler gets besides the stream. */
export interface IncomingStream {
  /** The packet stream of the call. */
  stream: GrpcPacketStream;
  /** Request metadata values for a (lowercase) key. */
  metadata(key: string): string[];
  /** Sends response headers (before any packet). */
  sendHeaders(headers: Record<string, string>): void;
  /** Fails the call with an error the peer sees as its status message. */
  reject(error: Error): void;
  /** Peer address. */
  peer: string;
  /**
   * A stable key of the connection (HTTP/2 session) the call came on: the same object for every
   * call on one connection, distinct across connections; undefined when unknown.
   */
  session?: object | undefined;
  /**
   * The client's TLS facts, when the server only requested client certificates
   * (`clientCertificates: "requested"`) and leaves verifying them to the caller.
   */
  peerTls?: PeerTls | undefined;
}

/** What a TLS handshake showed of the client. */
export interface PeerTls {
  /** Whether the TLS stack verified the client's chain against the server's CA. */
  authorized: boolean;
  /** The TLS stack's reason when it did not. */
  authorizationError?: string | undefined;
  /** The client's certificates as PEM, leaf first (empty when it sent none). */
  chain: string[];
}
