/**
 * The knp proxy agent as a library: {@linkcode startAgent} connects to proxy servers and dials
 * endpoints for them. The package's default export (`jsr:@knp/agent`) is the `proxy-agent` binary;
 * this module is `@knp/agent/lib`.
 *
 * @module
 */

export { type AgentConfig, type AgentHandle, startAgent } from "./agent.ts";
export { classifyConnectError, type Dialer, EndpointDialError } from "./dialer.ts";
export {
  agentHelp,
  type AgentOptions,
  parseAgentOptions,
  validateAgentOptions,
} from "./options.ts";
export type {
  ClientSet,
  ClientSetOptions,
  ServerConnection,
  ServerConnector,
} from "./client_set.ts";
export type { AgentClientOptions } from "./agent_client.ts";
export type { DialOptions, EndpointSocket } from "./dialer.ts";
export type { AgentDestinationOptions } from "./destination_flags.ts";
export type { AgentEgressOptions, EgressProxy } from "./egress_proxy.ts";
export type { AgentServerSetOptions } from "./server_set_flags.ts";
export type { LivenessOptions } from "./server_liveness.ts";
export type { ServerAddress } from "./server_addresses.ts";
export type { ParsedAgentOptions } from "./options.ts";
export type { ServerCounter, ServerCountSource } from "./server_count.ts";
export type { AgentHealthSource, HealthDetails, ServersHeld } from "./health.ts";
export {
  type AgentDialEvent,
  AgentMetrics,
  type AgentMetricsOptions,
  type AgentMetricsSource,
} from "./metrics.ts";
export type { AgentDrainOptions } from "./drain.ts";
