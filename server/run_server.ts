/**
 * The running part of `proxy-server`: TLS files, the listeners and the shutdown on signals.
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
import { tlsPolicyFromFlags } from "@knp/transport/tls_policy";
import { parseProxyStrategies } from "./backend_manager.ts";
import type { ServerOptions } from "./options.ts";
import { destinationConfig } from "./destination_flags.ts";
import { type ProxyServerConfig, type ProxyServerHandle, startProxyServer } from "./server.ts";
import { agentGateFromOptions } from "./agent_gate_options.ts";
import { directConfig } from "./direct_flags.ts";
import { routingConfig } from "./routing_flags.ts";
import { explainConfig } from "./explain_flags.ts";
import { grpcTransportConfig } from "./grpc_transport_flags.ts";
import { fastLinkConfig } from "./fast_link.ts";
import { closingLeases, leaseControllerFromOptions } from "./lease_flags.ts";
import { parseLeaseLabels } from "./options.ts";

/** The server's configuration from validated options (opens the TLS files). */
function serverConfig(o: ServerOptions, log: Logger): ProxyServerConfig {
  // Both TLS listeners reload their files while running: new handshakes use the new material,
  // established connections keep theirs; a broken file keeps the previous one (and is logged).
  const serverTls = o.udsName ? undefined : new TlsFiles({
    cert: o.serverCert,
    key: o.serverKey,
    ca: o.serverCaCert,
    logger: childLogger(log, "tls").with({ tls: "server" }),
  });
  const clusterTls = new TlsFiles({
    cert: o.clusterCert,
    key: o.clusterKey,
    ca: o.clusterCaCert,
    logger: childLogger(log, "tls").with({ tls: "cluster" }),
  });
  return {
    mode: o.mode === "http-connect" ? "http-connect" : "grpc",
    serverId: o.serverId,
    serverCount: o.serverCount,
    strategies: parseProxyStrategies(o.proxyStrategies),
    backendDialTimeoutMs: o.backendDialTimeout,
    maxPendingDials: o.knpMaxPendingDials,
    ...destinationConfig(o),
    ...directConfig(o, childLogger(log, "direct")),
    ...routingConfig(o),
    ...explainConfig(o),
    ...grpcTransportConfig(o),
    ...fastLinkConfig(o),
    maxPendingDialsPerFrontend: o.knpMaxPendingDialsPerFrontend,
    maxConnectionsPerAgent: o.knpMaxConnectionsPerAgent,
    maxMessageBytes: o.knpMaxMessageSize,
    tunnelIdleTimeoutMs: o.knpTunnelIdleTimeout,
    pausedTunnelTimeoutMs: o.knpPausedTunnelTimeout,
    httpTimeoutMs: o.knpHttpTimeout,
    frontendIdleTimeoutMs: o.knpFrontendIdleTimeout,
    ...(o.knpWebsocketPort > 0 ? { websocketPort: o.knpWebsocketPort } : {}),
    ...(o.udsName !== "" ? { udsName: o.udsName } : {}),
    deleteExistingUdsFile: o.deleteExistingUdsFile,
    serverBindAddress: o.serverBindAddress,
    serverPort: o.serverPort,
    ...(serverTls !== undefined ? { serverTls } : {}),
    agentBindAddress: o.agentBindAddress,
    agentPort: o.agentPort,
    clusterTls,
    tlsPolicy: tlsPolicyFromFlags(o.tlsMinVersion, o.cipherSuites),
    keepaliveTimeMs: o.keepaliveTime,
    frontendKeepaliveTimeMs: o.frontendKeepaliveTime,
    healthBindAddress: o.healthBindAddress,
    healthPort: o.healthPort,
    adminBindAddress: o.adminBindAddress,
    adminPort: o.adminPort,
    logger: log,
  };
}

/**
 * Starts the server and runs it until signalled: the first signal shuts down (gracefully within
 * `--graceful-shutdown-timeout`), a second one exits at once.
 *
 * @param o Validated options.
 * @param log The binary's logger.
 * @param needs The permissions computed for the command line (to explain a `NotCapable` error).
 */
export async function runServer(
  o: ServerOptions,
  log: Logger,
  needs: readonly PermissionNeed[],
): Promise<void> {
  silenceGrpcLogs();
  let server: ProxyServerHandle;
  try {
    const agentGate = await agentGateFromOptions(o, childLogger(log, "auth"));
    const leases = o.enableLeaseController
      ? await leaseControllerFromOptions(
        o,
        parseLeaseLabels(o.leaseLabel),
        childLogger(log, "lease"),
      )
      : undefined;
    server = closingLeases(await startProxyServer({ ...serverConfig(o, log), agentGate }), leases);
    leases?.start();
  } catch (err) {
    exitOnStartError("proxy-server", err, needs, log, "proxy server failed to start");
  }
  keepRunningOnStrayErrors(log);
  onSignals(() => shutDown(server, o.gracefulShutdownTimeout, log), () => {
    log.warn("second signal: exiting at once");
    Deno.exit(1);
  });
}

/**
 * The first signal: with a timeout, stops accepting frontends (new connections are refused),
 * keeps the agent links and lets open frontend connections finish, then closes the rest and
 * exits 0 — when the last one ends, or at the timeout, whichever is first. Without one, closes
 * everything at once (upstream's behaviour).
 */
async function shutDown(server: ProxyServerHandle, timeoutMs: number, log: Logger): Promise<void> {
  const graceful = timeoutMs > 0;
  // Logged once the frontend listeners are closed (close() does that before its first await).
  const closing = server.close(graceful);
  log.info("shutting down", {
    graceful,
    timeoutMs,
    ...(graceful ? { note: "new frontend connections are refused; open ones may finish" } : {}),
  });
  const timer = graceful
    ? setTimeout(() => {
      log.warn("graceful shutdown timed out: closing the remaining frontend connections", {
        timeoutMs,
      });
      server.close(false).catch(() => {});
      Deno.exit(0);
    }, timeoutMs)
    : undefined;
  await closing;
  clearTimeout(timer);
  log.info(graceful ? "graceful shutdown complete" : "shut down");
  Deno.exit(0);
}
