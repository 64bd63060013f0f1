/**
 * `proxy-agent`: the knp proxy agent binary. Accepts upstream's flags (see `--help`).
 *
 * @module
 */

import { onSignals, parseOrExit, readPem } from "../internal/cli.ts";
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
  const agent = startAgent({
    proxyServerHost: o.proxyServerHost,
    proxyServerPort: o.proxyServerPort,
    agentId: o.agentId,
    agentIdentifiers: o.agentIdentifiers,
    tls: { ca: readPem(o.caCert), cert: readPem(o.agentCert), key: readPem(o.agentKey) },
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
