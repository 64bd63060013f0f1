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
export {
  parseServerOptions,
  serverHelp,
  type ServerOptions,
  validateServerOptions,
} from "./options.ts";
export { readSample, ServerMetrics, type ServerMetricsOptions } from "./metrics.ts";
export {
  type AgentAdmission,
  type AgentHandshakeOptions,
  type AgentLinkFacts,
  type AgentMetadata,
  handshakeAgent,
  validateAgentMetadata,
} from "./agent_handshake.ts";
export type { Backend, FlowControl } from "./backend.ts";
export type { ParsedServerOptions } from "./options.ts";
