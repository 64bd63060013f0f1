/**
 * `TlsListener`: one TCP listening socket whose TLS material can change while it runs.
 *
 * A reload swaps the TLS context in place (node:tls `Server.setSecureContext`): handshakes that
 * start afterwards use the new material, connections already open keep theirs, and the listening
 * socket is never closed or rebound, so the port does not refuse connections in between.
 * Every accepted socket gets `TCP_NODELAY` (a small write must not wait for the peer's ACK).
 *
 * ```ts
 * import type { TlsFiles } from "./tls_files.ts";
 *
 * async function serve(files: TlsFiles): Promise<TlsListener> {
 *   const listener = await TlsListener.listen({
 *     port: 0,
 *     tls: files.current(),
 *     onConnection: (socket) => socket.end("hello\n"),
 *   });
 *   files.onChange((material) => listener.updateTls(material));
 *   return listener;
 * }
 * ```
 *
 * @module
 */

import { Buffer } from "node:buffer";
import type { Socket } from "node:net";
import { createServer, type SecureContextOptions, type Server, type TLSSocket } from "node:tls";
import { KnpError } from "@knp/core/errors";
import type { TlsMaterial } from "./tls_files.ts";

/** Idle time before TCP keepalive probes start on an accepted connection. */
export const TCP_KEEPALIVE_IDLE_MS = 15_000;

/** Options of {@linkcode TlsListener.listen}. */
export interface TlsListenerOptions {
  /** Address to bind. @default "0.0.0.0" */
  hostname?: string | undefined;
  /** 0 picks a free port. */
  port: number;
  /** Certificate and key; with `requestClientCert` the CA verifies client certificates. */
  tls: TlsMaterial;
  /** Require and verify a client certificate against `tls.ca` (mTLS). @default false */
  requestClientCert?: boolean;
  /** Extra context options (minimum version, ciphers) applied on every (re)load. */
  contextOptions?: SecureContextOptions | undefined;
  /** ALPN protocols offered. */
  alpnProtocols?: string[];
  /** Bound on a TLS handshake. @default 120000 (node's default) */
  handshakeTimeoutMs?: number | undefined;
  /** Called with each connection whose handshake succeeded. */
  onConnection(socket: TLSSocket): void;
  /** Called when a handshake fails; the socket is destroyed afterwards. */
  onHandshakeError?: (error: Error) => void;
}

/** node:tls context options for `material` (the CA only with client certificates). */
function contextFor(
  material: TlsMaterial,
  withCa: boolean,
  extra: SecureContextOptions = {},
): SecureContextOptions {
  if (!material.cert || !material.key) {
    throw new KnpError("CONFIG", "a TLS listener needs a certificate and a key");
  }
  const options: SecureContextOptions = {
    ...extra,
    cert: Buffer.from(material.cert),
    key: Buffer.from(material.key),
  };
  // Deno's node:tls sends every `ca` certificate in its chain: pass it only when it verifies peers.
  if (withCa && material.ca) options.ca = Buffer.from(material.ca);
  return options;
}

/** A listening TLS socket with hot-swappable material. */
export class TlsListener {
  readonly #server: Server;
  readonly #options: TlsListenerOptions;
  readonly #sockets = new Set<Socket>();
  #port = 0;
  /** Settles once the listening socket closed (node: and its connections ended). */
  #stopped: Promise<void> | undefined;

  private constructor(server: Server, options: TlsListenerOptions) {
    this.#server = server;
    this.#options = options;
  }

  /** Binds and starts accepting. @throws {Error} when the port cannot be bound */
  static async listen(options: TlsListenerOptions): Promise<TlsListener> {
    const mtls = options.requestClientCert ?? false;
    if (mtls && !options.tls.ca) {
      throw new KnpError("CONFIG", "a TLS listener that verifies clients needs a CA");
    }
    const server = createServer({
      ...contextFor(options.tls, mtls, options.contextOptions),
      requestCert: mtls,
      rejectUnauthorized: mtls,
      ...(options.alpnProtocols ? { ALPNProtocols: options.alpnProtocols } : {}),
      handshakeTimeout: options.handshakeTimeoutMs ?? 120_000,
    }, (socket: TLSSocket) => {
      socket.setNoDelay(true);
      options.onConnection(socket);
    });
    const listener = new TlsListener(server, options);
    server.on("connection", (raw: Socket) => listener.#accepted(raw));
    server.on("tlsClientError", (err: Error, socket?: TLSSocket) => {
      options.onHandshakeError?.(err);
      // Deno's node:tls reports a failed or timed-out handshake but leaves the socket open.
      socket?.destroy();
    });
    await new Promise<void>((resolve, reject) => {
      server.once("error", reject);
      server.listen(options.port, options.hostname || "0.0.0.0", () => {
        server.off("error", reject);
        resolve();
      });
    });
    const address = server.address();
    listener.#port = typeof address === "object" && address ? address.port : 0;
    return listener;
  }

  #accepted(raw: Socket): void {
    raw.setNoDelay(true);
    // A client that closed cleanly while its bytes wait unread behind a paused reader shows no
    // EOF; TCP keepalive turns its vanished socket into a reset (one probe after this long idle
    // is answered by the closing peer, a later one by its kernel's reset).
    raw.setKeepAlive(true, TCP_KEEPALIVE_IDLE_MS);
    this.#sockets.add(raw);
    raw.once("close", () => this.#sockets.delete(raw));
  }

  /** The bound port. */
  get port(): number {
    return this.#port;
  }

  /**
   * New handshakes use `material` (and `extra` context options, default: the listener's own);
   * open connections and the listening socket are untouched.
   *
   * @throws {KnpError} `CONFIG` when the material lacks a certificate or key
   */
  updateTls(material: TlsMaterial, extra?: SecureContextOptions): void {
    const mtls = this.#options.requestClientCert ?? false;
    this.#server.setSecureContext(
      contextFor(material, mtls, extra ?? this.#options.contextOptions),
    );
  }

  /**
   * Closes the listening socket (new connections are refused) and keeps every accepted socket,
   * handshakes in progress included. Synchronous: the port refuses once it returns.
   */
  stopAccepting(): void {
    this.#stopped ??= new Promise<void>((resolve) => this.#server.close(() => resolve()));
  }

  /** Stops listening and destroys every accepted socket. */
  async close(): Promise<void> {
    this.stopAccepting();
    for (const socket of this.#sockets) socket.destroy();
    await this.#stopped;
  }
}
