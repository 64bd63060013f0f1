/**
 * The knp proxy server as a library: {@linkcode startProxyServer} binds the frontends, the agent
 * links and the health and admin ports around one {@linkcode ProxyServer} core. The package's
 * default export (`jsr:@knp/server`) is the `proxy-server` binary; this module is `@knp/server/lib`.
 *
 * @module
 */

export { type ProxyServerConfig, type ProxyServerHandle, startProxyServer } from "./server.ts";
export * from "./proxy_server.ts";
export * from "./backend_manager.ts";
export { type PickContext, ZoneMap } from "./routing.ts";
export {
  parseServerOptions,
  serverHelp,
  type ServerOptions,
  validateServerOptions,
} from "./options.ts";
export { readSample, ServerMetrics, type ServerMetricsOptions } from "./metrics.ts";
export {
  type AgentAdmission,
  type AgentGate,
  type AgentHandshakeOptions,
  type AgentLinkFacts,
  type AgentMetadata,
  handshakeAgent,
  validateAgentMetadata,
} from "./agent_handshake.ts";
export {
  type AgentAuthenticator,
  type AgentCredentials,
  type AgentIdentity,
  anonymousAuthenticator,
  certificateAuthenticator,
  certificateIdentity,
} from "./agent_auth.ts";
export {
  AGENT_GATE_FLAGS,
  agentGateFromOptions,
  type AgentGateOptions,
  openAgentPortWarning,
} from "./agent_gate_options.ts";
export type { AgentRefusalReason } from "./server_events.ts";
export {
  TokenAuthenticator,
  tokenAuthenticatorFromOptions,
  type TokenAuthFlags,
} from "./token_review.ts";
export {
  AGENT_BINDING_MODES,
  AgentBinding,
  type AgentBindingMode,
  principalOf,
} from "./agent_binding.ts";
export type { Backend, FlowControl } from "./backend.ts";
export type { ParsedServerOptions } from "./options.ts";
export type { DialLimitOptions } from "./overload.ts";
export type { OverloadOptions } from "./overload_flags.ts";
export type { DestinationServerOptions } from "./destination_flags.ts";
export type { DirectRoute, DirectRouteOptions } from "./direct_backend.ts";
export type { DirectDestinationOptions } from "./direct_flags.ts";
export type { SelfDestinationConfig } from "./destination_guard.ts";
export type { LeaseControllerOptions } from "./lease_flags.ts";
export type { AdminPagesConfig } from "./status.ts";
export type { ExplainServerOptions } from "./explain_flags.ts";
export {
  GRPC_TRANSPORTS,
  type GrpcTransport,
  type GrpcTransportConfig,
  type GrpcTransportServerOptions,
} from "./grpc_transport_flags.ts";
export type { FastLinkConfig, FastLinkServerOptions } from "./fast_link.ts";
export type { IpPrefix } from "./prefix_table.ts";
export type { RoutingServerOptions } from "./routing_flags.ts";
