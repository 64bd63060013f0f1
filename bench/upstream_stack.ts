/**
 * Upstream's Go proxy-server and proxy-agent (v0.36.0, built outside the repo) as one stack of the
 * bench: the server's frontend on a UDS (`--mode=grpc` or `--mode=http-connect`), the agent on the
 * server's agent port (gRPC over mTLS, the same test PKI as knp's stacks), both health ports on
 * loopback so their `/readyz` can be probed. Upstream binds fixed ports: they are found free first.
 *
 * @module
 */

import { E2eProcess } from "../tests/e2e/process.ts";
import { foundFreePort, testPki } from "../tests/framework.ts";
import type { UpstreamBinaries } from "./links.ts";

/** A running server + agent pair, as the cases see it. */
export interface Stack extends AsyncDisposable {
  /** The server's frontend socket. */
  udsPath: string;
  /** Pids of the server and the agent (CPU and RSS are read from /proc). */
  pids: { server: number; agent: number };
  /** Health ports of the server and the agent (both answer `/readyz`). */
  health: { server: number; agent: number };
}

/** Stops what was started, last first (best effort). */
async function disposeAll(parts: AsyncDisposable[]): Promise<void> {
  for (const p of parts.reverse()) {
    try {
      await p[Symbol.asyncDispose]();
    } catch { /* best effort */ }
  }
}

/** Upstream's server flags: frontend on `udsPath`, everything else on loopback. */
function serverFlags(
  mode: "grpc" | "http-connect",
  udsPath: string,
  ports: { agent: number; health: number; admin: number },
  files: { serverCert: string; serverKey: string; caCert: string },
): string[] {
  return [
    `--mode=${mode}`,
    `--uds-name=${udsPath}`,
    "--server-port=0",
    `--agent-port=${ports.agent}`,
    "--agent-bind-address=127.0.0.1",
    `--health-port=${ports.health}`,
    "--health-bind-address=127.0.0.1",
    `--admin-port=${ports.admin}`,
    "--admin-bind-address=127.0.0.1",
    `--cluster-cert=${files.serverCert}`,
    `--cluster-key=${files.serverKey}`,
    `--cluster-ca-cert=${files.caCert}`,
    "--server-id=bench-upstream-server",
  ];
}

/**
 * Starts upstream's server (frontend `mode` on a UDS) and agent; resolves once the server logged
 * the agent's connection and the agent's `/readyz` answers 200.
 */
export async function startUpstreamStack(
  bins: UpstreamBinaries,
  mode: "grpc" | "http-connect",
): Promise<Stack> {
  const { files } = await testPki();
  const dir = await Deno.makeTempDir({ prefix: "knp-bench-upstream-" });
  const parts: AsyncDisposable[] = [{
    [Symbol.asyncDispose]: () => Deno.remove(dir, { recursive: true }).catch(() => {}),
  }];
  try {
    const udsPath = `${dir}/konnectivity-server.socket`;
    const ports = { agent: foundFreePort(), health: foundFreePort(), admin: foundFreePort() };
    const server = new E2eProcess(
      `upstream proxy-server (${mode})`,
      bins.server,
      serverFlags(mode, udsPath, ports, files),
    );
    parts.push(server);
    await server.waitFor(/Starting health server/);
    const agentHealth = foundFreePort();
    const agent = new E2eProcess("upstream proxy-agent", bins.agent, [
      "--proxy-server-host=127.0.0.1",
      `--proxy-server-port=${ports.agent}`,
      `--ca-cert=${files.caCert}`,
      `--agent-cert=${files.clientCert}`,
      `--agent-key=${files.clientKey}`,
      "--health-server-host=127.0.0.1",
      `--health-server-port=${agentHealth}`,
      `--admin-server-port=${foundFreePort()}`,
      "--agent-id=bench-upstream-agent",
    ]);
    parts.push(agent);
    await server.waitFor(/"Agent connected"/);
    await agentReady(agentHealth, agent);
    return {
      udsPath,
      pids: { server: server.child.pid, agent: agent.child.pid },
      health: { server: ports.health, agent: agentHealth },
      [Symbol.asyncDispose]: () => disposeAll(parts),
    };
  } catch (err) {
    await disposeAll(parts);
    throw err;
  }
}

/**
 * Asks the agent's `/readyz` until it answers 200: upstream's agent logs nothing when it holds
 * its server in a form this process can wait for, so its health endpoint is the signal.
 */
async function agentReady(port: number, agent: E2eProcess): Promise<void> {
  for (let i = 0; i < 200; i++) {
    const status = await fetch(`http://127.0.0.1:${port}/readyz`)
      .then(async (r) => (await r.body?.cancel(), r.status), () => 0);
    if (status === 200) return;
    await new Promise((r) => setTimeout(r, 50));
  }
  throw new Error(`upstream proxy-agent never became ready: ${agent.tail()}`);
}
