/**
 * Command-line options of `proxy-agent`: every upstream flag with upstream's spelling and default,
 * plus klog's flags and knp's `--knp-log-format`, and upstream's validation rules.
 *
 * Lease counting (`--count-server-leases` and friends) is in `lease_count_flags.ts`; profiling is
 * accepted for compatibility but has no effect yet (its help text says so).
 *
 * @module
 */

import { invalidFlag, type ParsedOptions, parseOptions } from "@knp/cli/flags";
import { formatHelp } from "@knp/cli/flag_help";
import { type KlogOptions, type LogFormat, requireLogFormat } from "@knp/cli/common_flags";
import {
  requireCertKeyPair,
  requireExistingFile,
  requirePositive,
  requireProfilingForContention,
  showDuration,
} from "@knp/cli/flag_checks";
import { type IdentifierType, identifierValueProblem } from "@knp/proto";
import { AGENT_FLAGS } from "./agent_flags.ts";
import { validateLeaseCountOptions } from "./lease_count_flags.ts";
import { labelSelectorProblem } from "./label_selector.ts";
import {
  type AgentDestinationOptions,
  validateAgentDestinationOptions,
} from "./destination_flags.ts";
import { type AgentServerSetOptions, validateAgentServerSetOptions } from "./server_set_flags.ts";
import { type AgentEgressOptions, validateAgentEgressOptions } from "./egress_proxy.ts";
import { type AgentDrainOptions, validateAgentDrainOptions } from "./drain.ts";

export { AGENT_FLAGS, labelSelectorProblem };

/** Options of the proxy agent. Durations are in milliseconds. */
export interface AgentOptions
  extends
    KlogOptions,
    AgentDestinationOptions,
    AgentServerSetOptions,
    AgentDrainOptions,
    AgentEgressOptions {
  /** `--proxy-server-host`: server host; also the TLS server name with a client cert. @default "127.0.0.1" */
  proxyServerHost: string;
  /** `--proxy-server-port`: the server's agent port; > 0. @default 8091 */
  proxyServerPort: number;
  /** `--ca-cert`: CA bundle verifying the server. @default "" */
  caCert: string;
  /** `--agent-cert`: client certificate for mTLS. @default "" */
  agentCert: string;
  /** `--agent-key`: client key for mTLS. @default "" */
  agentKey: string;
  /** `--alpn-proto`: extra ALPN protocols to offer. @default [] */
  alpnProto: string[];
  /** `--service-account-token-path`: token file sent as `authorization: Bearer`. @default "" */
  serviceAccountTokenPath: string;
  /** `--keepalive-time`: gRPC client keepalive time, in ms. @default 3600000 (1h) */
  keepaliveTime: number;
  /** `--agent-id`: sent as `agentid`. @default env PROXY_AGENT_ID, else a random UUID */
  agentId: string;
  /** `--agent-identifiers`: URL-encoded identifiers sent as `agentidentifiers`. @default "" */
  agentIdentifiers: string;
  /** `--sync-interval`: base interval of the connect loop, in ms. @default 1000 */
  syncInterval: number;
  /** `--sync-interval-cap`: maximum backoff of the connect loop, in ms. @default 10000 */
  syncIntervalCap: number;
  /** `--sync-forever`: keep dialing to discover servers after the count is reached. @default false */
  syncForever: boolean;
  /** `--count-server-leases`: count server Leases (`lease_count_flags.ts`). @default false */
  countServerLeases: boolean;
  /** `--lease-namespace`: namespace of server Leases. @default "kube-system" */
  leaseNamespace: string;
  /** `--lease-label-selector` (alias `--lease-label`). @default "k8s-app=konnectivity-server" */
  leaseLabelSelector: string;
  /** `--server-count-source`: `''`, `default` or `max`. @default "default" */
  serverCountSource: string;
  /** `--kubeconfig`: for the Lease count; empty means in-cluster. @default "" */
  kubeconfig: string;
  /** `--kube-api-content-type`: accepted, no effect (JSON). @default "application/vnd.kubernetes.protobuf" */
  kubeApiContentType: string;
  /** `--xfr-channel-size`: per-connection buffer size; > 0. @default 150 */
  xfrChannelSize: number;
  /** `--warn-on-channel-limit`: log when a per-connection buffer is full. @default false */
  warnOnChannelLimit: boolean;
  /** `--health-server-host`: health bind host; empty means all interfaces. @default "" */
  healthServerHost: string;
  /** `--health-server-port`: > 0. @default 8093 */
  healthServerPort: number;
  /** `--admin-bind-address`. @default "127.0.0.1" */
  adminBindAddress: string;
  /** `--admin-server-port`: > 0. @default 8094 */
  adminServerPort: number;
  /** `--enable-profiling`: not implemented yet. @default false */
  enableProfiling: boolean;
  /** `--enable-contention-profiling`: requires profiling; not implemented yet. @default false */
  enableContentionProfiling: boolean;
  /** `--knp-log-format` (knp only): `json` or `text`. @default "json" */
  knpLogFormat: LogFormat;
  /** `--knp-http-timeout` (knp only): bound on a health/admin connection, ms. @default 10000 */
  knpHttpTimeout: number;
  /** `--knp-websocket-port` (knp only): use the WebSocket agent link on this port; 0 = gRPC. */
  knpWebsocketPort: number;
  /**
   * `--knp-fast-link` (knp only): offer the WebSocket agent link over gRPC and switch to it when
   * a knp server answers (see `fast_link.ts`). @default true
   */
  knpFastLink: boolean;
  /** `--knp-grpc-transport` (knp only): `native` or `grpc-js`. @default "native" */
  knpGrpcTransport: string;
  /** `--knp-print-permissions` (knp only): print the needed `deno run` permission flags and exit. */
  knpPrintPermissions: boolean;
}

// --- Agent identifiers ---

const IDENTIFIER_TYPES = new Set(["ipv4", "ipv6", "host", "cidr", "default-route", "zone"]);

/**
 * Checks `--agent-identifiers` the way Go's `url.ParseQuery` plus upstream's key check would:
 * no `;` separators, valid `%XX` escapes, and only the keys ipv4, ipv6, host, cidr, default-route
 * (and knp's zone); and, beyond upstream, each value (see `identifierValueProblem`).
 *
 * @param text The URL-encoded identifiers, e.g. `"host=node1&ipv4=10.0.0.1"`.
 * @returns The problem, or `undefined` if valid.
 */
export function agentIdentifiersProblem(text: string): string | undefined {
  for (const pair of text.split("&")) {
    if (pair.includes(";")) return "invalid semicolon separator in query";
    const escape = /%(?![0-9A-Fa-f]{2})(.{0,2})/.exec(pair);
    if (escape !== null) return `invalid URL escape "%${escape[1]}"`;
  }
  for (const [key, value] of new URLSearchParams(text)) {
    if (!IDENTIFIER_TYPES.has(key)) return `unknown address type: ${key}`;
    const problem = identifierValueProblem(key as IdentifierType, value);
    if (problem !== undefined) return problem;
  }
  return undefined;
}

/**
 * Successful result of {@linkcode parseAgentOptions}: the options (not yet validated; see
 * {@linkcode validateAgentOptions}) and one line per unimplemented or deprecated flag given.
 */
export type ParsedAgentOptions = ParsedOptions<AgentOptions>;

/**
 * Parses `proxy-agent` arguments.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * const result = parseAgentOptions(["--sync-interval=100ms", "--alpn-proto=[]"], {});
 * assert.ok(!("help" in result));
 * assert.equal(result.options.syncInterval, 100);
 * assert.deepEqual(result.options.alpnProto, []);
 * ```
 *
 * @param args Command-line arguments without the program name.
 * @param env Environment (for `PROXY_AGENT_ID`).
 * @returns The options and notes on unimplemented/deprecated flags, or `{ help: true }`.
 * @throws {KnpError} `INVALID_FLAG` on unknown flags or unparsable values.
 */
export function parseAgentOptions(
  args: readonly string[],
  env: Record<string, string | undefined>,
): ParsedAgentOptions | { help: true } {
  return parseOptions<AgentOptions>(AGENT_FLAGS, args, env);
}

/** Help text of `proxy-agent`. */
export function agentHelp(): string {
  return formatHelp("Usage of proxy-agent:", AGENT_FLAGS);
}

/** Checks `--knp-grpc-transport`. @throws {KnpError} `INVALID_FLAG` for another value */
function requireGrpcTransport(value: string): void {
  if (value !== "native" && value !== "grpc-js") {
    throw invalidFlag(`--knp-grpc-transport: must be one of grpc-js, native, got "${value}"`);
  }
}

/**
 * Checks agent options the way upstream's `Validate()` does (same rules and order), with messages
 * that start with or name the offending flag.
 *
 * @param o The options to check.
 * @throws {KnpError} `INVALID_FLAG` with a one-line message naming the flag.
 */
export function validateAgentOptions(o: AgentOptions): void {
  requireCertKeyPair("agent-cert", o.agentCert, "agent-key", o.agentKey);
  if (o.caCert !== "") requireExistingFile("ca-cert", o.caCert);
  requirePositive("proxy-server-port", o.proxyServerPort);
  // knp extension: 0 binds any free port, reported in the agent's "listening" log line.
  for (
    const [flag, port] of [["health-server-port", o.healthServerPort], [
      "admin-server-port",
      o.adminServerPort,
    ]] as const
  ) {
    if (!Number.isInteger(port) || port < 0 || port > 65535) {
      throw invalidFlag(`--${flag}: must be a port number or 0, got ${port}`);
    }
  }
  requireGrpcTransport(o.knpGrpcTransport);
  if (
    !Number.isInteger(o.knpWebsocketPort) || o.knpWebsocketPort < 0 || o.knpWebsocketPort > 65535
  ) {
    throw invalidFlag(
      `--knp-websocket-port: must be a port number or 0, got ${o.knpWebsocketPort}`,
    );
  }
  requirePositive("xfr-channel-size", o.xfrChannelSize);
  if (!(o.knpHttpTimeout > 0)) {
    throw invalidFlag(`--knp-http-timeout: must be > 0, got ${showDuration(o.knpHttpTimeout)}`);
  }
  requireProfilingForContention(o.enableProfiling, o.enableContentionProfiling);
  if (o.syncInterval > o.syncIntervalCap) {
    throw invalidFlag(
      `--sync-interval: sync interval ${showDuration(o.syncInterval)} must be less than ` +
        `sync interval cap ${showDuration(o.syncIntervalCap)} (--sync-interval-cap)`,
    );
  }
  if (o.serviceAccountTokenPath !== "") {
    requireExistingFile("service-account-token-path", o.serviceAccountTokenPath);
  }
  const identifiersProblem = agentIdentifiersProblem(o.agentIdentifiers);
  if (identifiersProblem !== undefined) {
    throw invalidFlag(`--agent-identifiers: agent address is invalid: ${identifiersProblem}`);
  }
  validateAgentDestinationOptions(o);
  validateAgentServerSetOptions(o);
  validateAgentEgressOptions(o);
  validateAgentDrainOptions(o);
  if (o.kubeconfig !== "") requireExistingFile("kubeconfig", o.kubeconfig);
  validateLeaseCountOptions(o);
  if (
    o.serverCountSource !== "" && o.serverCountSource !== "default" && o.serverCountSource !== "max"
  ) {
    throw invalidFlag(
      `--server-count-source: must be one of '', 'default', 'max', got "${o.serverCountSource}"`,
    );
  }
  const selectorProblem = labelSelectorProblem(o.leaseLabelSelector);
  if (selectorProblem !== undefined) {
    throw invalidFlag(`--lease-label-selector: ${selectorProblem}`);
  }
  requireLogFormat(o.knpLogFormat);
}
