/**
 * The table of every flag `proxy-server` accepts: upstream's spelling and defaults, klog's flags
 * and knp's own (`--knp-*`).
 *
 * @module
 */

import type { FlagSpec } from "@knp/cli/flags";
import {
  KLOG_FLAGS,
  KNP_HTTP_TIMEOUT_FLAG,
  KNP_LOG_FORMAT_FLAG,
  KNP_PRINT_PERMISSIONS_FLAG,
  PROFILING_FLAGS,
} from "@knp/cli/common_flags";
import { OVERLOAD_FLAGS } from "./overload_flags.ts";
import { DESTINATION_FLAGS } from "./destination_flags.ts";
import { AGENT_GATE_FLAGS } from "./agent_gate_options.ts";
import { LEASE_FLAGS } from "./lease_flags.ts";
import { DIRECT_FLAGS } from "./direct_flags.ts";
import { ROUTING_FLAGS } from "./routing_flags.ts";
import { EXPLAIN_FLAGS } from "./explain_flags.ts";
import { GRPC_TRANSPORT_FLAGS } from "./grpc_transport_flags.ts";
import { FAST_LINK_FLAGS } from "./fast_link.ts";

const HOUR_MS = 3_600_000;

/** Every flag `proxy-server` accepts. */
export const SERVER_FLAGS: readonly FlagSpec[] = [
  {
    name: "mode",
    type: "string",
    default: "grpc",
    help: "Frontend protocol: grpc or http-connect.",
    implemented: true,
  },
  {
    name: "uds-name",
    type: "string",
    default: "",
    help: "Unix socket path for the frontend; empty means TCP.",
    implemented: true,
  },
  {
    name: "delete-existing-uds-file",
    type: "bool",
    default: true,
    help: "Remove an existing file at --uds-name before listening.",
    implemented: true,
  },
  {
    name: "server-port",
    type: "int",
    default: 8090,
    help: "Frontend TCP port; must be 0 with --uds-name.",
    implemented: true,
  },
  {
    name: "server-bind-address",
    type: "string",
    default: "",
    help: "Frontend bind address; empty means all interfaces.",
    implemented: true,
  },
  {
    name: "agent-port",
    type: "int",
    default: 8091,
    help: "Port agents connect to (gRPC over TLS).",
    implemented: true,
  },
  {
    name: "agent-bind-address",
    type: "string",
    default: "",
    help: "Agent bind address; empty means all interfaces.",
    implemented: true,
  },
  {
    name: "server-cert",
    type: "string",
    default: "",
    help: "Frontend TLS certificate file.",
    implemented: true,
  },
  {
    name: "server-key",
    type: "string",
    default: "",
    help: "Frontend TLS key file.",
    implemented: true,
  },
  {
    name: "server-ca-cert",
    type: "string",
    default: "",
    help: "CA file verifying frontend client certificates; required in TCP mode.",
    implemented: true,
  },
  {
    name: "cluster-cert",
    type: "string",
    default: "",
    help: "Agent-port TLS certificate file.",
    implemented: true,
  },
  {
    name: "cluster-key",
    type: "string",
    default: "",
    help: "Agent-port TLS key file.",
    implemented: true,
  },
  {
    name: "cluster-ca-cert",
    type: "string",
    default: "",
    help: "CA file verifying agent client certificates (enables mTLS).",
    implemented: true,
  },
  {
    name: "cipher-suites",
    type: "stringSlice",
    default: [],
    help:
      "Comma-separated Go TLS cipher-suite names; empty means the defaults; no effect on TLS 1.3.",
    implemented: "not supported under Deno (its TLS stack, rustls, ignores cipher lists)",
  },
  {
    name: "tls-min-version",
    type: "string",
    default: "",
    help:
      "Minimum TLS version: VersionTLS10, VersionTLS11, VersionTLS12 or VersionTLS13; empty means TLS 1.2.",
    implemented: true,
  },
  {
    name: "agent-namespace",
    type: "string",
    default: "",
    help:
      "Expected service-account namespace of agents; enables token authentication (TokenReview).",
    implemented: true,
  },
  {
    name: "agent-service-account",
    type: "string",
    default: "",
    help: "Expected service-account name of agents (token authentication).",
    implemented: true,
  },
  {
    name: "authentication-audience",
    type: "string",
    default: "",
    help: "Audience for agent token reviews (token authentication).",
    implemented: true,
  },
  {
    name: "kubeconfig",
    type: "string",
    default: "",
    help: "Kubeconfig file of the Kubernetes client (token reviews, leases); empty means " +
      "in-cluster config.",
    implemented: true,
  },
  {
    name: "kubeconfig-qps",
    type: "float",
    default: 0,
    help: "Kubernetes client QPS (token reviews); 0 means the client default (5).",
    implemented: true,
  },
  {
    name: "kubeconfig-burst",
    type: "int",
    default: 0,
    help: "Kubernetes client burst (token reviews); 0 means the client default (10).",
    implemented: true,
  },
  {
    name: "kube-api-content-type",
    type: "string",
    default: "application/vnd.kubernetes.protobuf",
    help: "Content type of requests to the Kubernetes API server (knp's client sends JSON).",
    implemented: "not supported (the Kubernetes client, @kubernetes/client-node, speaks JSON only)",
  },
  {
    name: "proxy-strategies",
    type: "string",
    default: "default",
    help:
      "Ordered comma-separated strategies for picking an agent: default, destHost, defaultRoute " +
      "(knp adds destCIDR: the agent whose cidr identifier holds the IP, longest prefix wins).",
    implemented: true,
  },
  {
    name: "server-id",
    type: "string",
    default: () => crypto.randomUUID(),
    defaultText: "$PROXY_SERVER_ID, else a random UUID",
    env: "PROXY_SERVER_ID",
    help: "Unique ID of this server, sent to agents.",
    implemented: true,
  },
  {
    name: "server-count",
    type: "int",
    default: 1,
    help: "Number of proxy-server replicas, sent to agents.",
    implemented: true,
  },
  {
    name: "enable-lease-controller",
    type: "bool",
    default: false,
    help: "Publish this server's Lease and remove expired ones.",
    implemented: true,
  },
  {
    name: "lease-namespace",
    type: "string",
    default: "kube-system",
    help: "Namespace of server Leases.",
    implemented: true,
  },
  {
    name: "lease-label",
    type: "string",
    default: "k8s-app=konnectivity-server",
    help: "Labels (k=v,k2=v2) put on server Leases and used to find them.",
    implemented: true,
  },
  {
    name: "keepalive-time",
    type: "duration",
    default: HOUR_MS,
    help: "gRPC keepalive time on agent connections.",
    implemented: true,
  },
  {
    name: "frontend-keepalive-time",
    type: "duration",
    default: HOUR_MS,
    help: "gRPC keepalive time on frontend connections.",
    implemented: true,
  },
  {
    name: "xfr-channel-size",
    type: "int",
    default: 10,
    help: "Receive buffer size of each frontend and agent stream; must be > 0.",
    implemented: "not used (knp bounds per-connection buffers in bytes, not in packets)",
  },
  {
    name: "backend-dial-timeout",
    type: "duration",
    default: 10_000,
    help: "Bound on sending DIAL_REQ to an agent and waiting for DIAL_RSP; 0 disables. " +
      "knp defaults to 10s (upstream: 0s, unbounded).",
    implemented: true,
  },
  {
    name: "graceful-shutdown-timeout",
    type: "duration",
    default: 0,
    help: "How long shutdown waits for open connections; 0 shuts down at once.",
    implemented: true,
  },
  {
    name: "warn-on-channel-limit",
    type: "bool",
    default: true,
    help: "No effect.",
    implemented: true,
    hidden: true,
    deprecated: "it has no effect and will be removed",
  },
  {
    name: "health-port",
    type: "int",
    default: 8092,
    help: "Port of the health server (/healthz, /readyz).",
    implemented: true,
  },
  {
    name: "health-bind-address",
    type: "string",
    default: "",
    help: "Health server bind address; empty means all interfaces.",
    implemented: true,
  },
  {
    name: "admin-port",
    type: "int",
    default: 8095,
    help: "Port of the admin server (/metrics).",
    implemented: true,
  },
  {
    name: "admin-bind-address",
    type: "string",
    default: "127.0.0.1",
    help: "Admin server bind address.",
    implemented: true,
  },
  ...PROFILING_FLAGS,
  KNP_LOG_FORMAT_FLAG,
  KNP_HTTP_TIMEOUT_FLAG,
  {
    name: "knp-frontend-idle-timeout",
    type: "duration",
    default: 60_000,
    help: "knp only: closes a gRPC frontend connection (GOAWAY) that has had no open stream " +
      "for this long, including one that never sends anything.",
    implemented: true,
  },
  {
    name: "knp-max-pending-dials",
    type: "int",
    default: 10_000,
    help: "knp only: most dials that may wait for an agent's answer at once; " +
      'more are refused as "server overloaded" (HTTP 503).',
    implemented: true,
  },
  {
    name: "knp-websocket-port",
    type: "int",
    default: 0,
    help: "knp only: port of the WebSocket agent link for knp agents (TLS with --cluster-cert/" +
      "--cluster-key; with --cluster-ca-cert the agent must prove its certificate); 0 = off.",
    implemented: true,
  },
  ...OVERLOAD_FLAGS,
  ...DESTINATION_FLAGS,
  ...AGENT_GATE_FLAGS,
  ...LEASE_FLAGS,
  ...DIRECT_FLAGS,
  ...ROUTING_FLAGS,
  ...EXPLAIN_FLAGS,
  ...GRPC_TRANSPORT_FLAGS,
  ...FAST_LINK_FLAGS,
  KNP_PRINT_PERMISSIONS_FLAG,
  ...KLOG_FLAGS,
];
