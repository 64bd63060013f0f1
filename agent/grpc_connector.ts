/**
 * Connects the agent to a server over gRPC with TLS, sending upstream's metadata and requiring
 * upstream's response headers (`serverid`, `servercount`) within a deadline. An attempt may
 * offer knp's WebSocket agent link ({@linkcode attemptGrpc}; see `fast_link.ts`).
 *
 * @module
 */

import {
  AGENT_ID_KEY,
  AGENT_IDENTIFIERS_KEY,
  AUTHORIZATION_KEY,
  BEARER_PREFIX,
  FLOW_CONTROL_KEY,
  formatFlowControl,
  KNP_LINKS_KEY,
  parseFlowControl,
  SERVER_COUNT_KEY,
  SERVER_ID_KEY,
  WEBSOCKET_LINK,
} from "@knp/proto";
import { KnpError } from "@knp/core/errors";
import { GrpcChannel, type TlsMaterial, type TlsSource } from "@knp/transport/grpc_channel";
import { grpcProxyConfigured, H2GrpcChannel } from "@knp/transport/h2/client";
import type { PacketStream } from "@knp/transport/packet_stream";
import { keepaliveFor } from "@knp/transport/keepalive";
import { isTlsSource } from "@knp/transport/tls_files";
import type { ServerAddress, ServerConnection, ServerConnector } from "./client_set.ts";
import { type LinkSwitch, linkSwitchInError, linkSwitchOf } from "./link_switch.ts";

/** Default per-connection flow-control window offered to knp servers. */
export const DEFAULT_FLOW_WINDOW = 1 << 20;

/** Options of {@linkcode grpcConnector}. */
export interface GrpcConnectorOptions {
  host: string;
  port: number;
  agentId: string;
  agentIdentifiers: string;
  /**
   * CA, optional client cert/key. Without TLS material the link is plaintext (tests only). A
   * {@linkcode TlsSource} (e.g. `TlsFiles`) is refreshed and read at every connection attempt,
   * so a rotated client certificate or server CA is used from the next connection on;
   * established connections keep the material they were made with.
   */
  tls?: TlsMaterial | TlsSource | undefined;
  /** Read at every connect, like upstream; sent as `authorization: Bearer <token>`. */
  tokenPath?: string;
  keepaliveTimeMs?: number | undefined;
  /** Deadline for the server's response headers. @default 15000 */
  headerTimeoutMs?: number;
  /**
   * Offer per-connection flow control with this window (bytes); a knp server answers with its
   * own, an upstream server ignores it. 0 disables. @default 1048576
   */
  flowControlWindow?: number;
  /**
   * What carries the gRPC connection (`--knp-grpc-transport`): knp's native HTTP/2 client or
   * grpc-js (also used while grpc-js's proxy variables are set: the native client speaks to no
   * HTTP proxy). @default "native"
   */
  grpcTransport?: "native" | "grpc-js" | undefined;
  /**
   * `--alpn-proto`: ALPN protocols offered before `h2` on TLS connections (native transport only:
   * grpc-js offers `h2` alone). @default []
   */
  alpnProtocols?: readonly string[] | undefined;
}

/** The channel of an attempt, of either transport. */
type Channel = GrpcChannel | H2GrpcChannel;

/**
 * One gRPC attempt's outcome: a connection, or (only when the attempt offered the fast link) the
 * server's answer to continue on the WebSocket agent link at `port`.
 */
export type GrpcAttempt =
  | { connection: ServerConnection; switchTo?: undefined }
  | { connection?: undefined; switchTo: LinkSwitch };

/** The gRPC target for `host` (an IPv6 literal in brackets). */
function targetOf(host: string, port: number): string {
  return host.includes(":") && !host.startsWith("[") ? `[${host}]:${port}` : `${host}:${port}`;
}

/** The request metadata: upstream's, the token, knp's flow-control and link offers. */
async function requestMetadata(
  options: GrpcConnectorOptions,
  window: number,
  offer: boolean,
): Promise<Record<string, string>> {
  const metadata: Record<string, string> = {
    [AGENT_ID_KEY]: options.agentId,
    [AGENT_IDENTIFIERS_KEY]: options.agentIdentifiers,
  };
  if (options.tokenPath) {
    metadata[AUTHORIZATION_KEY] = BEARER_PREFIX + await Deno.readTextFile(options.tokenPath);
  }
  if (window > 0) metadata[FLOW_CONTROL_KEY] = formatFlowControl(window);
  if (offer) metadata[KNP_LINKS_KEY] = WEBSOCKET_LINK;
  return metadata;
}

/** Reads upstream's response headers (`serverid`, `servercount`) into a connection. */
function connectionOf(
  stream: PacketStream,
  headers: (key: string) => string[],
  window: number,
  channel: Channel,
): ServerConnection {
  const ids = headers(SERVER_ID_KEY);
  const counts = headers(SERVER_COUNT_KEY);
  if (ids.length !== 1) {
    stream.close(new KnpError("HANDSHAKE", "bad serverid header"));
    throw new KnpError("HANDSHAKE", `expected one server ID in the response, got [${ids}]`);
  }
  const count = Number(counts[0]);
  if (counts.length !== 1 || !Number.isInteger(count)) {
    stream.close(new KnpError("HANDSHAKE", "bad servercount header"));
    throw new KnpError("HANDSHAKE", `expected one server count in the response, got [${counts}]`);
  }
  const serverWindow = window > 0 ? parseFlowControl(headers(FLOW_CONTROL_KEY)) : undefined;
  return {
    stream,
    serverId: ids[0]!,
    serverCount: count,
    flow: serverWindow ? { sendWindow: serverWindow, recvWindow: window } : undefined,
    link: "grpc",
    close: () => channel.close(),
  };
}

/** The channel of one attempt: the current TLS material, keepalive as configured. */
async function channelFor(
  options: GrpcConnectorOptions,
  address: ServerAddress | undefined,
): Promise<Channel> {
  // One of several addresses the host names: connect there, verify the configured name.
  const host = address?.host ?? options.host;
  let tls = options.tls;
  if (tls && isTlsSource(tls)) {
    await tls.refresh?.();
    tls = tls.current();
  }
  const channelOptions = {
    target: targetOf(host, options.port),
    tls: tls && address ? { ...tls, serverName: address.serverName } : tls,
    // A silent server is dropped within keepalive time + min(time, 20 s) (the client pings).
    keepalive: keepaliveFor(options.keepaliveTimeMs ?? 0),
  };
  // The native client speaks to no HTTP proxy: with grpc-js's proxy variables set, grpc-js goes.
  if (options.grpcTransport === "grpc-js" || grpcProxyConfigured()) {
    return new GrpcChannel(channelOptions);
  }
  const alpnProtocols = options.alpnProtocols;
  return new H2GrpcChannel({
    ...channelOptions,
    tls: channelOptions.tls && alpnProtocols
      ? { ...channelOptions.tls, alpnProtocols }
      : channelOptions.tls,
  });
}

/**
 * One gRPC attempt. With `offer`, the request carries `knp-links: websocket`; a knp server that
 * answers with `knp-link: websocket` (in its response headers, or in a trailers-only response)
 * gets the attempt's channel closed and a `switchTo` back. Other failures are thrown.
 */
export async function attemptGrpc(
  options: GrpcConnectorOptions,
  address: ServerAddress | undefined,
  offer: boolean,
): Promise<GrpcAttempt> {
  const channel = await channelFor(options, address);
  const window = options.flowControlWindow ?? DEFAULT_FLOW_WINDOW;
  const metadata = await requestMetadata(options, window, offer);
  try {
    const { stream, headers } = await channel.openStream("agent", metadata, {
      awaitHeaders: true,
      signal: AbortSignal.timeout(options.headerTimeoutMs ?? 15_000),
    });
    const switchTo = offer ? linkSwitchOf(headers) : undefined;
    if (switchTo) {
      stream.close(new KnpError("HANDSHAKE", "continuing on the WebSocket agent link"));
      channel.close();
      return { switchTo };
    }
    return { connection: connectionOf(stream, headers, window, channel) };
  } catch (err) {
    channel.close();
    const switchTo = offer ? linkSwitchInError(err) : undefined;
    if (switchTo) return { switchTo };
    throw err;
  }
}

/** Builds a {@linkcode ServerConnector} that opens a new gRPC connection per attempt. */
export function grpcConnector(options: GrpcConnectorOptions): ServerConnector {
  return async (address?: ServerAddress): Promise<ServerConnection> => {
    const { connection } = await attemptGrpc(options, address, false);
    // Without an offer no switch is read; the attempt always yields a connection.
    if (!connection) throw new KnpError("HANDSHAKE", "unexpected link switch");
    return connection;
  };
}
