/**
 * The processes under test: one proxy-server (frontend on a UDS; agent links gRPC and WebSocket)
 * and two proxy-agents, agent 0 on the gRPC link and agent 1 on the WebSocket link, each through
 * its own {@linkcode Relay}. The server restarts on the same ports and UDS path, switching its
 * frontend between gRPC and HTTP-CONNECT, so both frontends carry load in one run.
 *
 * @module
 */

import { agentArgs, ManagedProcess, testPki } from "../tests/framework.ts";
import { readProcFile } from "../testing/proc_files.ts";
import { serverRunFlags } from "../server/permissions.ts";
import { agentPermissionFlags } from "../agent/permissions.ts";
import { readSample } from "../server/metrics.ts";
import type { Frontend } from "./duplex.ts";
import { type Relay, startRelay } from "./relay.ts";

const NS = "konnectivity_network_proxy_server";
/** The server gauges that must return to 0 once load stops. */
export const GAUGES: readonly string[] = [
  `${NS}_pending_backend_dials`,
  `${NS}_established_connections`,
  `${NS}_http_connections`,
  `${NS}_grpc_connections{service_method="Proxy"}`,
];

interface Ports {
  agentPort: number;
  websocketPort: number;
  healthPort: number;
  adminPort: number;
}

function freePort(): number {
  const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (l.addr as Deno.NetAddr).port;
  l.close();
  return port;
}

/** VmRSS of a process in MiB (0 when it is gone). */
export function rssMiB(pid: number): number {
  try {
    const status = readProcFile(`/proc/${pid}/status`);
    const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
    return Math.round(kb / 102.4) / 10;
  } catch {
    return 0;
  }
}

/** The running cluster. */
export class Cluster implements AsyncDisposable {
  readonly udsPath: string;
  readonly relays: Relay[];
  server!: ManagedProcess;
  agents: ManagedProcess[] = [];
  frontend: Frontend = "grpc";
  #dir: string;
  #ports: Ports = { agentPort: 0, websocketPort: 0, healthPort: 0, adminPort: 0 };
  #agentIds = ["chaos-agent-grpc", "chaos-agent-ws"];

  private constructor(dir: string) {
    this.#dir = dir;
    this.udsPath = `${dir}/konnectivity-server.socket`;
    this.relays = [];
  }

  /**
   * Starts the server (with `frontend`), the relays and both agents; resolves once both agents
   * are connected.
   */
  static async start(frontend: Frontend = "grpc"): Promise<Cluster> {
    const cluster = new Cluster(await Deno.makeTempDir({ prefix: "knp-chaos-" }));
    cluster.frontend = frontend;
    try {
      // The WebSocket port must be given (0 turns the link off); the others are reported.
      cluster.#ports.websocketPort = freePort();
      await cluster.#startServer();
      cluster.relays.push(startRelay(cluster.#ports.agentPort));
      cluster.relays.push(startRelay(cluster.#ports.websocketPort));
      for (let i = 0; i < 2; i++) cluster.agents.push(await cluster.#startAgent(i));
      await cluster.awaitAgents();
      return cluster;
    } catch (err) {
      await cluster[Symbol.asyncDispose]();
      throw err;
    }
  }

  async #startServer(): Promise<void> {
    const { files } = await testPki();
    const p = this.#ports;
    const flags = [
      `--mode=${this.frontend}`,
      `--uds-name=${this.udsPath}`,
      "--server-port=0",
      `--agent-port=${p.agentPort}`,
      `--knp-websocket-port=${p.websocketPort}`,
      `--health-port=${p.healthPort}`,
      `--admin-port=${p.adminPort}`,
      "--agent-bind-address=127.0.0.1",
      "--health-bind-address=127.0.0.1",
      "--admin-bind-address=127.0.0.1",
      `--cluster-cert=${files.serverCert}`,
      `--cluster-key=${files.serverKey}`,
      `--cluster-ca-cert=${files.caCert}`,
      "--server-id=chaos-server",
    ];
    const args = ["run", ...serverRunFlags(flags), "server/main.ts", ...flags];
    const server = new ManagedProcess("server", args);
    this.server = server;
    const started = await server.waitForLog("proxy server started").catch((err) => {
      throw new Error(`${err}\n--- server log ---\n${server.log}`);
    });
    const ports = (started["listening"] ?? {}) as Partial<Ports>;
    this.#ports = {
      agentPort: ports.agentPort ?? 0,
      websocketPort: ports.websocketPort ?? p.websocketPort,
      healthPort: ports.healthPort ?? 0,
      adminPort: ports.adminPort ?? 0,
    };
  }

  async #startAgent(i: number): Promise<ManagedProcess> {
    const { files } = await testPki();
    const relay = this.relays[i];
    if (relay === undefined) throw new Error(`no relay ${i}`);
    const agentId = this.#agentIds[i];
    if (agentId === undefined) throw new Error(`no agent ID ${i}`);
    // agent1 takes the WebSocket link; both reach the server through their relay.
    const flags = agentArgs(relay.port, i === 1 ? relay.port : 0, files, agentId);
    const args = ["run", ...agentPermissionFlags(flags), "agent/main.ts", ...flags];
    const agent = new ManagedProcess(`agent${i}`, args);
    await agent.waitForLog("agent link").catch((err) => {
      throw new Error(`${err}\n--- agent log ---\n${agent.log}`);
    });
    return agent;
  }

  /** Resolves once the current server process holds both agents (from its log). */
  async awaitAgents(timeoutMs = 30_000): Promise<void> {
    const connected = new Set<unknown>();
    await this.server.waitForState(
      (records) => {
        connected.clear();
        for (const r of records) {
          if (r.msg === "agent connected") connected.add(r["backend"]);
          if (r.msg === "agent disconnected") connected.delete(r["backend"]);
        }
        return connected.size >= 2 ? (records.at(-1) ?? {}) : undefined;
      },
      "both agents connected",
      { timeoutMs },
    );
  }

  /** SIGKILLs agent `i`, waits for its exit and starts it again with the same flags. */
  async killAgent(i: number): Promise<void> {
    const agent = this.agents[i];
    if (agent === undefined) return;
    await agent.stop();
    this.agents[i] = await this.#startAgent(i);
  }

  /** Kills the server and starts it on the same ports with the other frontend. */
  async restartServer(): Promise<void> {
    await this.server.stop();
    this.frontend = this.frontend === "grpc" ? "http-connect" : "grpc";
    await this.#startServer();
  }

  /** The server's /metrics (admin port, else the health port). */
  async metrics(): Promise<string> {
    for (const port of [this.#ports.adminPort, this.#ports.healthPort]) {
      const res = await fetch(`http://127.0.0.1:${port}/metrics`);
      const text = res.ok ? await res.text() : (await res.body?.cancel(), "");
      if (text.includes(NS)) return text;
    }
    return "";
  }

  /** The gauges of {@linkcode GAUGES} now. */
  async gauges(): Promise<Record<string, number>> {
    const text = await this.metrics();
    return Object.fromEntries(GAUGES.map((g) => [g, readSample(text, g) ?? Number.NaN]));
  }

  /** RSS (MiB) of the server and each agent. */
  rss(): Record<string, number> {
    const out: Record<string, number> = { server: rssMiB(this.server.child.pid) };
    this.agents.forEach((a, i) => (out[`agent${i}`] = rssMiB(a.child.pid)));
    return out;
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await Promise.all([this.server?.stop(), ...this.agents.map((a) => a.stop())]);
    for (const r of this.relays) await r[Symbol.asyncDispose]();
    await Deno.remove(this.#dir, { recursive: true }).catch(() => {});
  }
}
