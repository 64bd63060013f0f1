/**
 * The table of every flag `proxy-agent` accepts: upstream's spelling and defaults, klog's flags
 * and knp's own (`--knp-*`).
 *
 * @module
 */

import type { FlagSpec, FlagValue } from "@knp/cli/flags";
import {
  KLOG_FLAGS,
  KNP_HTTP_TIMEOUT_FLAG,
  KNP_LOG_FORMAT_FLAG,
  KNP_PRINT_PERMISSIONS_FLAG,
  PROFILING_FLAGS,
} from "@knp/cli/common_flags";
import { labelSelectorProblem } from "./label_selector.ts";
import { AGENT_DESTINATION_FLAGS } from "./destination_flags.ts";
import { AGENT_SERVER_SET_FLAGS } from "./server_set_flags.ts";
import { AGENT_EGRESS_FLAGS } from "./egress_proxy.ts";
import { AGENT_DRAIN_FLAGS } from "./drain.ts";

const HOUR_MS = 3_600_000;

function checkSelector(value: FlagValue): string | undefined {
  return labelSelectorProblem(value as string);
}

/** Every flag `proxy-agent` accepts. */
export const AGENT_FLAGS: readonly FlagSpec[] = [
  {
    name: "proxy-server-host",
    type: "string",
    default: "127.0.0.1",
    help: "Host of the proxy server (also the TLS server name when --agent-cert is set). knp: " +
      "a comma list, or a DNS name with several A/AAAA records, makes the agent connect to " +
      "each address directly (TLS still verifies the name).",
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
    help: "ALPN protocols offered to the server before h2 (comma-separated), e.g. for a load " +
      "balancer that routes by ALPN. knp: also offered before http/1.1 on the WebSocket agent " +
      "link; not on gRPC carried by grpc-js (--knp-grpc-transport=grpc-js or proxy variables).",
    implemented: true,
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
      "(keys: ipv4, ipv6, host, cidr, default-route; knp adds zone, e.g. zone=us-east-1a).",
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
    help: "Interval at which each server connection's liveness is checked (see " +
      "--knp-server-ping-interval).",
    implemented: true,
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
    name: "lease-label-selector",
    type: "string",
    default: "k8s-app=konnectivity-server",
    help: "Label selector of the server Leases to count.",
    implemented: true,
    check: checkSelector,
  },
  {
    name: "lease-label",
    type: "string",
    default: "k8s-app=konnectivity-server",
    help: "Old name of --lease-label-selector.",
    implemented: true,
    alias: "lease-label-selector",
    hidden: true,
    deprecated: "use --lease-label-selector instead",
  },
  {
    name: "server-count-source",
    type: "string",
    default: "default",
    help: "How lease and server-reported counts combine: default (leases when counted, else " +
      "the servers' count) or max (the larger of both).",
    implemented: true,
  },
  {
    name: "kubeconfig",
    type: "string",
    default: "",
    help: "Kubeconfig file for listing Leases; empty means in-cluster config.",
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
  KNP_HTTP_TIMEOUT_FLAG,
  {
    name: "knp-websocket-port",
    type: "int",
    default: 0,
    help: "knp only: connect over the WebSocket agent link to this port of a knp server " +
      "(faster than gRPC under Deno); 0 = gRPC on --proxy-server-port.",
    implemented: true,
  },
  {
    name: "knp-fast-link",
    type: "bool",
    default: true,
    help: "knp only: offer the faster WebSocket agent link when connecting over gRPC; a knp " +
      "server that serves it on its agent port switches the connection to it, upstream servers " +
      "ignore the offer and stay on gRPC (unaffected). false = plain gRPC. " +
      "--knp-websocket-port takes precedence.",
    implemented: true,
  },
  {
    name: "knp-grpc-transport",
    type: "string",
    default: "native",
    help: "knp only: what carries the agent's gRPC connections: native (knp's own HTTP/2 " +
      "client: large windows, coalesced writes) or grpc-js (@grpc/grpc-js, the fallback).",
    implemented: true,
  },
  ...AGENT_DESTINATION_FLAGS,
  ...AGENT_SERVER_SET_FLAGS,
  ...AGENT_EGRESS_FLAGS,
  ...AGENT_DRAIN_FLAGS,
  KNP_PRINT_PERMISSIONS_FLAG,
  ...KLOG_FLAGS,
];
