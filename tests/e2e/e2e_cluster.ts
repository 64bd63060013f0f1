/**
 * One e2e control plane for one egress mode, owned as a unit: etcd, knp's server and agent,
 * kube-apiserver; restarts of knp's parts keep the ports kube-apiserver and the agent know.
 *
 * @module
 */

import {
  egressConfig,
  type EgressMode,
  type KnpPair,
  startApiServer,
  startEtcd,
  startKnpAgent,
  startKnpServer,
} from "./cluster.ts";
import { KubeApi, writeKubeconfig } from "./kube_api.ts";
import type { KubeBinaries } from "./kube_binaries.ts";
import type { E2ePki } from "./pki.ts";
import type { E2eProcess } from "./process.ts";

/** A running e2e cluster. */
export class E2eCluster implements AsyncDisposable {
  readonly mode: EgressMode;
  readonly pki: E2ePki;
  readonly dir: string;
  readonly bins: KubeBinaries;
  readonly api: KubeApi;
  readonly kubeconfig: string;
  server: E2eProcess;
  agent: E2eProcess | undefined;
  ports: KnpPair["ports"];
  readonly #etcd: E2eProcess;
  readonly #apiserver: E2eProcess;
  readonly #client: Deno.HttpClient;

  private constructor(parts: {
    mode: EgressMode;
    pki: E2ePki;
    dir: string;
    bins: KubeBinaries;
    api: KubeApi;
    kubeconfig: string;
    server: E2eProcess;
    agent: E2eProcess;
    ports: KnpPair["ports"];
    etcd: E2eProcess;
    apiserver: E2eProcess;
    client: Deno.HttpClient;
  }) {
    this.mode = parts.mode;
    this.pki = parts.pki;
    this.dir = parts.dir;
    this.bins = parts.bins;
    this.api = parts.api;
    this.kubeconfig = parts.kubeconfig;
    this.server = parts.server;
    this.agent = parts.agent;
    this.ports = parts.ports;
    this.#etcd = parts.etcd;
    this.#apiserver = parts.apiserver;
    this.#client = parts.client;
  }

  /** Starts everything for `mode` and waits until the API server has its default namespace. */
  static async start(mode: EgressMode, bins: KubeBinaries, pki: E2ePki): Promise<E2eCluster> {
    const dir = await Deno.makeTempDir({ prefix: `knp-e2e-${mode}-` });
    const etcd = await startEtcd(dir);
    const knp = await startKnpServer(mode, pki, dir);
    const agent = await startKnpAgent(pki, knp.server, knp.ports.agentPort);
    const egress = await egressConfig(mode, pki, knp, dir);
    const apiserver = await startApiServer(bins, pki, etcd.url, egress);
    const api = new KubeApi(apiserver.url, apiserver.client);
    await api.watchUntil(
      "/api/v1/namespaces?fieldSelector=metadata.name%3Ddefault",
      (e) => e.type === "ADDED",
    );
    const kubeconfig = await writeKubeconfig(dir, apiserver.url, pki);
    return new E2eCluster({
      mode,
      pki,
      dir,
      bins,
      api,
      kubeconfig,
      server: knp.server,
      agent,
      ports: knp.ports,
      etcd: etcd.proc,
      apiserver: apiserver.proc,
      client: apiserver.client,
    });
  }

  /** The flags that keep a restarted server on the ports the agent and kube-apiserver know. */
  #fixedPorts(): string[] {
    const args = [`--agent-port=${this.ports.agentPort}`];
    if (this.mode === "http-connect-tcp") args.push(`--server-port=${this.ports.serverPort}`);
    return args;
  }

  /** Kills the agent (SIGKILL) and waits for the server to notice. */
  async killAgent(): Promise<void> {
    const gone = this.server.waitFor((l) => l.includes('"msg":"agent disconnected"'), false);
    await this.agent?.stop();
    this.agent = undefined;
    await gone;
  }

  /** Starts a new agent and waits until the server has registered it. */
  async startAgent(): Promise<void> {
    this.agent = await startKnpAgent(this.pki, this.server, this.ports.agentPort);
  }

  /**
   * Kills the server (SIGKILL) and starts a new one on the same ports and socket, with `extra`
   * flags (e.g. `--graceful-shutdown-timeout=20s`).
   */
  async restartServer(extra: string[] = []): Promise<void> {
    await this.server.stop();
    const knp = await startKnpServer(this.mode, this.pki, this.dir, [
      ...this.#fixedPorts(),
      ...extra,
    ]);
    this.server = knp.server;
    this.ports = knp.ports;
    if (this.agent) {
      await this.server.waitFor((l) => l.includes('"msg":"agent connected"'));
    }
  }

  /**
   * Sends the server SIGTERM and resolves once it logged "shutting down" (its frontend listener
   * is closed by then); `exited` resolves with its exit code.
   */
  async terminateServer(): Promise<{ exited: Promise<number> }> {
    const stopping = this.server.record("shutting down", false);
    this.server.kill("SIGTERM");
    await stopping;
    return { exited: this.server.status.then((s) => s.code) };
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.agent?.stop();
    await this.server.stop();
    await this.#apiserver.stop();
    await this.#etcd.stop();
    this.#client.close();
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
    await Deno.remove(this.pki.dir, { recursive: true }).catch(() => {});
  }
}
