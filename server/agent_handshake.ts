/**
 * The one agent handshake of both agent links (gRPC `Connect` and the WebSocket link): admits the
 * agent under the connect rate, checks its metadata against upstream's rules, authenticates it
 * (`agent_auth.ts`), checks what it claims against its identity (`agent_binding.ts`), negotiates
 * knp's per-connection flow control, and registers the agent's stream with the core once the link
 * has answered. A refused agent is logged once ("agent refused": reason, claimed agent ID, peer),
 * reported as an `agent-refused` event and refused before it can receive a packet.
 *
 * Each link supplies the link-neutral facts ({@linkcode AgentLinkFacts}): how to read a metadata
 * key, the peer, the client certificate it verified, and how to refuse. It then sends {@linkcode AgentAdmission.headers} in its own
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
import type { X509Certificate } from "node:crypto";
import { errorMessage, KnpError } from "@knp/core/errors";
import type { Logger } from "@knp/core/log";
import type { PacketStream } from "@knp/transport/packet_stream";
import type { Backend, FlowControl } from "./backend.ts";
import type { ProxyServer } from "./proxy_server.ts";
import type { AgentRefusalReason } from "./server_events.ts";
import {
  type AgentAuthenticator,
  type AgentIdentity,
  anonymousAuthenticator,
  certificateAuthenticator,
} from "./agent_auth.ts";
import { AgentBinding } from "./agent_binding.ts";

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
  /** Refuses the agent (the link's own way: gRPC status, HTTP 401/403). */
  reject(error: Error): void;
  /** The client certificate the link verified against the cluster CA. */
  certificate?: X509Certificate | undefined;
  /** Why the link could not verify the agent's client certificate (with a cluster CA). */
  certificateError?: Error | undefined;
}

/** Who may be an agent: authentication, claim binding, admission rate. */
export interface AgentGate {
  /** Proves who an agent is. @default anonymousAuthenticator */
  authenticator?: AgentAuthenticator | undefined;
  /** Which claims an identity may make. @default new AgentBinding("owner") */
  binding?: AgentBinding | undefined;
  /**
   * Admits one more agent handshake now, or says how long to wait (the agent connect rate);
   * absent: no limit.
   */
  admit?: (() => { ok: true } | { ok: false; retryAfterMs: number }) | undefined;
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
  /** Authentication, binding and admission rate. */
  gate?: AgentGate | undefined;
}

/** An agent that passed the handshake, waiting for its link to answer. */
export interface AgentAdmission extends AgentMetadata {
  /** Who the agent is. */
  identity: AgentIdentity;
  /** Negotiated flow control, when both sides have it. */
  flow: FlowControl | undefined;
  /**
   * Registers the agent's stream with the core (after the link sent `headers`), holding its
   * claims until the stream ends.
   *
   * @throws {KnpError} `PERMISSION_DENIED` when another principal claimed the same meanwhile
   */
  register(stream: PacketStream): Backend;
}

/** The refusal reason label of an error (logs, events and metrics). */
export function refusalReason(err: unknown): AgentRefusalReason {
  if (!(err instanceof KnpError)) return "handshake";
  switch (err.code) {
    case "UNAUTHENTICATED":
      return "unauthenticated";
    case "PERMISSION_DENIED":
      return "permission_denied";
    case "OVERLOADED":
      return "throttled";
    default:
      return "handshake";
  }
}

/** The admission rate's refusal, with its retry hint. */
function throttled(retryAfterMs: number): KnpError {
  const err = new KnpError(
    "OVERLOADED",
    `server overloaded: too many agents connecting; retry after ${Math.ceil(retryAfterMs)}ms`,
  );
  (err as KnpError & { retryAfterMs?: number }).retryAfterMs = retryAfterMs;
  return err;
}

/** Checks the metadata, authenticates and binds; negotiates flow control. */
async function admitAgent(
  core: ProxyServer,
  link: AgentLinkFacts,
  options: AgentHandshakeOptions,
  claimed: { agentId?: string },
): Promise<AgentAdmission> {
  const gate = options.gate ?? {};
  const meta = validateAgentMetadata(
    core,
    link.metadata("agentid"),
    link.metadata("agentidentifiers"),
  );
  claimed.agentId = meta.agentId;
  const admit = gate.admit?.();
  if (admit && !admit.ok) throw throttled(admit.retryAfterMs);
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
  if (link.certificateError) throw link.certificateError;
  const authenticator = gate.authenticator ??
    (link.certificate ? certificateAuthenticator : anonymousAuthenticator);
  const identity = await authenticator.authenticate({
    metadata: link.metadata,
    peer: link.peer,
    link: options.linkName ?? "gRPC",
    certificate: link.certificate,
  });
  const binding = gate.binding ?? defaultBinding(core);
  binding.check(identity, meta.agentId, meta.identifiers);
  const headers = { ...meta.headers };
  if (agentWindow) headers[FLOW_CONTROL_KEY] = formatFlowControl(options.flowWindow);
  const flow = agentWindow
    ? { sendWindow: agentWindow, recvWindow: options.flowWindow }
    : undefined;
  return {
    ...meta,
    identity,
    headers,
    flow,
    register(stream) {
      const release = binding.claim(identity, meta.agentId, meta.identifiers);
      stream.done.then(release, release);
      return core.addBackend(meta.agentId, meta.identifiers, stream, flow);
    },
  };
}

const DEFAULT_BINDINGS = new WeakMap<ProxyServer, AgentBinding>();

/** The `owner` binding of a core whose links were given none. */
function defaultBinding(core: ProxyServer): AgentBinding {
  let binding = DEFAULT_BINDINGS.get(core);
  if (!binding) DEFAULT_BINDINGS.set(core, binding = new AgentBinding("owner"));
  return binding;
}

/**
 * Checks an agent's metadata, authenticates it, checks its claims and negotiates flow control.
 * On failure the agent is logged (reason, claimed agent ID, peer), counted as an
 * `agent-refused` event and refused through `link.reject`, and the result is undefined.
 */
export async function handshakeAgent(
  core: ProxyServer,
  link: AgentLinkFacts,
  options: AgentHandshakeOptions,
): Promise<AgentAdmission | undefined> {
  const claimed: { agentId?: string } = {};
  try {
    return await admitAgent(core, link, options, claimed);
  } catch (err) {
    refuseAgent(core, link, options, err, claimed.agentId);
    return undefined;
  }
}

/** Logs, counts and refuses an agent. */
export function refuseAgent(
  core: ProxyServer,
  link: Pick<AgentLinkFacts, "peer" | "reject">,
  options: Pick<AgentHandshakeOptions, "linkName" | "logger">,
  err: unknown,
  agentId: string | undefined,
): void {
  const reason = refusalReason(err);
  const linkName = options.linkName ?? "gRPC";
  options.logger.warn("agent refused", {
    reason,
    link: linkName,
    agentID: agentId,
    peer: link.peer,
    error: errorMessage(err),
  });
  core.events.emit({ kind: "agent-refused", reason, link: linkName, agentId, peer: link.peer });
  link.reject(err instanceof Error ? err : new Error(String(err)));
}
