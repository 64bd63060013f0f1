/**
 * The running part of `proxy-agent`: TLS files, the connect loop and the shutdown on signals.
 * `main.ts` imports it only after the permission check, because grpc-js (imported from here)
 * reads environment variables when it loads.
 *
 * @module
 */

import { exitOnStartError, keepRunningOnStrayErrors, onSignals } from "@knp/cli/binary";
import type { PermissionNeed } from "@knp/cli/permissions";
import { childLogger, type Logger } from "@knp/core/log";
import { silenceGrpcLogs } from "@knp/transport/grpc_channel";
import { TlsFiles } from "@knp/transport/tls_files";
import { grpcProxyConfigured } from "@knp/transport/h2/client";
import { type AgentHandle, startAgent } from "./agent.ts";
import type { AgentOptions } from "./options.ts";
import { egressDialer, egressProxyOf } from "./egress_proxy.ts";
import { livenessOf } from "./server_set_flags.ts";
import { leaseCounterFromOptions, leaseServerCounter } from "./lease_count_flags.ts";
import type { LeaseCounter } from "./lease_counter.ts";
import { drainAgent } from "./drain.ts";

function start(o: AgentOptions, log: Logger, leases: LeaseCounter | undefined): AgentHandle {
  // Watched, and re-read at every connection attempt: a rotated client certificate or server CA
  // is used by the next connection; established ones keep theirs.
  const tls = new TlsFiles({
    ca: o.caCert,
    cert: o.agentCert,
    key: o.agentKey,
    logger: childLogger(log, "tls").with({ tls: "agent" }),
  });
  const egress = egressProxyOf(o, childLogger(log, "egress"));
  return startAgent({
    proxyServerHost: o.proxyServerHost,
    proxyServerPort: o.proxyServerPort,
    ...(o.knpWebsocketPort ? { websocketPort: o.knpWebsocketPort } : {}),
    fastLink: o.knpFastLink,
    grpcTransport: o.knpGrpcTransport === "grpc-js" ? "grpc-js" : "native",
    alpnProto: o.alpnProto,
    agentId: o.agentId,
    agentIdentifiers: o.agentIdentifiers,
    dialer: egressDialer(o, egress, childLogger(log, "egress")),
    egressProxy: egress,
    tls,
    ...(o.serviceAccountTokenPath ? { serviceAccountTokenPath: o.serviceAccountTokenPath } : {}),
    keepaliveTimeMs: o.keepaliveTime,
    syncIntervalMs: o.syncInterval,
    syncIntervalCapMs: o.syncIntervalCap,
    syncForever: o.syncForever,
    liveness: livenessOf(o),
    healthServerHost: o.healthServerHost,
    healthServerPort: o.healthServerPort,
    adminBindAddress: o.adminBindAddress,
    adminServerPort: o.adminServerPort,
    httpTimeoutMs: o.knpHttpTimeout,
    logger: log,
    ...(leases === undefined ? {} : {
      serverCounter: leaseServerCounter(leases, o),
      healthDetails: () => [leases.healthLine()],
    }),
  });
}

/**
 * Runs the agent: the first signal drains (DRAIN, keep serving, exit once the connections have
 * finished or at `--knp-drain-timeout`), the second exits at once.
 *
 * @param o Validated options.
 * @param log The binary's logger.
 * @param needs The permissions computed for the command line (to explain a `NotCapable` error).
 */
export function runAgent(o: AgentOptions, log: Logger, needs: readonly PermissionNeed[]): void {
  silenceGrpcLogs();
  let agent: AgentHandle;
  const leases = leaseCounterFromOptions(o, childLogger(log, "lease"));
  try {
    agent = start(o, log, leases);
  } catch (err) {
    exitOnStartError("proxy-agent", err, needs, log, "proxy agent failed to start");
  }
  leases?.start().catch((err) =>
    exitOnStartError("proxy-agent", err, needs, log, "proxy agent failed to start")
  );
  log.info("agent link", {
    // Under the fast link each connection's link is negotiated ("connected to proxy server"
    // says which it got).
    link: o.knpWebsocketPort ? "websocket" : o.knpFastLink ? "negotiated" : "grpc",
    port: o.knpWebsocketPort || o.proxyServerPort,
    // The bound ports (the contract of `--*-port=0`): tests and tools read them from here.
    listening: { healthPort: agent.healthPort, adminPort: agent.adminPort },
  });
  if (o.alpnProto.length > 0 && (o.knpGrpcTransport === "grpc-js" || grpcProxyConfigured())) {
    // grpc-js cannot add ALPN protocols; the WebSocket link still offers them.
    log.warn("--alpn-proto is not offered on gRPC connections carried by grpc-js (h2 only)", {
      alpnProto: o.alpnProto,
    });
  }
  keepRunningOnStrayErrors(log);
  onSignals(() => void drainThenExit(agent, o, log), () => {
    // Exit 1, as the server's second signal: open connections are cut.
    log.warn("second signal: exiting at once", { connections: agent.clients.connections });
    Deno.exit(1);
  });
}

/** The first signal: drain (see `drain.ts`), then end the server streams and exit 0. */
async function drainThenExit(agent: AgentHandle, o: AgentOptions, log: Logger): Promise<void> {
  await drainAgent(agent.clients, {
    timeoutMs: o.knpDrainTimeout,
    logger: childLogger(log, "drain"),
  });
  // Any dial that still arrives is refused with the draining error rather than cut.
  await agent.shutdown(0);
  Deno.exit(0);
}
