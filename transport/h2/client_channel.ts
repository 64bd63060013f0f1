/**
 * {@linkcode H2GrpcChannel}: the native HTTP/2 client's drop-in for `GrpcChannel`
 * (`grpc_channel.ts`): the same options and the same `openStream`/`close`/`openStreams`, over an
 * {@linkcode H2ClientConnection}. It connects when the first stream opens — h2c on a Unix socket or
 * TCP (`Deno.connect`, no Nagle), or TLS through node:tls (CA, optional client certificate, SNI,
 * ALPN `h2`, the server's name or IP address verified as `GrpcChannel` does) adapted to bytes by
 * `fromNodeSocket` — and dials again for a new stream once that connection is gone or got GOAWAY.
 * It never loads grpc-js.
 *
 * @module
 */

import { connect as tlsConnect, type PeerCertificate } from "node:tls";
import { checkServerIdentity } from "node:tls";
import { isIP } from "node:net";
import { Buffer } from "node:buffer";
import { AGENT_METHOD_PATH, PROXY_METHOD_PATH } from "@knp/proto";
import { errorMessage, KnpError } from "@knp/core/errors";
import type { Timers } from "@knp/core/timers";
import { type ByteSocket, fromNodeSocket } from "../byte_socket.ts";
import type { KeepaliveOptions } from "../packet_stream.ts";
import { keepaliveFor } from "../keepalive.ts";
import type { TlsMaterial } from "../tls_files.ts";
import { H2ClientConnection } from "./client_connection.ts";
import { H2ClientStream } from "./client_stream.ts";
import { type HeaderLookup, statusError } from "./client_status.ts";
import { GrpcStatus } from "./grpc_message.ts";
import type { LocalSettings } from "./settings.ts";

export { H2ClientStream };
export type { ClientStreamOwner } from "./client_stream.ts";
export type { HeaderLookup, LocalSettings };
export type { HeaderField } from "./hpack.ts";
export type { DataSource } from "./write_scheduler.ts";

/** Options of {@linkcode H2GrpcChannel}: those of `GrpcChannel`, plus HTTP/2 tuning. */
export interface H2GrpcChannelOptions {
  /** "host:port" or "unix:/absolute/path". */
  target: string;
  /**
   * TLS: CA to verify the server, optional client certificate. Absent: plaintext.
   * `alpnProtocols`: offered before `h2` (as grpc-go appends `h2` to `NextProtos`), e.g. for a
   * load balancer that routes by ALPN; the connection still has to negotiate `h2`.
   */
  tls?:
    | (TlsMaterial & {
      serverName?: string | undefined;
      alpnProtocols?: readonly string[] | undefined;
    })
    | undefined;
  /** HTTP/2 ping interval (none by default). */
  keepaliveTimeMs?: number | undefined;
  /** Keepalive with a timeout; overrides `keepaliveTimeMs`. */
  keepalive?: KeepaliveOptions | undefined;
  /** Largest message accepted. @default 4 MiB + 1 KiB (as `GrpcChannel`) */
  maxMessageBytes?: number | undefined;
  /** Our windows and limits. @default 8 MiB stream / 16 MiB connection windows */
  settings?: Partial<LocalSettings> | undefined;
  /** Clock (tests). */
  timers?: Timers | undefined;
}

/** The proxy variables grpc-js reads (lower case only); the native client speaks to no proxy. */
const GRPC_PROXY_ENV = ["grpc_proxy", "https_proxy", "http_proxy"] as const;

/**
 * Whether grpc-js would reach a TCP target through an HTTP proxy (one of its variables is set;
 * its `no_proxy` rules are its own): a caller that must keep that behaviour uses grpc-js then.
 * Variables the process may not read count as unset.
 */
export function grpcProxyConfigured(): boolean {
  return GRPC_PROXY_ENV.some((variable) =>
    Deno.permissions.querySync({ name: "env", variable }).state === "granted" &&
    (Deno.env.get(variable)?.trim() ?? "") !== ""
  );
}

/** Which of the two services a call is for. */
export type H2ServiceName = "proxy" | "agent";

const PATHS: Record<H2ServiceName, string> = { proxy: PROXY_METHOD_PATH, agent: AGENT_METHOD_PATH };

/** Sent as `user-agent` unless the caller's metadata has one. */
const USER_AGENT = "knp-h2";

/** A client connection (one HTTP/2 connection at a time) that opens streams. */
export class H2GrpcChannel {
  /** The target: "host:port" or "unix:/path". */
  readonly target: string;
  #options: H2GrpcChannelOptions;
  #conn: Promise<H2ClientConnection> | undefined;
  #current: H2ClientConnection | undefined;
  #open = 0;
  #closed = false;

  /** Creates the channel; it connects when the first stream opens. */
  constructor(options: H2GrpcChannelOptions) {
    this.target = options.target;
    this.#options = options;
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
    service: H2ServiceName,
    metadata: Record<string, string>,
    options: { awaitHeaders?: boolean; signal?: AbortSignal } = {},
  ): Promise<{ stream: H2ClientStream; headers: (key: string) => string[] }> {
    if (this.#closed) {
      return Promise.reject(new KnpError("TUNNEL_CLOSED", "channel is closed"));
    }
    const stream = new H2ClientStream(
      this.target,
      this.#options.maxMessageBytes ?? 4 * 1024 * 1024 + 1024,
    );
    this.#open++;
    void stream.done.then(() => this.#open--);
    const md = { "user-agent": USER_AGENT, ...lowercase(metadata) };
    this.#connection().then(
      (conn) => conn.open(stream, PATHS[service], md),
      (err: Error) => stream.onLost(err),
    );
    if (!options.awaitHeaders) return Promise.resolve({ stream, headers: () => [] });
    return awaitHeaders(stream, options.signal);
  }

  /** Closes the connection once its streams are over; no new streams. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#current?.close();
    this.#conn?.then((c) => c.close(), () => {});
  }

  /** The usable connection, dialing one when there is none. */
  #connection(): Promise<H2ClientConnection> {
    if (this.#conn && (!this.#current || this.#current.usable)) return this.#conn;
    this.#current = undefined;
    const dialing = this.#dial().then((conn) => {
      if (this.#conn === dialing) this.#current = conn;
      if (this.#closed) conn.close();
      return conn;
    });
    this.#conn = dialing;
    dialing.catch(() => {
      if (this.#conn === dialing) this.#conn = undefined;
    });
    return dialing;
  }

  async #dial(): Promise<H2ClientConnection> {
    const o = this.#options;
    let socket: ByteSocket;
    try {
      socket = await connectSocket(o.target, o.tls);
    } catch (err) {
      throw statusError(
        GrpcStatus.UNAVAILABLE,
        `No connection established to ${o.target}: ${errorMessage(err)}`,
      );
    }
    const conn = new H2ClientConnection(socket, {
      peer: o.target,
      authority: o.target.startsWith("unix:") ? "localhost" : o.target,
      scheme: o.tls ? "https" : "http",
      maxMessageBytes: o.maxMessageBytes ?? 4 * 1024 * 1024 + 1024,
      settings: o.settings,
      keepalive: o.keepalive ?? keepaliveFor(o.keepaliveTimeMs ?? 0),
      timers: o.timers,
    });
    conn.start();
    return conn;
  }
}

function lowercase(metadata: Record<string, string>): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [k, v] of Object.entries(metadata)) out[k.toLowerCase()] = v;
  return out;
}

/** The stream once its response headers arrived; rejects as the call ends or `signal` aborts. */
async function awaitHeaders(
  stream: H2ClientStream,
  signal: AbortSignal | undefined,
): Promise<{ stream: H2ClientStream; headers: (key: string) => string[] }> {
  const aborted = Promise.withResolvers<never>();
  const onAbort = () => {
    stream.close(new KnpError("TIMEOUT", "gave up waiting for response headers"));
    aborted.reject(new KnpError("TIMEOUT", "gave up waiting for response headers"));
  };
  if (signal?.aborted) onAbort();
  signal?.addEventListener("abort", onAbort, { once: true });
  try {
    const lookup: HeaderLookup = await Promise.race([stream.responseHeaders, aborted.promise]);
    return { stream, headers: (key) => lookup.get(key) };
  } finally {
    signal?.removeEventListener("abort", onAbort);
  }
}

/** "host" and port of a "host:port" or "[v6]:port" target. */
function hostPort(target: string): [string, number] {
  const at = target.lastIndexOf(":");
  return [target.slice(0, at).replace(/^\[|\]$/g, ""), Number(target.slice(at + 1))];
}

/** `protocols` with `last` appended unless present (as grpc-go adds `h2` to `NextProtos`). */
function withProtocol(protocols: readonly string[], last: string): string[] {
  return protocols.includes(last) ? [...protocols] : [...protocols, last];
}

/** Connects to `target`: h2c over a UDS or TCP, or TLS with ALPN h2. */
async function connectSocket(
  target: string,
  tls: H2GrpcChannelOptions["tls"],
): Promise<ByteSocket> {
  if (target.startsWith("unix:")) {
    return await Deno.connect({ transport: "unix", path: target.slice("unix:".length) });
  }
  const [hostname, port] = hostPort(target);
  if (!tls) {
    const conn = await Deno.connect({ hostname, port });
    conn.setNoDelay(true);
    return conn;
  }
  return await connectTls(hostname, port, tls);
}

/** The bytes of a node:tls connection that negotiated h2 and verified the server as `GrpcChannel` does. */
function connectTls(
  host: string,
  port: number,
  tls: NonNullable<H2GrpcChannelOptions["tls"]>,
): Promise<ByteSocket> {
  const verifyName = tls.serverName ?? host;
  // Deno's node:tls refuses an IP address as SNI name: send none that is one, verify the IP.
  const servername = isIP(verifyName) !== 0 ? undefined : verifyName;
  const socket = tlsConnect({
    host,
    port,
    ...(servername ? { servername } : {}),
    ca: tls.ca ? Buffer.from(tls.ca) : undefined,
    cert: tls.cert ? Buffer.from(tls.cert) : undefined,
    key: tls.key ? Buffer.from(tls.key) : undefined,
    ALPNProtocols: withProtocol(tls.alpnProtocols ?? [], "h2"),
    checkServerIdentity: (_name: string, peer: PeerCertificate) =>
      checkServerIdentity(verifyName, peer),
  });
  return new Promise((resolve, reject) => {
    socket.once("error", reject);
    socket.once("secureConnect", () => {
      if (socket.alpnProtocol !== "h2") {
        socket.destroy();
        return reject(new Error(`server did not negotiate h2 (ALPN ${socket.alpnProtocol})`));
      }
      socket.setNoDelay(true);
      // The adapter's own error listener is on before this one goes: no error goes unheard.
      const bytes = fromNodeSocket(socket);
      socket.off("error", reject);
      resolve(bytes);
    });
  });
}
