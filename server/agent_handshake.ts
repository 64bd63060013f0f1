/**
 * The one agent handshake of both agent links (gRPC `Connect` and the WebSocket link): checks the
 * agent's metadata against upstream's rules, negotiates knp's per-connection flow control, and
 * registers the agent's stream with the core once the link has answered.
 *
 * Each link supplies the link-neutral facts ({@linkcode AgentLinkFacts}): how to read a metadata
 * key, the peer, and how to refuse. It then sends {@linkcode AgentAdmission.headers} in its own
 * way and calls {@linkcode AgentAdmission.register} with the agent's {@linkcode PacketStream}.
 *
 * @module
 */

import {
  type AgentIdentifiers,
  FLOW_CONTROL_KEY,
  formatFlowControl,
  parseAgentIdentifiers,
  parseFlowControl,
  queryParseError,
} from "@knp/proto";
import { errorMessage, KnpError } from "@knp/core/errors";
import type { Logger } from "@knp/core/log";
import type { PacketStream } from "@knp/transport/packet_stream";
import type { Backend, FlowControl } from "./backend.ts";
import type { ProxyServer } from "./proxy_server.ts";

/** An agent's validated metadata and the headers to send it before any packet. */
export interface AgentMetadata {
  /** The agent's id. */
  agentId: string;
  /** What the agent advertised it serves. */
  identifiers: AgentIdentifiers;
  /** Response headers to send the agent. */
  headers: Record<string, string>;
}

/**
 * Validates an agent's `agentid` and `agentidentifiers` metadata (upstream's rules).
 *
 * @throws {KnpError} `HANDSHAKE` when the metadata breaks them
 */
export function validateAgentMetadata(
  core: { serverId: string; serverCount: number },
  agentIds: string[],
  identifiers: string[],
): AgentMetadata {
  if (agentIds.length !== 1) {
    throw new KnpError(
      "HANDSHAKE",
      `expected one agent ID in the context, got [${agentIds.join(" ")}]`,
    );
  }
  if (identifiers.length > 1) {
    throw new KnpError(
      "HANDSHAKE",
      `expected at most one set of agent identifiers in the context, got [${
        identifiers.join(" ")
      }]`,
    );
  }
  const parseError = queryParseError(identifiers[0] ?? "");
  if (parseError !== undefined) {
    throw new KnpError("HANDSHAKE", `fail to parse url encoded string: ${parseError}`);
  }
  return {
    agentId: agentIds[0]!,
    identifiers: parseAgentIdentifiers(identifiers[0] ?? ""),
    headers: { serverid: core.serverId, servercount: String(core.serverCount) },
  };
}

/** What a link knows about an agent knocking on it. */
export interface AgentLinkFacts {
  /** Values of one metadata key (gRPC metadata or HTTP headers). */
  metadata(key: string): string[];
  /** The peer, for logs. */
  peer: string;
  /** Refuses the agent (the link's own way: gRPC status, HTTP 401). */
  reject(error: Error): void;
  /** A link's own check after the metadata's (the WebSocket link's certificate chain). */
  check?: (meta: AgentMetadata) => void;
}

/** Options of {@linkcode handshakeAgent}. */
export interface AgentHandshakeOptions {
  /** Window this server grants per connection; 0 turns the extension off. */
  flowWindow: number;
  /** The link cannot work without flow control (the WebSocket link). @default false */
  flowRequired?: boolean;
  /** The link's name, for refusals and logs; unset for the gRPC link. */
  linkName?: string;
  /** Where the handshake logs. */
  logger: Logger;
}

/** An agent that passed the handshake, waiting for its link to answer. */
export interface AgentAdmission extends AgentMetadata {
  /** Negotiated flow control, when both sides have it. */
  flow: FlowControl | undefined;
  /** Registers the agent's stream with the core (after the link sent `headers`). */
  register(stream: PacketStream): Backend;
}

/**
 * Checks an agent's metadata and negotiates flow control. On failure the agent is logged and
 * refused through `link.reject`, and the result is undefined.
 */
export function handshakeAgent(
  core: ProxyServer,
  link: AgentLinkFacts,
  options: AgentHandshakeOptions,
): AgentAdmission | undefined {
  try {
    const meta = validateAgentMetadata(
      core,
      link.metadata("agentid"),
      link.metadata("agentidentifiers"),
    );
    // knp agents offer per-connection flow control; upstream agents send no such metadata.
    const agentWindow = options.flowWindow > 0
      ? parseFlowControl(link.metadata(FLOW_CONTROL_KEY))
      : undefined;
    if (!agentWindow && options.flowRequired) {
      throw new KnpError(
        "HANDSHAKE",
        `the ${options.linkName ?? "gRPC"} link needs a valid ${FLOW_CONTROL_KEY} header`,
      );
    }
    link.check?.(meta);
    const headers = { ...meta.headers };
    if (agentWindow) headers[FLOW_CONTROL_KEY] = formatFlowControl(options.flowWindow);
    const flow = agentWindow
      ? { sendWindow: agentWindow, recvWindow: options.flowWindow }
      : undefined;
    return {
      ...meta,
      headers,
      flow,
      register: (stream) => core.addBackend(meta.agentId, meta.identifiers, stream, flow),
    };
  } catch (err) {
    const where = options.linkName ? ` on the ${options.linkName} link` : "";
    options.logger.warn(`agent rejected${where}`, { peer: link.peer, error: errorMessage(err) });
    link.reject(err as Error);
    return undefined;
  }
}
