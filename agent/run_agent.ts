/**
 * The running part of `proxy-agent`: TLS files, the connect loop and the shutdown on signals.
 * `main.ts` imports it only after the permission check, because grpc-js (imported from here)
 * reads environment variables when it loads.
 *
 * @module
 */

import { exitOnStartError, keepRunningOnStrayErrors, onSignals } from "@knp/cli/binary";
import type { PermissionNeed } from "@knp/cli/permissions";
import type { Logger } from "@knp/core/log";
import { silenceGrpcLogs } from "@knp/transport/grpc_channel";
import { TlsFiles } from "@knp/transport/tls_files";
import { type AgentHandle, startAgent } from "./agent.ts";
import type { AgentOptions } from "./options.ts";
import { agentDialer } from "./destination_flags.ts";

/** How long a stopping agent lets open connections finish. */
const SHUTDOWN_GRACE_MS = 10_000;

function start(o: AgentOptions, log: Logger): AgentHandle {
  // Watched, and re-read at every connection attempt: a rotated client certificate or server CA
  // is used by the next connection; established ones keep theirs.
  const tls = new TlsFiles({
    ca: o.caCert,
    cert: o.agentCert,
    key: o.agentKey,
    logger: log.with({ tls: "agent" }),
  });
  return startAgent({
    proxyServerHost: o.proxyServerHost,
    proxyServerPort: o.proxyServerPort,
    ...(o.knpWebsocketPort ? { websocketPort: o.knpWebsocketPort } : {}),
    agentId: o.agentId,
    agentIdentifiers: o.agentIdentifiers,
    dialer: agentDialer(o, log),
    tls,
    ...(o.serviceAccountTokenPath ? { serviceAccountTokenPath: o.serviceAccountTokenPath } : {}),
    keepaliveTimeMs: o.keepaliveTime,
    syncIntervalMs: o.syncInterval,
    syncIntervalCapMs: o.syncIntervalCap,
    syncForever: o.syncForever,
    healthServerHost: o.healthServerHost,
    healthServerPort: o.healthServerPort,
    adminBindAddress: o.adminBindAddress,
    adminServerPort: o.adminServerPort,
    httpTimeoutMs: o.knpHttpTimeout,
    logger: log,
  });
}

/**
 * Runs the agent: the first signal drains, the second stops gracefully, the third exits at once.
 *
 * @param o Validated options.
 * @param log The binary's logger.
 * @param needs The permissions computed for the command line (to explain a `NotCapable` error).
 */
export function runAgent(o: AgentOptions, log: Logger, needs: readonly PermissionNeed[]): void {
  silenceGrpcLogs();
  let agent: AgentHandle;
  try {
    agent = start(o, log);
  } catch (err) {
    exitOnStartError("proxy-agent", err, needs, log, "proxy agent failed to start");
  }
  log.info("agent link", {
    link: o.knpWebsocketPort ? "websocket" : "grpc",
    port: o.knpWebsocketPort || o.proxyServerPort,
    // The bound ports (the contract of `--*-port=0`): tests and tools read them from here.
    listening: { healthPort: agent.healthPort, adminPort: agent.adminPort },
  });
  keepRunningOnStrayErrors(log);
  let stopping = false;
  onSignals(() => {
    log.info("draining: no new server connections; existing tunnels keep working");
    agent.drain();
  }, async () => {
    if (stopping) Deno.exit(1); // third signal: at once
    stopping = true;
    log.info("stopping: refusing new dials; open connections get up to 10s to finish", {
      connections: agent.clients.connections,
    });
    await agent.shutdown(SHUTDOWN_GRACE_MS);
    Deno.exit(0);
  });
}
