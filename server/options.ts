/**
 * Command-line options of `proxy-server`: every upstream flag with upstream's spelling and default,
 * plus klog's flags and knp's `--knp-log-format`, and upstream's validation rules.
 *
 * knp differences: `--backend-dial-timeout` defaults to 10s (upstream: 0s, no timeout); a few flags
 * are accepted for compatibility but have no effect yet (their help text says so).
 *
 * @module
 */

import { errorMessage } from "@knp/core/errors";
import { camelCaseFlagName, invalidFlag, type ParsedOptions, parseOptions } from "@knp/cli/flags";
import { formatHelp } from "@knp/cli/flag_help";
import { type KlogOptions, type LogFormat, requireLogFormat } from "@knp/cli/common_flags";
import {
  requireCertKeyPair,
  requireExistingFile,
  requirePositive,
  requireProfilingForContention,
  showDuration,
} from "@knp/cli/flag_checks";
import { parseProxyStrategies } from "./backend_manager.ts";
import { SERVER_FLAGS } from "./server_flags.ts";
import { type OverloadOptions, validateOverloadOptions } from "./overload_flags.ts";
import { type DestinationServerOptions, validateDestinationOptions } from "./destination_flags.ts";
import { type AgentGateOptions, validateAgentGateOptions } from "./agent_gate_options.ts";
import type { TokenAuthFlags } from "./token_review.ts";
import { type LeaseControllerOptions, validateLeaseOptions } from "./lease_flags.ts";
import { type DirectDestinationOptions, validateDirectOptions } from "./direct_flags.ts";
import { type RoutingServerOptions, validateRoutingOptions } from "./routing_flags.ts";
import { type ExplainServerOptions, validateExplainOptions } from "./explain_flags.ts";
import {
  type GrpcTransportServerOptions,
  validateGrpcTransportOptions,
} from "./grpc_transport_flags.ts";
import type { FastLinkServerOptions } from "./fast_link.ts";

export { SERVER_FLAGS };

/** Options of the proxy server. Durations are in milliseconds. */
export interface ServerOptions
  extends
    KlogOptions,
    OverloadOptions,
    DestinationServerOptions,
    AgentGateOptions,
    TokenAuthFlags,
    LeaseControllerOptions,
    DirectDestinationOptions,
    RoutingServerOptions,
    ExplainServerOptions,
    GrpcTransportServerOptions,
    FastLinkServerOptions {
  /** `--mode`: frontend protocol, `grpc` or `http-connect`. @default "grpc" */
  mode: string;
  /** `--uds-name`: Unix socket path of the frontend; non-empty disables the TCP frontend. @default "" */
  udsName: string;
  /** `--delete-existing-uds-file`: remove a stale socket file before listening. @default true */
  deleteExistingUdsFile: boolean;
  /** `--server-port`: frontend TCP port; must be 0 with a UDS. @default 8090 */
  serverPort: number;
  /** `--server-bind-address`: frontend bind address; empty means all interfaces. @default "" */
  serverBindAddress: string;
  /** `--agent-port`: agent (TLS) gRPC port. @default 8091 */
  agentPort: number;
  /** `--agent-bind-address`: agent bind address; empty means all interfaces. @default "" */
  agentBindAddress: string;
  /** `--server-cert`: frontend TLS certificate. @default "" */
  serverCert: string;
  /** `--server-key`: frontend TLS key. @default "" */
  serverKey: string;
  /** `--server-ca-cert`: CA verifying frontend client certificates; required for TCP. @default "" */
  serverCaCert: string;
  /** `--cluster-cert`: agent-port TLS certificate. @default "" */
  clusterCert: string;
  /** `--cluster-key`: agent-port TLS key. @default "" */
  clusterKey: string;
  /** `--cluster-ca-cert`: CA verifying agent client certificates (mTLS). @default "" */
  clusterCaCert: string;
  /**
   * `--cipher-suites`: Go cipher-suite names; accepted and validated, but no effect under Deno
   * (its TLS stack ignores cipher lists). @default []
   */
  cipherSuites: string[];
  /** `--tls-min-version`: `VersionTLS10`..`VersionTLS13` (empty: TLS 1.2). @default "" */
  tlsMinVersion: string;
  /** `--proxy-strategies`: ordered list of default, destHost, defaultRoute, destCIDR. @default "default" */
  proxyStrategies: string;
  /** `--server-id`: sent to agents as `serverid`. @default env PROXY_SERVER_ID, else a random UUID */
  serverId: string;
  /** `--server-count`: number of server replicas, sent to agents as `servercount`. @default 1 */
  serverCount: number;
  /** `--enable-lease-controller`: publish the server's Lease (see `lease_flags.ts`). @default false */
  enableLeaseController: boolean;
  /** `--lease-namespace`: namespace of server Leases. @default "kube-system" */
  leaseNamespace: string;
  /** `--lease-label`: `k=v,...` on the Lease. @default "k8s-app=konnectivity-server" */
  leaseLabel: string;
  /** `--keepalive-time`: gRPC keepalive time towards agents, in ms. @default 3600000 (1h) */
  keepaliveTime: number;
  /** `--frontend-keepalive-time`: gRPC keepalive time towards frontends, in ms. @default 3600000 */
  frontendKeepaliveTime: number;
  /** `--xfr-channel-size`: per-stream receive buffer size; > 0. @default 10 */
  xfrChannelSize: number;
  /** `--backend-dial-timeout`: DIAL_REQ send + DIAL_RSP wait bound, in ms; 0 disables. @default 10000 (knp) */
  backendDialTimeout: number;
  /** `--graceful-shutdown-timeout`: in ms; 0 shuts down at once. @default 0 */
  gracefulShutdownTimeout: number;
  /** `--warn-on-channel-limit`: deprecated, no effect. @default true */
  warnOnChannelLimit: boolean;
  /** `--health-port`. @default 8092 */
  healthPort: number;
  /** `--health-bind-address`: empty means all interfaces. @default "" */
  healthBindAddress: string;
  /** `--admin-port`. @default 8095 */
  adminPort: number;
  /** `--admin-bind-address`. @default "127.0.0.1" */
  adminBindAddress: string;
  /** `--enable-profiling`: not implemented yet. @default false */
  enableProfiling: boolean;
  /** `--enable-contention-profiling`: requires profiling; not implemented yet. @default false */
  enableContentionProfiling: boolean;
  /** `--knp-log-format` (knp only): `json` or `text`. @default "json" */
  knpLogFormat: LogFormat;
  /** `--knp-http-timeout` (knp only): bound on a health/admin connection, ms. @default 10000 */
  knpHttpTimeout: number;
  /** `--knp-frontend-idle-timeout` (knp only): idle gRPC frontend bound, ms. @default 60000 */
  knpFrontendIdleTimeout: number;
  /** `--knp-max-pending-dials` (knp only): dials that may wait for agents at once. @default 10000 */
  knpMaxPendingDials: number;
  /** `--knp-websocket-port` (knp only): port of the WebSocket agent link; 0 = off. @default 0 */
  knpWebsocketPort: number;
  /** `--knp-print-permissions` (knp only): print the needed `deno run` permission flags and exit. */
  knpPrintPermissions: boolean;
}

/**
 * Successful result of {@linkcode parseServerOptions}: the options (not yet validated; see
 * {@linkcode validateServerOptions}) and one line per unimplemented or deprecated flag given.
 */
export type ParsedServerOptions = ParsedOptions<ServerOptions>;

/**
 * Parses `proxy-server` arguments.
 *
 * @example
 * ```ts
 * import assert from "node:assert/strict";
 * const result = parseServerOptions(["--uds-name=/tmp/knp.sock", "--server-port=0"], {});
 * assert.ok(!("help" in result));
 * assert.equal(result.options.udsName, "/tmp/knp.sock");
 * assert.equal(result.options.keepaliveTime, 3_600_000);
 * ```
 *
 * @param args Command-line arguments without the program name.
 * @param env Environment (for `PROXY_SERVER_ID`).
 * @returns The options and notes on unimplemented/deprecated flags, or `{ help: true }`.
 * @throws {KnpError} `INVALID_FLAG` on unknown flags or unparsable values.
 */
export function parseServerOptions(
  args: readonly string[],
  env: Record<string, string | undefined>,
): ParsedServerOptions | { help: true } {
  return parseOptions<ServerOptions>(SERVER_FLAGS, args, env);
}

/** Help text of `proxy-server`. */
export function serverHelp(): string {
  return formatHelp("Usage of proxy-server:", SERVER_FLAGS);
}

/**
 * Parses `--lease-label` (`k=v,k2=v2`; spaces around keys and values are trimmed).
 *
 * @param text The flag value.
 * @returns The labels.
 * @throws {KnpError} `INVALID_FLAG` if the text is empty or an item is not `key=value`.
 */
export function parseLeaseLabels(text: string): Record<string, string> {
  if (text === "") throw invalidFlag("--lease-label: must not be empty");
  const labels: Record<string, string> = {};
  for (const pair of text.split(",")) {
    const parts = pair.split("=");
    if (parts.length !== 2) {
      throw invalidFlag(`--lease-label: "${pair}" is not of the form key=value`);
    }
    labels[parts[0]!.trim()] = parts[1]!.trim();
  }
  return labels;
}

/** TLS versions accepted by `--tls-min-version`. */
const TLS_VERSIONS = ["VersionTLS10", "VersionTLS11", "VersionTLS12", "VersionTLS13"];

/** Cipher suites Go (1.26) lists as secure in `tls.CipherSuites()`. */
const SECURE_CIPHER_SUITES = new Set([
  "TLS_AES_128_GCM_SHA256",
  "TLS_AES_256_GCM_SHA384",
  "TLS_CHACHA20_POLY1305_SHA256",
  "TLS_ECDHE_ECDSA_WITH_AES_128_CBC_SHA",
  "TLS_ECDHE_ECDSA_WITH_AES_256_CBC_SHA",
  "TLS_ECDHE_RSA_WITH_AES_128_CBC_SHA",
  "TLS_ECDHE_RSA_WITH_AES_256_CBC_SHA",
  "TLS_ECDHE_ECDSA_WITH_AES_128_GCM_SHA256",
  "TLS_ECDHE_ECDSA_WITH_AES_256_GCM_SHA384",
  "TLS_ECDHE_RSA_WITH_AES_128_GCM_SHA256",
  "TLS_ECDHE_RSA_WITH_AES_256_GCM_SHA384",
  "TLS_ECDHE_RSA_WITH_CHACHA20_POLY1305_SHA256",
  "TLS_ECDHE_ECDSA_WITH_CHACHA20_POLY1305_SHA256",
]);

function checkPortRange(flag: string, what: string, port: number, allowReserved: boolean): void {
  // knp extension: 0 binds any free port, which the server reports in its "listening" log line.
  if (port === 0) return;
  if (port > 49151) {
    throw invalidFlag(
      `--${flag}: please do not try to use ephemeral port ${port} for the ${what} port`,
    );
  }
  if (port < 1024 && !allowReserved) {
    throw invalidFlag(
      `--${flag}: please do not try to use reserved port ${port} for the ${what} port`,
    );
  }
}

/** Certificate files must exist and come in pairs. */
function checkFiles(o: ServerOptions): void {
  requireCertKeyPair("server-cert", o.serverCert, "server-key", o.serverKey);
  if (o.serverCaCert !== "") requireExistingFile("server-ca-cert", o.serverCaCert);
  requireCertKeyPair("cluster-cert", o.clusterCert, "cluster-key", o.clusterKey);
  if (o.clusterCaCert !== "") requireExistingFile("cluster-ca-cert", o.clusterCaCert);
}

/** The frontend: a plaintext UDS (no TCP port, no server certificates) or TCP with mTLS. */
function checkFrontend(o: ServerOptions): void {
  if (o.mode !== "grpc" && o.mode !== "http-connect") {
    throw invalidFlag(`--mode: must be "grpc" or "http-connect", got "${o.mode}"`);
  }
  if (o.udsName !== "") {
    if (o.serverPort !== 0) {
      throw invalidFlag(`--server-port: must be 0 when --uds-name is set, got ${o.serverPort}`);
    }
    const record = o as unknown as Record<string, unknown>;
    for (const flag of ["server-key", "server-cert", "server-ca-cert"]) {
      if (record[camelCaseFlagName(flag)] !== "") {
        throw invalidFlag(
          `--${flag}: must not be set with --uds-name (the UDS frontend is plaintext)`,
        );
      }
    }
  } else if (o.serverCaCert === "") {
    throw invalidFlag(
      "--server-ca-cert: required when the frontend uses TCP (--uds-name is empty)",
    );
  }
}

function checkPorts(o: ServerOptions): void {
  checkPortRange("server-port", "server", o.serverPort, o.udsName !== "");
  checkPortRange("agent-port", "agent", o.agentPort, false);
  checkPortRange("admin-port", "admin", o.adminPort, false);
  checkPortRange("health-port", "health", o.healthPort, false);
  if (o.knpWebsocketPort !== 0) {
    checkPortRange("knp-websocket-port", "WebSocket agent link", o.knpWebsocketPort, false);
  }
}

/** Token authentication needs all three of its flags, and excludes mTLS of agents. */
function checkTokenAuth(o: ServerOptions): void {
  const tokenAuth = o.agentNamespace !== "" || o.agentServiceAccount !== "" ||
    o.authenticationAudience !== "";
  if (!tokenAuth) return;
  if (o.clusterCaCert !== "") {
    throw invalidFlag("--cluster-ca-cert cannot be used with agent token authentication");
  }
  const record = o as unknown as Record<string, unknown>;
  for (const flag of ["agent-namespace", "agent-service-account", "authentication-audience"]) {
    if (record[camelCaseFlagName(flag)] === "") {
      throw invalidFlag(
        `--${flag}: required for agent token authentication (--agent-namespace, ` +
          `--agent-service-account and --authentication-audience go together)`,
      );
    }
  }
}

/** `--tls-min-version` and `--cipher-suites`; returns a warning for an insecure minimum. */
function checkTls(o: ServerOptions): string[] {
  const warnings: string[] = [];
  if (o.tlsMinVersion !== "") {
    if (!TLS_VERSIONS.includes(o.tlsMinVersion)) {
      throw invalidFlag(
        `--tls-min-version: unsupported TLS version "${o.tlsMinVersion}"; use ${
          TLS_VERSIONS.join(", ")
        }`,
      );
    }
    if (o.tlsMinVersion === "VersionTLS10" || o.tlsMinVersion === "VersionTLS11") {
      warnings.push(`--tls-min-version=${o.tlsMinVersion} is below TLS 1.2 and insecure`);
    }
  }
  for (const suite of o.cipherSuites) {
    if (!SECURE_CIPHER_SUITES.has(suite)) {
      throw invalidFlag(`--cipher-suites: "${suite}" is unknown or insecure`);
    }
  }
  return warnings;
}

function checkTimeouts(o: ServerOptions): void {
  if (!(o.gracefulShutdownTimeout >= 0)) {
    throw invalidFlag(
      `--graceful-shutdown-timeout: must be >= 0, got ${showDuration(o.gracefulShutdownTimeout)}`,
    );
  }
  if (!(o.backendDialTimeout >= 0)) {
    throw invalidFlag(
      `--backend-dial-timeout: must be >= 0, got ${showDuration(o.backendDialTimeout)}`,
    );
  }
}

/**
 * Checks server options the way upstream's `Validate()` does (same rules and order), with messages
 * that start with or name the offending flag.
 *
 * @param o The options to check.
 * @returns Warnings that do not stop the server (e.g. an insecure `--tls-min-version`).
 * @throws {KnpError} `INVALID_FLAG` with a one-line message naming the flag.
 */
export function validateServerOptions(o: ServerOptions): string[] {
  checkFiles(o);
  for (
    const [flag, value] of [
      ["knp-http-timeout", o.knpHttpTimeout],
      ["knp-frontend-idle-timeout", o.knpFrontendIdleTimeout],
    ] as const
  ) {
    if (!(value > 0)) throw invalidFlag(`--${flag}: must be > 0, got ${showDuration(value)}`);
  }
  if (!Number.isInteger(o.knpMaxPendingDials) || o.knpMaxPendingDials < 1) {
    throw invalidFlag(`--knp-max-pending-dials: must be at least 1, got ${o.knpMaxPendingDials}`);
  }
  validateOverloadOptions(o);
  validateDestinationOptions(o);
  validateAgentGateOptions(o);
  checkFrontend(o);
  checkPorts(o);
  requireProfilingForContention(o.enableProfiling, o.enableContentionProfiling);
  checkTokenAuth(o);
  if (o.kubeconfig !== "") requireExistingFile("kubeconfig", o.kubeconfig);
  try {
    parseProxyStrategies(o.proxyStrategies);
  } catch (err) {
    throw invalidFlag(`--proxy-strategies: ${errorMessage(err)}`);
  }
  requirePositive("xfr-channel-size", o.xfrChannelSize);
  const warnings = checkTls(o);
  if (o.enableLeaseController) parseLeaseLabels(o.leaseLabel);
  validateLeaseOptions(o);
  validateDirectOptions(o);
  validateRoutingOptions(o);
  validateExplainOptions(o);
  validateGrpcTransportOptions(o);
  checkTimeouts(o);
  requireLogFormat(o.knpLogFormat);
  return warnings;
}
