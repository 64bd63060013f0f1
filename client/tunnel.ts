/**
 * Tunnels to a knp (or upstream Konnectivity) proxy server's gRPC frontend.
 *
 * - {@linkcode createSingleUseTunnel}: upstream's pattern (kube-apiserver's): one gRPC connection
 *   for exactly one dial; closing the connection closes the tunnel.
 * - {@linkcode createTunnel}: one gRPC connection carrying many dials, one stream each.
 *
 * @module
 */

import { USER_AGENT_KEY } from "@knp/proto";
import { DialError, KnpError } from "@knp/core/errors";
import { GrpcChannel } from "@knp/transport/grpc_channel";
import { grpcProxyConfigured, H2GrpcChannel } from "@knp/transport/h2/client";
import { type DialOptions, TunnelConn } from "./tunnel_conn.ts";
import type { TunnelMetrics } from "./tunnel_metrics.ts";

/** Where the proxy server is and how to reach it. */
export interface TunnelOptions {
  /** Unix domain socket path of the frontend (plaintext, as kube-apiserver uses). */
  udsPath?: string;
  /** "host:port" of the TCP frontend (mTLS). */
  address?: string;
  /** PEM material for the TCP frontend: CA to verify the server, client cert and key. */
  tls?: { ca: Uint8Array | string; cert?: Uint8Array | string; key?: Uint8Array | string };
  /** TLS server name override. */
  serverName?: string;
  /** Sent as `user-agent` metadata. @default "knp-client" */
  userAgent?: string;
  /** Where dials, connections and bytes are reported (e.g. `clientMetrics()` of `@knp/client/metrics`). */
  metrics?: TunnelMetrics;
  /**
   * What carries the gRPC connection: knp's native HTTP/2 client (`"native"`: large windows,
   * coalesced writes) or grpc-js (the fallback; also what a TCP `address` uses while grpc-js's
   * proxy variables `grpc_proxy`/`https_proxy`/`http_proxy` are set). @default "native"
   */
  grpcTransport?: "native" | "grpc-js";
}

/** A tunnel that dials TCP connections through the proxy. */
export interface Tunnel extends AsyncDisposable {
  /**
   * Dials `address` through the tunnel.
   *
   * @throws {DialError} with the agent's or server's reason when the dial fails
   */
  dial(protocol: "tcp", address: string, options?: DialOptions): Promise<TunnelConn>;
  /** Closes the tunnel and every connection on it. */
  close(): void;
  /** Resolves once the tunnel is closed. */
  readonly done: Promise<void>;
}

function bytes(v: Uint8Array | string | undefined): Uint8Array | undefined {
  return typeof v === "string" ? new TextEncoder().encode(v) : v;
}

function channelFor(options: TunnelOptions): GrpcChannel | H2GrpcChannel {
  const native = options.grpcTransport !== "grpc-js";
  if (options.udsPath) {
    const target = `unix:${options.udsPath}`;
    return native ? new H2GrpcChannel({ target }) : new GrpcChannel({ target });
  }
  // The native client speaks to no HTTP proxy: with grpc-js's proxy variables set, grpc-js goes.
  const Channel = native && !grpcProxyConfigured() ? H2GrpcChannel : GrpcChannel;
  if (!options.address) throw new TypeError("Cannot create tunnel: give udsPath or address");
  return new Channel({
    target: options.address,
    tls: options.tls
      ? {
        ca: bytes(options.tls.ca),
        cert: bytes(options.tls.cert),
        key: bytes(options.tls.key),
        serverName: options.serverName,
      }
      : undefined,
  });
}

class GrpcTunnel implements Tunnel {
  #channel: GrpcChannel | H2GrpcChannel;
  #singleUse: boolean;
  #userAgent: string;
  #metrics: TunnelMetrics | undefined;
  #conns = new Set<TunnelConn>();
  #dialed = false;
  #closed = false;
  #done = Promise.withResolvers<void>();
  readonly done = this.#done.promise;

  constructor(options: TunnelOptions, singleUse: boolean) {
    this.#channel = channelFor(options);
    this.#singleUse = singleUse;
    this.#userAgent = options.userAgent ?? "knp-client";
    const metrics = this.#metrics = options.metrics;
    if (metrics === undefined) return;
    metrics.tunnelOpened();
    this.done.then(() => metrics.tunnelClosed());
  }

  async dial(protocol: "tcp", address: string, options: DialOptions = {}): Promise<TunnelConn> {
    if (this.#closed) throw new DialError("tunnel closed", "tunnelclosed");
    if (protocol !== "tcp") throw new KnpError("DIAL_FAILED", "protocol not supported");
    if (this.#singleUse && this.#dialed) {
      throw new DialError("single-use dialer already dialed", "tunnelstarted");
    }
    this.#dialed = true;
    const metrics = this.#metrics;
    if (metrics === undefined) return await this.#dial(protocol, address, options);
    const start = performance.now();
    try {
      const conn = await this.#dial(protocol, address, options, metrics);
      metrics.dialEnded(performance.now() - start);
      conn.closed.then(() => metrics.connectionClosed());
      return conn;
    } catch (error) {
      metrics.dialEnded(performance.now() - start, error ?? new Error("dial failed"));
      throw error;
    }
  }

  async #dial(
    protocol: "tcp",
    address: string,
    options: DialOptions,
    metrics?: TunnelMetrics,
  ): Promise<TunnelConn> {
    const { stream } = await this.#channel.openStream("proxy", {
      [USER_AGENT_KEY]: this.#userAgent,
    });
    const conn = new TunnelConn(stream, address, options, () => {
      this.#conns.delete(conn);
      if (this.#singleUse) this.close();
    }, metrics === undefined ? undefined : (direction, n) => metrics.bytes(direction, n));
    this.#conns.add(conn);
    await conn.dial(protocol, options);
    return conn;
  }

  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const conn of this.#conns) conn.close();
    // Give open connections their bounded CLOSE_REQ/CLOSE_RSP exchange, then cut the channel.
    Promise.all([...this.#conns].map((c) => c.closed)).then(() => {
      this.#channel.close();
      this.#done.resolve();
    });
  }

  async [Symbol.asyncDispose](): Promise<void> {
    this.close();
    await this.done;
  }
}

/**
 * Opens a single-use tunnel: one gRPC connection, one dial (upstream's
 * `CreateSingleUseGrpcTunnel`). Closing the dialed connection closes the tunnel.
 */
export function createSingleUseTunnel(options: TunnelOptions): Tunnel {
  return new GrpcTunnel(options, true);
}

/** Opens a tunnel that carries many dials over one gRPC connection (one stream per dial). */
export function createTunnel(options: TunnelOptions): Tunnel {
  return new GrpcTunnel(options, false);
}

/** Convenience: single-use tunnel + dial in one call; closing the connection closes all. */
export async function dialThroughProxy(
  options: TunnelOptions,
  address: string,
  dialOptions: DialOptions = {},
): Promise<TunnelConn> {
  const tunnel = createSingleUseTunnel(options);
  try {
    return await tunnel.dial("tcp", address, dialOptions);
  } catch (err) {
    tunnel.close();
    throw err;
  }
}
