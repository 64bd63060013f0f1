/**
 * Command-line options of `proxy-agent`: every upstream flag with upstream's spelling and default,
 * plus klog's flags and knp's `--knp-log-format`, and upstream's validation rules.
 *
 * Lease counting (`--count-server-leases` and friends), `--kubeconfig` and profiling are accepted
 * for compatibility but have no effect yet (their help text says so).
 *
 * @module
 */

import {
  type FlagSpec,
  type FlagValue,
  formatHelp,
  invalidFlag,
  KLOG_FLAGS,
  type KlogOptions,
  KNP_LOG_FORMAT_FLAG,
  type LogFormat,
  type ParsedOptions,
  parseOptions,
  PROFILING_FLAGS,
  requireCertKeyPair,
  requireExistingFile,
  requireLogFormat,
  requirePositive,
  requireProfilingForContention,
  showDuration,
} from "@knp/cli/flags";

const HOUR_MS = 3_600_000;
const NOT_IMPLEMENTED = "not implemented yet";

/** Options of the proxy agent. Durations are in milliseconds. */
export interface AgentOptions extends KlogOptions {
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
  /** `--probe-interval`: connection readiness probe interval, in ms. @default 1000 */
  probeInterval: number;
  /** `--sync-forever`: keep dialing to discover servers after the count is reached. @default false */
  syncForever: boolean;
  /** `--count-server-leases`: not implemented yet. @default false */
  countServerLeases: boolean;
  /** `--lease-namespace`: not implemented yet. @default "kube-system" */
  leaseNamespace: string;
  /** `--lease-label-selector` (alias `--lease-label`): not implemented yet. @default "k8s-app=konnectivity-server" */
  leaseLabelSelector: string;
  /** `--server-count-source`: `''`, `default` or `max` (max not implemented yet). @default "default" */
  serverCountSource: string;
  /** `--kubeconfig`: not implemented yet. @default "" */
  kubeconfig: string;
  /** `--kube-api-content-type`: not implemented yet. @default "application/vnd.kubernetes.protobuf" */
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
  /** `--knp-websocket-port` (knp only): use the WebSocket agent link on this port; 0 = gRPC. */
  knpWebsocketPort: number;
}

// --- Kubernetes label selector syntax (for --lease-label-selector) ---

const NAME_PART = /^([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]$/;
const DNS_SUBDOMAIN = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

function labelKeyProblem(key: string): string | undefined {
  const parts = key.split("/");
  if (parts.length > 2) return `invalid label key "${key}": at most one "/" is allowed`;
  const name = parts[parts.length - 1]!;
  if (parts.length === 2) {
    const prefix = parts[0]!;
    if (prefix.length === 0 || prefix.length > 253 || !DNS_SUBDOMAIN.test(prefix)) {
      return `invalid label key "${key}": the prefix must be a DNS subdomain`;
    }
  }
  if (name.length === 0 || name.length > 63 || !NAME_PART.test(name)) {
    return `invalid label key "${key}": the name must be 1-63 alphanumerics, '-', '_' or '.', ` +
      `starting and ending with an alphanumeric`;
  }
  return undefined;
}

function labelValueProblem(value: string): string | undefined {
  if (value === "" || (value.length <= 63 && NAME_PART.test(value))) return undefined;
  return `invalid label value "${value}": must be at most 63 alphanumerics, '-', '_' or '.', ` +
    `starting and ending with an alphanumeric`;
}

const SELECTOR_TOKEN = /\s*(!=|==|=|!|\(|\)|,|<|>|[^\s!=(),<>]+)/y;

function tokenizeSelector(text: string): string[] {
  const tokens: string[] = [];
  SELECTOR_TOKEN.lastIndex = 0;
  while (SELECTOR_TOKEN.lastIndex < text.length) {
    const match = SELECTOR_TOKEN.exec(text);
    if (match === null) break; // only trailing whitespace is left
    tokens.push(match[1]!);
  }
  return tokens;
}

function isIdentifier(token: string | undefined): token is string {
  return token !== undefined && !/^(!=|==|=|!|\(|\)|,|<|>)$/.test(token) && token !== "in" &&
    token !== "notin";
}

/**
 * Checks Kubernetes label-selector syntax (`k=v`, `k==v`, `k!=v`, `k in (a,b)`, `k notin (a)`,
 * `k`, `!k`, `k>1`, `k<1`, comma-separated).
 *
 * @param text The selector.
 * @returns The problem, or `undefined` if the selector is valid.
 */
export function labelSelectorProblem(text: string): string | undefined {
  const tokens = tokenizeSelector(text);
  let i = 0;
  const found = (token: string | undefined) => token === undefined ? "end of string" : `'${token}'`;
  while (i < tokens.length) {
    let token = tokens[i];
    const negated = token === "!";
    if (negated) token = tokens[++i];
    if (!isIdentifier(token)) return `found ${found(token)}, expected a label key`;
    const keyProblem = labelKeyProblem(token);
    if (keyProblem !== undefined) return keyProblem;
    i++;
    const op = tokens[i];
    if (negated || op === undefined || op === ",") {
      // `k` or `!k`: existence requirement.
    } else if (op === "in" || op === "notin") {
      i++;
      if (tokens[i] !== "(") return `found ${found(tokens[i])}, expected '(' after ${op}`;
      i++;
      const values: string[] = [];
      while (true) {
        const value = tokens[i];
        if (value === ")") {
          i++;
          break;
        }
        if (value === ",") {
          values.push("");
          i++;
          continue;
        }
        if (!isIdentifier(value)) return `found ${found(value)}, expected a value or ')'`;
        values.push(value);
        i++;
        if (tokens[i] === ",") i++;
        else if (tokens[i] !== ")") return `found ${found(tokens[i])}, expected ',' or ')'`;
      }
      if (values.length === 0) return `the value set of '${op}' cannot be empty`;
      for (const value of values) {
        const problem = labelValueProblem(value);
        if (problem !== undefined) return problem;
      }
    } else if (op === "=" || op === "==" || op === "!=") {
      i++;
      const value = tokens[i];
      if (value === undefined || value === ",") {
        // An empty value is allowed.
      } else if (isIdentifier(value)) {
        const problem = labelValueProblem(value);
        if (problem !== undefined) return problem;
        i++;
      } else {
        return `found ${found(value)}, expected a value`;
      }
    } else if (op === "<" || op === ">") {
      i++;
      const value = tokens[i];
      if (value === undefined || !/^[+-]?\d+$/.test(value)) {
        return `found ${found(value)}, expected an integer after '${op}'`;
      }
      i++;
    } else {
      return `found ${found(op)}, expected one of in, notin, =, ==, !=, <, >`;
    }
    if (i >= tokens.length) break;
    if (tokens[i] !== ",") return `found ${found(tokens[i])}, expected ','`;
    i++;
    if (i >= tokens.length) return "found end of string, expected a label key after ','";
  }
  return undefined;
}

function checkSelector(value: FlagValue): string | undefined {
  return labelSelectorProblem(value as string);
}

// --- Agent identifiers ---

const IDENTIFIER_TYPES = new Set(["ipv4", "ipv6", "host", "cidr", "default-route"]);

/**
 * Checks `--agent-identifiers` the way Go's `url.ParseQuery` plus upstream's key check would:
 * no `;` separators, valid `%XX` escapes, and only the keys ipv4, ipv6, host, cidr, default-route.
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
  for (const key of new URLSearchParams(text).keys()) {
    if (!IDENTIFIER_TYPES.has(key)) return `unknown address type: ${key}`;
  }
  return undefined;
}

/** Every flag `proxy-agent` accepts. */
export const AGENT_FLAGS: readonly FlagSpec[] = [
  {
    name: "proxy-server-host",
    type: "string",
    default: "127.0.0.1",
    help: "Host of the proxy server (also the TLS server name when --agent-cert is set).",
    implemented: true,
  },
  {
    name: "proxy-server-port",
    type: "int",
    default: 8091,
    help: "Agent port of the proxy server.",
    implemented: true,
  },
  {
    name: "ca-cert",
    type: "string",
    default: "",
    help: "CA file verifying the proxy server's certificate.",
    implemented: true,
  },
  {
    name: "agent-cert",
    type: "string",
    default: "",
    help: "Client certificate file for mTLS.",
    implemented: true,
  },
  {
    name: "agent-key",
    type: "string",
    default: "",
    help: "Client key file for mTLS.",
    implemented: true,
  },
  {
    name: "alpn-proto",
    type: "stringSlice",
    default: [],
    help: "Extra ALPN protocols offered to the server (comma-separated).",
    implemented:
      "not implemented yet (grpc-js cannot add ALPN protocols; the agent offers h2 only)",
  },
  {
    name: "service-account-token-path",
    type: "string",
    default: "",
    help: "File with a service-account token sent to the server as a bearer token.",
    implemented: true,
  },
  {
    name: "keepalive-time",
    type: "duration",
    default: HOUR_MS,
    help: "gRPC keepalive time on server connections.",
    implemented: true,
  },
  {
    name: "agent-id",
    type: "string",
    default: () => crypto.randomUUID(),
    defaultText: "$PROXY_AGENT_ID, else a random UUID",
    env: "PROXY_AGENT_ID",
    help: "Unique ID of this agent, sent to servers.",
    implemented: true,
  },
  {
    name: "agent-identifiers",
    type: "string",
    default: "",
    help:
      "URL-encoded identifiers servers route by, e.g. host=node1&ipv4=10.0.0.1&default-route=true " +
      "(keys: ipv4, ipv6, host, cidr, default-route).",
    implemented: true,
  },
  {
    name: "sync-interval",
    type: "duration",
    default: 1_000,
    help: "Base interval at which the agent checks it is connected to every server.",
    implemented: true,
  },
  {
    name: "sync-interval-cap",
    type: "duration",
    default: 10_000,
    help: "Maximum interval the sync loop backs off to while servers are unreachable.",
    implemented: true,
  },
  {
    name: "probe-interval",
    type: "duration",
    default: 1_000,
    help: "Interval at which each server connection's readiness is checked.",
    implemented: "not needed (knp notices a broken server stream from the transport itself)",
  },
  {
    name: "sync-forever",
    type: "bool",
    default: false,
    help: "Keep syncing after connecting to every server, to follow server-count changes.",
    implemented: true,
  },
  {
    name: "count-server-leases",
    type: "bool",
    default: false,
    help: "Count server Leases to learn how many servers to connect to.",
    implemented: NOT_IMPLEMENTED,
  },
  {
    name: "lease-namespace",
    type: "string",
    default: "kube-system",
    help: "Namespace of server Leases.",
    implemented: NOT_IMPLEMENTED,
  },
  {
    name: "lease-label-selector",
    type: "string",
    default: "k8s-app=konnectivity-server",
    help: "Label selector of the server Leases to count.",
    implemented: NOT_IMPLEMENTED,
    check: checkSelector,
  },
  {
    name: "lease-label",
    type: "string",
    default: "k8s-app=konnectivity-server",
    help: "Old name of --lease-label-selector.",
    implemented: NOT_IMPLEMENTED,
    alias: "lease-label-selector",
    hidden: true,
    deprecated: "use --lease-label-selector instead",
  },
  {
    name: "server-count-source",
    type: "string",
    default: "default",
    help: "How lease and server-reported counts combine: default (one source) or max " +
      "(max not implemented yet).",
    implemented: true,
  },
  {
    name: "kubeconfig",
    type: "string",
    default: "",
    help: "Kubeconfig file for listing Leases; empty means in-cluster config.",
    implemented: NOT_IMPLEMENTED,
  },
  {
    name: "kube-api-content-type",
    type: "string",
    default: "application/vnd.kubernetes.protobuf",
    help: "Content type of requests to the Kubernetes API server.",
    implemented: NOT_IMPLEMENTED,
  },
  {
    name: "xfr-channel-size",
    type: "int",
    default: 150,
    help: "Buffer size of each connection's data queues; must be > 0.",
    implemented: "not used (knp bounds per-connection buffers in bytes, not in packets)",
  },
  {
    name: "warn-on-channel-limit",
    type: "bool",
    default: false,
    help: "Log a warning when a connection's buffer is full.",
    implemented: true,
  },
  {
    name: "health-server-host",
    type: "string",
    default: "",
    help: "Health server bind host; empty means all interfaces.",
    implemented: true,
  },
  {
    name: "health-server-port",
    type: "int",
    default: 8093,
    help: "Port of the health server (/healthz, /readyz, /metrics).",
    implemented: true,
  },
  {
    name: "admin-bind-address",
    type: "string",
    default: "127.0.0.1",
    help: "Admin server bind address.",
    implemented: true,
  },
  {
    name: "admin-server-port",
    type: "int",
    default: 8094,
    help: "Port of the admin server.",
    implemented: true,
  },
  ...PROFILING_FLAGS,
  KNP_LOG_FORMAT_FLAG,
  {
    name: "knp-websocket-port",
    type: "int",
    default: 0,
    help: "knp only: connect over the WebSocket agent link to this port of a knp server " +
      "(faster than gRPC under Deno); 0 = gRPC on --proxy-server-port.",
    implemented: true,
  },
  ...KLOG_FLAGS,
];

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
  return parseOptions<AgentOptions>(AGENT_FLAGS, args, env, (o) =>
    o.serverCountSource === "max"
      ? [
        "--server-count-source=max is accepted but not implemented yet; the server-reported count is used",
      ]
      : []);
}

/** Help text of `proxy-agent`. */
export function agentHelp(): string {
  return formatHelp("Usage of proxy-agent:", AGENT_FLAGS);
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
  if (
    !Number.isInteger(o.knpWebsocketPort) || o.knpWebsocketPort < 0 || o.knpWebsocketPort > 65535
  ) {
    throw invalidFlag(
      `--knp-websocket-port: must be a port number or 0, got ${o.knpWebsocketPort}`,
    );
  }
  requirePositive("xfr-channel-size", o.xfrChannelSize);
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
  if (o.kubeconfig !== "") requireExistingFile("kubeconfig", o.kubeconfig);
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
