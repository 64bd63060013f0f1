/**
 * The fast link (`--knp-fast-link`, on by default): every connection attempt starts as upstream's
 * gRPC `Connect` with the offer `knp-links: websocket`. An upstream server ignores it and the
 * attempt goes on as plain gRPC. A knp server answers `knp-link: websocket` and
 * `knp-link-port: <port>` and ends the call; the agent then closes the gRPC channel and connects
 * with the WebSocket connector to the same address (the same host and certificate name) at that
 * port, with the same TLS material, token and identity.
 *
 * When that WebSocket attempt fails for a reason that is not the server's refusal (a TLS or
 * upgrade failure: a load balancer sent it to a server that does not serve the link, say), the
 * same attempt is made once more over plain gRPC without the offer, and the reason is logged at
 * info. A refusal (unauthenticated, permission denied, overloaded with its retry hint) is
 * reported as it is, like any failed attempt.
 *
 * @module
 */

import { errorMessage } from "@knp/core/errors";
import { type Logger, nullLogger } from "@knp/core/log";
import type { ServerAddress, ServerConnection, ServerConnector } from "./client_set.ts";
import { attemptGrpc, type GrpcConnectorOptions } from "./grpc_connector.ts";
import { isRefusal, type LinkSwitch } from "./link_switch.ts";
import { webSocketConnector, type WebSocketConnectorOptions } from "./ws_connector.ts";

/** Options of {@linkcode fastLinkConnector}. */
export interface FastLinkOptions {
  /** The gRPC attempt (the same as without the fast link). */
  grpc: GrpcConnectorOptions;
  /** The WebSocket link but its port, which the server's answer names. */
  websocket: Omit<WebSocketConnectorOptions, "port">;
  /** Where the fallback to gRPC is explained (info). */
  logger?: Logger;
}

/** The WebSocket attempt a switch asks for; a non-refusal failure is returned as its reason. */
async function followSwitch(
  options: FastLinkOptions,
  switchTo: LinkSwitch,
  address: ServerAddress | undefined,
): Promise<ServerConnection | string> {
  if (switchTo.problem !== undefined) return switchTo.problem;
  const connect = webSocketConnector({ ...options.websocket, port: switchTo.port });
  try {
    return await connect(address);
  } catch (err) {
    if (isRefusal(err)) throw err;
    return errorMessage(err);
  }
}

/**
 * Builds a {@linkcode ServerConnector} that offers the WebSocket link over gRPC and follows a knp
 * server's answer (see the module doc).
 */
export function fastLinkConnector(options: FastLinkOptions): ServerConnector {
  const log = options.logger ?? nullLogger;
  return async (address?: ServerAddress): Promise<ServerConnection> => {
    const first = await attemptGrpc(options.grpc, address, true);
    if (first.connection) return first.connection;
    const result = await followSwitch(options, first.switchTo, address);
    if (typeof result !== "string") return result;
    log.info("the WebSocket agent link the server offered failed; retrying over gRPC", {
      address: address?.host ?? options.grpc.host,
      port: first.switchTo.port,
      reason: result,
    });
    const retry = await attemptGrpc(options.grpc, address, false);
    // Without the offer the attempt yields a connection or throws.
    return retry.connection!;
  };
}
