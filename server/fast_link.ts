/**
 * The server's end of the fast link negotiation (knp only, `--knp-fast-link`, on by default in
 * the binary): a knp agent offers knp's WebSocket agent link on its first gRPC `Connect` with
 * request metadata `knp-links: websocket`; this server, when it can serve that link, answers
 * before the agent handshake (no authentication, no registration, no connect-rate token) with
 * response headers `knp-link: websocket` and `knp-link-port: <port>`, then ends the call with
 * status UNAVAILABLE "knp: continue on the WebSocket agent link". Upstream agents send no offer
 * and see plain gRPC.
 *
 * The port is the agent port itself under the native gRPC transport: its TLS listener then also
 * offers ALPN "http/1.1" and hands every connection that did not negotiate "h2" to the WebSocket
 * agent link's per-socket handler ({@linkcode sharedLinkSockets}), with the link's own handshake
 * (certificate proof, token, binding, connect rate). Under grpc-js the agent port cannot do that:
 * the reply then names `--knp-websocket-port` when it is set, and otherwise the offer is ignored.
 *
 * @module
 */

import type { TLSSocket } from "node:tls";
import type { FlagSpec } from "@knp/cli/flags";
import { KNP_LINK_KEY, KNP_LINK_PORT_KEY, KNP_LINKS_KEY, WEBSOCKET_LINK } from "@knp/proto";
import { KnpError } from "@knp/core/errors";
import type { Logger } from "@knp/core/log";
import type { IncomingStream, PeerTls } from "@knp/transport/grpc_stream";
import { TCP_KEEPALIVE_IDLE_MS } from "@knp/transport/tls_listener";
import type { AgentLinkHandler } from "./ws_agent_listener.ts";

/** Status message of the switch reply (its status is UNAVAILABLE). */
export const SWITCH_MESSAGE = "knp: continue on the WebSocket agent link";

/** The fast link flag, spread into `SERVER_FLAGS`. */
export const FAST_LINK_FLAGS: readonly FlagSpec[] = [
  {
    name: "knp-fast-link",
    type: "bool",
    default: true,
    help: "knp only: a knp agent that offers it on its gRPC connection is told to continue on " +
      "knp's faster WebSocket agent link — on the agent port itself (which then also accepts " +
      "that link) with --knp-grpc-transport=native, else on --knp-websocket-port when set. " +
      "Upstream agents are unaffected (they see plain gRPC). false: offers are ignored and the " +
      "agent port speaks only gRPC.",
    implemented: true,
  },
];

/** Option fields of {@linkcode FAST_LINK_FLAGS}; `ServerOptions` extends it. */
export interface FastLinkServerOptions {
  /** `--knp-fast-link` (knp only). @default true */
  knpFastLink: boolean;
}

/** The core configuration field; `ProxyServerConfig` extends it. */
export interface FastLinkConfig {
  /**
   * Answer knp agents' link offers and (native transport) accept the WebSocket agent link on the
   * agent port. The binary turns it on by default (`--knp-fast-link`). @default false
   */
  fastLink?: boolean | undefined;
}

/** The core's configuration from the options. */
export function fastLinkConfig(o: FastLinkServerOptions): FastLinkConfig {
  return { fastLink: o.knpFastLink };
}

/** Whether a call's `knp-links` metadata offers the WebSocket link. */
export function offersWebSocket(values: readonly string[]): boolean {
  return values.some((v) =>
    v.split(",").some((link) => link.trim().toLowerCase() === WEBSOCKET_LINK)
  );
}

/** The headers of the switch reply to `port`. */
export function switchHeaders(port: number): Record<string, string> {
  return { [KNP_LINK_KEY]: WEBSOCKET_LINK, [KNP_LINK_PORT_KEY]: String(port) };
}

/**
 * Answers an agent's offer when it made one and `port` (the link's port; 0: none) can take it:
 * sends the switch headers, then ends the call with UNAVAILABLE. True when it answered (the call
 * is over); false: the caller goes on with the gRPC handshake.
 */
export function answerLinkOffer(
  incoming: Pick<IncomingStream, "metadata" | "sendHeaders" | "reject" | "peer">,
  port: number,
  log: Logger,
): boolean {
  if (port <= 0 || !offersWebSocket(incoming.metadata(KNP_LINKS_KEY))) return false;
  incoming.sendHeaders(switchHeaders(port));
  // A code the gRPC status mappings leave unlisted: the call ends with UNAVAILABLE.
  incoming.reject(new KnpError("TUNNEL_CLOSED", SWITCH_MESSAGE));
  log.debug("agent offered the WebSocket link: switch reply sent", {
    peer: incoming.peer,
    [KNP_LINK_PORT_KEY]: port,
  });
  return true;
}

/**
 * The agent port's handler of connections that did not negotiate ALPN "h2": each goes to the
 * WebSocket agent link's `handler`, with TCP keepalive as on `--knp-websocket-port`. A client
 * certificate the connection presented must pass `acceptClient` (the agent port's check); one
 * without a certificate proves its identity in the link's own handshake.
 */
export function sharedLinkSockets(
  handler: AgentLinkHandler,
  acceptClient: (tls: PeerTls, peer: string) => boolean,
): (socket: TLSSocket, peer: string, tls: PeerTls | undefined) => void {
  return (socket, peer, tls) => {
    if (tls && tls.chain.length > 0 && !acceptClient(tls, peer)) {
      socket.destroy();
      return;
    }
    try {
      socket.setKeepAlive(true, TCP_KEEPALIVE_IDLE_MS);
    } catch { /* not supported on this socket: the link's own keepalive still applies */ }
    void handler.accept(socket);
  };
}
