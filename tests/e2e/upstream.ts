/**
 * Upstream's Go proxy-server and proxy-agent in the e2e harness's shape, for comparisons. Their
 * paths come from `KNP_UPSTREAM_SERVER` and `KNP_UPSTREAM_AGENT` (built by hand from upstream's
 * source; nothing here builds them). They take fixed ports and log klog lines.
 *
 * @module
 */

import { join } from "node:path";
import type { EgressMode, KnpPair } from "./cluster.ts";
import { E2eProcess, foundFreePort } from "./process.ts";
import type { E2ePki } from "./pki.ts";

/** Paths of upstream's binaries, or undefined when not both are given. */
export function upstreamBinaries(): { server: string; agent: string } | undefined {
  const server = Deno.env.get("KNP_UPSTREAM_SERVER");
  const agent = Deno.env.get("KNP_UPSTREAM_AGENT");
  return server && agent ? { server, agent } : undefined;
}

/** Starts upstream's proxy-server for `mode` and its agent; resolves once the agent registered. */
export async function startUpstreamPair(
  bins: { server: string; agent: string },
  mode: EgressMode,
  pki: E2ePki,
  dir: string,
): Promise<KnpPair> {
  const udsPath = join(dir, "konnectivity-server.socket");
  const ports = {
    serverPort: mode === "http-connect-tcp" ? foundFreePort() : 0,
    agentPort: foundFreePort(),
    healthPort: foundFreePort(),
    adminPort: foundFreePort(),
  };
  const frontend = mode === "http-connect-tcp"
    ? [
      `--server-port=${ports.serverPort}`,
      "--server-bind-address=127.0.0.1",
      `--server-cert=${pki.knpServerCert}`,
      `--server-key=${pki.knpServerKey}`,
      `--server-ca-cert=${pki.caCert}`,
    ]
    : [`--uds-name=${udsPath}`, "--server-port=0"];
  const server = new E2eProcess("upstream proxy-server", bins.server, [
    `--mode=${mode === "grpc-uds" ? "grpc" : "http-connect"}`,
    ...frontend,
    `--agent-port=${ports.agentPort}`,
    "--agent-bind-address=127.0.0.1",
    `--health-port=${ports.healthPort}`,
    "--health-bind-address=127.0.0.1",
    `--admin-port=${ports.adminPort}`,
    `--cluster-cert=${pki.knpServerCert}`,
    `--cluster-key=${pki.knpServerKey}`,
    `--cluster-ca-cert=${pki.caCert}`,
    "--server-id=upstream-server",
  ]);
  await server.waitFor(/Starting health server/);
  const agent = new E2eProcess("upstream proxy-agent", bins.agent, [
    "--proxy-server-host=127.0.0.1",
    `--proxy-server-port=${ports.agentPort}`,
    `--ca-cert=${pki.caCert}`,
    `--agent-cert=${pki.knpAgentCert}`,
    `--agent-key=${pki.knpAgentKey}`,
    `--health-server-port=${foundFreePort()}`,
    `--admin-server-port=${foundFreePort()}`,
  ]);
  await server.waitFor(/"Agent connected"/);
  return { server, agent, udsPath, ports };
}
