/**
 * Every use of grpc-js private API in knp, in one place.
 *
 * Why: grpc-js server credentials have no public way to set the TLS minimum version or cipher
 * list, and Deno's `setSecureContext()` does not keep the server's `minVersion`, so every secure
 * context grpc-js builds (initially and on each certificate reload) must carry the policy. The
 * only seam is the credentials object itself: grpc-js's `Server` calls the underscore methods
 * below (`_getConstructorOptions`, `_isSecure`, `_getSecureContextOptions`, `_addWatcher`,
 * `_removeWatcher`, `_getInterceptors`, `_equals`), so {@linkcode PolicyServerCredentials} wraps
 * other credentials and rewrites what they answer.
 *
 * These methods are not part of grpc-js's stable API and may change in any release. The version is
 * pinned ({@linkcode GRPC_JS_VERSION}, `npm:@grpc/grpc-js@1.14.7` in transport/deno.json), and
 * `grpc_private_test.ts` fails, naming the version and the method, when an upgrade removes or
 * renames one of {@linkcode GRPC_PRIVATE_METHODS} or the pin changes without this file.
 *
 * @module
 */

import * as grpc from "@grpc/grpc-js";
import type { TLSSocket } from "node:tls";
import type { TlsPolicy } from "./tls_policy.ts";

/** The grpc-js version this module was written and checked against. */
export const GRPC_JS_VERSION = "1.14.7";

/** The private `ServerCredentials` methods {@linkcode PolicyServerCredentials} relies on. */
export const GRPC_PRIVATE_METHODS = [
  "_getConstructorOptions",
  "_isSecure",
  "_getSecureContextOptions",
  "_addWatcher",
  "_removeWatcher",
  "_getInterceptors",
  "_equals",
] as const;

/** What grpc-js builds its secure contexts from. */
export type ContextOptions = ReturnType<grpc.ServerCredentials["_getSecureContextOptions"]>;
type ContextWatcher = (options: ContextOptions) => void;

/**
 * Adds the {@linkcode TlsPolicy} (minVersion, ciphers) to what other server credentials give the
 * http2 secure server: its constructor options, its initial secure context, and every context
 * passed to `setSecureContext()` on reload. The last one matters: Deno's `setSecureContext` does
 * not keep the server's `minVersion`, so every new context must carry it.
 */
export class PolicyServerCredentials extends grpc.ServerCredentials {
  readonly #inner: grpc.ServerCredentials;
  readonly #initial: () => ContextOptions;
  readonly #policy: TlsPolicy;
  readonly #watchers = new Map<ContextWatcher, ContextWatcher>();

  /** Wraps `inner`, answering with `initial()` until it knows its material, and applies `policy`. */
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

  /** grpc-js internal: whether the credentials use TLS. */
  override _isSecure(): boolean {
    return this.#inner._isSecure();
  }

  /** grpc-js internal: the secure server options, with the policy applied. */
  override _getConstructorOptions(): ReturnType<grpc.ServerCredentials["_getConstructorOptions"]> {
    const options = this.#inner._getConstructorOptions();
    return options && this.#withPolicy(options);
  }

  /** grpc-js internal: the current TLS context options, with the policy applied. */
  override _getSecureContextOptions(): ContextOptions {
    // The provider credentials only know their material once a watcher listens; grpc-js asks for
    // the initial context before that, so answer from the source then.
    const options = this.#inner._getSecureContextOptions() ?? this.#initial();
    return options && this.#withPolicy(options);
  }

  /** grpc-js internal: `watcher` gets every new context, with the policy applied. */
  override _addWatcher(watcher: ContextWatcher): void {
    const wrapped: ContextWatcher = (options) => watcher(options && this.#withPolicy(options));
    this.#watchers.set(watcher, wrapped);
    this.#inner._addWatcher(wrapped);
  }

  /** grpc-js internal: stops updating `watcher`. */
  override _removeWatcher(watcher: ContextWatcher): void {
    const wrapped = this.#watchers.get(watcher);
    if (!wrapped) return;
    this.#watchers.delete(watcher);
    this.#inner._removeWatcher(wrapped);
  }

  /** grpc-js internal: the wrapped credentials' interceptors. */
  override _getInterceptors(): grpc.ServerInterceptor[] {
    return this.#inner._getInterceptors();
  }

  /** grpc-js internal: whether `other` is these credentials. */
  override _equals(other: grpc.ServerCredentials): boolean {
    return other === this;
  }
}

/** The peer's "host:port" as grpc-js's `getPeer()` writes it ("unknown" when not known). */
function peerOf(socket: FailedTlsSocket): string {
  const address = socket._parent?.remoteAddress ?? socket.remoteAddress;
  const port = socket._parent?.remotePort ?? socket.remotePort;
  return address === undefined ? "unknown" : `${address}:${port}`;
}

/**
 * Calls `listener` for every completed TLS handshake on `server`'s listeners, with the socket and
 * the peer's "host:port" as the calls on it will report it, before HTTP/2 starts on the socket
 * (a listener that destroys the socket keeps HTTP/2 from sending or reading a byte). Same private map and caveat as
 * {@linkcode watchTlsClientErrors}.
 */
export function watchSecureConnections(
  server: grpc.Server,
  listener: (socket: TLSSocket, peer: string) => void,
): boolean {
  const servers = (server as unknown as { http2Servers?: Map<unknown, unknown> }).http2Servers;
  if (!(servers instanceof Map)) return false;
  for (const http2Server of servers.keys()) {
    const emitter = http2Server as {
      prependListener(event: "secureConnection", fn: (socket: TLSSocket) => void): void;
    };
    // First, before the http2 server starts a session on the socket.
    emitter.prependListener("secureConnection", (socket) => listener(socket, peerOf(socket)));
  }
  return true;
}

/** What a node:tls server passes to `tlsClientError` listeners, as far as knp reads it. */
interface FailedTlsSocket {
  remoteAddress?: string | undefined;
  remotePort?: number | undefined;
  _parent?: { remoteAddress?: string | undefined; remotePort?: number | undefined } | undefined;
}

/**
 * Calls `listener` for every failed TLS handshake on `server`'s listeners, with the peer's
 * "host:port" ("unknown" when the socket no longer knows it). grpc-js keeps its http2 servers
 * in the private `http2Servers` map, so call it after binding; when a grpc-js release renames
 * the map this does nothing (returns false).
 */
export function watchTlsClientErrors(
  server: grpc.Server,
  listener: (error: Error & { code?: string }, peer: string) => void,
): boolean {
  const servers = (server as unknown as { http2Servers?: Map<unknown, unknown> }).http2Servers;
  if (!(servers instanceof Map)) return false;
  for (const http2Server of servers.keys()) {
    const emitter = http2Server as {
      on(event: "tlsClientError", fn: (err: Error, socket: FailedTlsSocket) => void): void;
    };
    emitter.on("tlsClientError", (err, socket) => listener(err, peerOf(socket)));
  }
  return true;
}
