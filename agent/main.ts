/**
 * `proxy-agent`: the knp proxy agent binary. Accepts upstream's flags (see `--help`).
 *
 * @module
 */

import { onSignals, parseOrExit } from "@knp/cli/binary";
import { errorMessage } from "@knp/core/errors";
import { TlsFiles } from "@knp/transport/tls_files";
import { startAgent } from "./agent.ts";
import {
  agentHelp,
  type AgentOptions,
  parseAgentOptions,
  validateAgentOptions,
} from "./options.ts";

/** How long a stopping agent lets open connections finish. */
const SHUTDOWN_GRACE_MS = 10_000;

/** Runs the agent: first signal drains, second stops gracefully, third exits at once. */
export function main(args: string[]): void {
  const { options: o, log } = parseOrExit<AgentOptions>(
    "proxy-agent",
    () => parseAgentOptions(args, Deno.env.toObject()),
    validateAgentOptions,
    agentHelp,
  );
  // Watched, and re-read at every connection attempt: a rotated client certificate or server CA
  // is used by the next connection; established ones keep theirs.
  let tls: TlsFiles;
  try {
    tls = new TlsFiles({
      ca: o.caCert,
      cert: o.agentCert,
      key: o.agentKey,
      logger: log.with({ tls: "agent" }),
    });
  } catch (err) {
    log.error("proxy agent failed to start", { error: errorMessage(err) });
    Deno.exit(1);
  }
  const agent = startAgent({
    proxyServerHost: o.proxyServerHost,
    proxyServerPort: o.proxyServerPort,
    websocketPort: o.knpWebsocketPort || undefined,
    agentId: o.agentId,
    agentIdentifiers: o.agentIdentifiers,
    tls,
    serviceAccountTokenPath: o.serviceAccountTokenPath || undefined,
    keepaliveTimeMs: o.keepaliveTime,
    syncIntervalMs: o.syncInterval,
    syncIntervalCapMs: o.syncIntervalCap,
    syncForever: o.syncForever,
    healthServerHost: o.healthServerHost,
    healthServerPort: o.healthServerPort,
    adminBindAddress: o.adminBindAddress,
    adminServerPort: o.adminServerPort,
    logger: log,
  });
  log.info("agent link", {
    link: o.knpWebsocketPort ? "websocket" : "grpc",
    port: o.knpWebsocketPort || o.proxyServerPort,
    // The bound ports (the contract of `--*-port=0`): tests and tools read them from here.
    listening: { healthPort: agent.healthPort, adminPort: agent.adminPort },
  });
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

if (import.meta.main) main(Deno.args);
