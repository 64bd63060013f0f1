/**
 * The only module that touches grpc-js. It serves and dials the two package-less services
 * (`/ProxyService/Proxy`, `/AgentService/Connect`) with our own Packet codec, and turns each
 * bidirectional call into a {@linkcode PacketStream}.
 *
 * Malformed packets end only the stream they arrived on, with gRPC status INVALID_ARGUMENT and a
 * message saying what was wrong.
 *
 * @module
 */

import * as grpc from "@grpc/grpc-js";
import { Buffer } from "node:buffer";
import { chmod, rm } from "node:fs/promises";
import { checkServerIdentity, type PeerCertificate } from "node:tls";
import { isIP } from "node:net";
import { decodePacket, encodePacket } from "@knp/proto";
import { AGENT_METHOD_PATH, PROXY_METHOD_PATH } from "@knp/proto";
import type { Packet } from "@knp/proto";
import { payloadBytes } from "@knp/proto";
import { errorMessage, KnpError } from "@knp/core/errors";
import type { PacketHandler, PacketStream } from "./packet_stream.ts";
import { SendAccounting } from "./packet_stream.ts";
import {
  isTlsSource,
  secureContextOptions,
  type TlsMaterial,
  type TlsPolicy,
  type TlsSource,
} from "./tls_files.ts";

export type { TlsMaterial, TlsPolicy, TlsSource };

function serialize(packet: Packet): Buffer {
  const bytes = encodePacket(packet);
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
}

function identity(buf: Buffer): Buffer {
  return buf;
}

function methodDefinition(path: string) {
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

const METHODS: Record<ServiceName, { name: string; path: string }> = {
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
        return grpc.status.UNAUTHENTICATED;
      case "BUFFER_OVERFLOW":
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
      if (error) call.emit("error", { code: statusFor(error), details: error.message });
      else call.end();
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
    this.#onFinal?.();
    const handler = this.#handler;
    if (handler) handler.onEnd(error);
    else queueMicrotask(() => this.#handler?.onEnd(error));
  }
}

function grpcError(err: Partial<grpc.ServiceError>): KnpError {
  const code = err.code ?? grpc.status.UNKNOWN;
  const details = err.details || err.message || "stream error";
  return new KnpError("TUNNEL_CLOSED", `${grpc.status[code] ?? code}: ${details}`, { cause: err });
}

/** What a server-side stream handler gets besides the stream. */
export interface IncomingStream {
  stream: GrpcPacketStream;
  /** Request metadata values for a (lowercase) key. */
  metadata(key: string): string[];
  /** Sends response headers (before any packet). */
  sendHeaders(headers: Record<string, string>): void;
  /** Fails the call with an error the peer sees as its status message. */
  reject(error: Error): void;
  /** Peer address. */
  peer: string;
}

// ---------------------------------------------------------------------------------------------
// Server TLS with hot reload.

type CaListener = grpc.experimental.CaCertificateUpdateListener;
type IdentityListener = grpc.experimental.IdentityCertificateUpdateListener;

/**
 * A grpc-js `CertificateProvider` over a {@linkcode TlsSource}: it hands grpc-js the current
 * identity (cert + key) and CA, and every later change. It listens to the source only while
 * grpc-js listens to it.
 */
export class TlsSourceCertificateProvider implements grpc.experimental.CertificateProvider {
  readonly #source: TlsSource;
  readonly #caListeners = new Set<CaListener>();
  readonly #identityListeners = new Set<IdentityListener>();
  #unsubscribe: (() => void) | undefined;

  constructor(source: TlsSource) {
    this.#source = source;
  }

  #caUpdate(material: TlsMaterial): grpc.experimental.CaCertificateUpdate | null {
    return material.ca ? { caCertificate: Buffer.from(material.ca) } : null;
  }

  #identityUpdate(material: TlsMaterial): grpc.experimental.IdentityCertificateUpdate | null {
    return material.cert && material.key
      ? { certificate: Buffer.from(material.cert), privateKey: Buffer.from(material.key) }
      : null;
  }

  #sync(): void {
    const listening = this.#caListeners.size + this.#identityListeners.size > 0;
    if (listening && !this.#unsubscribe) {
      this.#unsubscribe = this.#source.onChange((material) => {
        const identity = this.#identityUpdate(material);
        const ca = this.#caUpdate(material);
        for (const l of [...this.#identityListeners]) l(identity);
        for (const l of [...this.#caListeners]) l(ca);
      });
    } else if (!listening && this.#unsubscribe) {
      this.#unsubscribe();
      this.#unsubscribe = undefined;
    }
  }

  addCaCertificateListener(listener: CaListener): void {
    this.#caListeners.add(listener);
    this.#sync();
    listener(this.#caUpdate(this.#source.current()));
  }

  removeCaCertificateListener(listener: CaListener): void {
    this.#caListeners.delete(listener);
    this.#sync();
  }

  addIdentityCertificateListener(listener: IdentityListener): void {
    this.#identityListeners.add(listener);
    this.#sync();
    listener(this.#identityUpdate(this.#source.current()));
  }

  removeIdentityCertificateListener(listener: IdentityListener): void {
    this.#identityListeners.delete(listener);
    this.#sync();
  }
}

type ContextOptions = ReturnType<grpc.ServerCredentials["_getSecureContextOptions"]>;
type ContextWatcher = (options: ContextOptions) => void;

/**
 * Adds the {@linkcode TlsPolicy} (minVersion, ciphers) to what other server credentials give the
 * http2 secure server: its constructor options, its initial secure context, and every context
 * passed to `setSecureContext()` on reload. The last one matters: Deno's `setSecureContext` does
 * not keep the server's `minVersion`, so every new context must carry it.
 */
class PolicyServerCredentials extends grpc.ServerCredentials {
  readonly #inner: grpc.ServerCredentials;
  readonly #initial: () => ContextOptions;
  readonly #policy: TlsPolicy;
  readonly #watchers = new Map<ContextWatcher, ContextWatcher>();

  constructor(inner: grpc.ServerCredentials, initial: () => ContextOptions, policy: TlsPolicy) {
    super(inner._getConstructorOptions());
    this.#inner = inner;
    this.#initial = initial;
    this.#policy = policy;
  }

  #withPolicy<T extends object>(options: T): T {
    const out: T & { minVersion?: string; ciphers?: string } = { ...options };
    out.minVersion = this.#policy.minVersion ?? "TLSv1.2";
    if (this.#policy.ciphers) out.ciphers = this.#policy.ciphers;
    return out;
  }

  override _isSecure(): boolean {
    return this.#inner._isSecure();
  }

  override _getConstructorOptions(): ReturnType<grpc.ServerCredentials["_getConstructorOptions"]> {
    const options = this.#inner._getConstructorOptions();
    return options && this.#withPolicy(options);
  }

  override _getSecureContextOptions(): ContextOptions {
    // The provider credentials only know their material once a watcher listens; grpc-js asks for
    // the initial context before that, so answer from the source then.
    const options = this.#inner._getSecureContextOptions() ?? this.#initial();
    return options && this.#withPolicy(options);
  }

  override _addWatcher(watcher: ContextWatcher): void {
    const wrapped: ContextWatcher = (options) => watcher(options && this.#withPolicy(options));
    this.#watchers.set(watcher, wrapped);
    this.#inner._addWatcher(wrapped);
  }

  override _removeWatcher(watcher: ContextWatcher): void {
    const wrapped = this.#watchers.get(watcher);
    if (!wrapped) return;
    this.#watchers.delete(watcher);
    this.#inner._removeWatcher(wrapped);
  }

  override _getInterceptors(): grpc.ServerInterceptor[] {
    return this.#inner._getInterceptors();
  }

  override _equals(other: grpc.ServerCredentials): boolean {
    return other === this;
  }
}

/**
 * Server credentials for `tls` (fixed or reloading) and `policy`: grpc-js's certificate-provider
 * credentials fed by a {@linkcode TlsSourceCertificateProvider}, requiring and verifying client
 * certificates when the material has a CA (mTLS). Only the given CA is used to verify clients
 * (never the system roots: Deno sends every `ca` certificate in the server's chain).
 *
 * @throws {KnpError} `CONFIG` when the material has no certificate or no key
 */
export function reloadingServerCredentials(
  tls: TlsMaterial | TlsSource,
  policy: TlsPolicy = {},
): grpc.ServerCredentials {
  const source: TlsSource = isTlsSource(tls)
    ? tls
    : { current: () => tls, onChange: () => () => {} };
  const initial = source.current();
  // Throws for a missing cert or key.
  secureContextOptions(initial, policy);
  const provider = new TlsSourceCertificateProvider(source);
  const mtls = initial.ca !== undefined;
  // grpc-js 1.14.7's declaration names the parameters (ca, identity), but the implementation
  // passes them on as (identity, ca): the first is the identity provider, the second the CA one.
  const inner = grpc.experimental.createCertificateProviderServerCredentials(
    provider,
    mtls ? provider : null,
    mtls,
  );
  return new PolicyServerCredentials(
    inner,
    () => secureContextOptions(source.current()),
    policy,
  );
}

/** Options of {@linkcode serveGrpc}. */
export interface ServeGrpcOptions {
  service: ServiceName;
  /** "host:port" or "unix:/absolute/path". */
  address: string;
  /**
   * TLS material; absent means plaintext (h2c), as upstream uses on the UDS. A CA enables mTLS.
   * A {@linkcode TlsSource} (e.g. `TlsFiles`) is hot-reloaded: new handshakes use the new
   * material, established connections keep theirs.
   */
  tls?: TlsMaterial | TlsSource;
  /** Minimum TLS version and cipher list (TLS only). @default { minVersion: "TLSv1.2" } */
  tlsPolicy?: TlsPolicy;
  keepaliveTimeMs?: number;
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

function metadataValues(md: grpc.Metadata, key: string): string[] {
  return md.get(key).map((v) => (typeof v === "string" ? v : new TextDecoder().decode(v)));
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
  if (udsPath) await chmod(udsPath, 0o770);
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

/** Options of {@linkcode GrpcChannel}. */
export interface GrpcChannelOptions {
  /** "host:port" or "unix:/absolute/path". */
  target: string;
  /** TLS: CA to verify the server, optional client certificate. Absent: plaintext. */
  tls?: TlsMaterial & { serverName?: string };
  keepaliveTimeMs?: number;
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
  readonly target: string;

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
