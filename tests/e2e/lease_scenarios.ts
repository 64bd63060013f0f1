/**
 * Server Leases against a real kube-apiserver: a control plane that can stop and restart
 * kube-apiserver on the same port (etcd keeps the data), knp servers with
 * `--enable-lease-controller` and the admin kubeconfig, agents with `--count-server-leases`,
 * each binary under exactly the permissions its flags compute.
 *
 * @module
 */

import { join } from "node:path";
import { createSingleUseTunnel } from "@knp/client";
import { agentPermissionFlags } from "../../agent/permissions.ts";
import { agentArgs, type LogRecord, ManagedProcess, spawnServer, testPki } from "../framework.ts";
import { httpRequest } from "../http_client.ts";
import { type ApiServer, startApiServer, startEtcd } from "./cluster.ts";
import { KubeApi, writeKubeconfig } from "./kube_api.ts";
import type { KubeBinaries } from "./kube_binaries.ts";
import type { E2ePki } from "./pki.ts";
import type { E2eProcess } from "./process.ts";
import { directEgress } from "./auth_scenarios.ts";

/** The namespace of the Leases, and the timing the servers use (short, for the test). */
export const LEASES = {
  namespace: "knp-leases",
  durationSeconds: 10,
  path: "/apis/coordination.k8s.io/v1/namespaces/knp-leases/leases",
} as const;

/** etcd and a kube-apiserver that can be stopped and started again on its port. */
export class LeaseControlPlane implements AsyncDisposable {
  readonly dir: string;
  readonly kubeconfig: string;
  #apiserver: ApiServer;
  readonly #etcd: E2eProcess;
  readonly #start: () => Promise<ApiServer>;

  private constructor(
    dir: string,
    kubeconfig: string,
    apiserver: ApiServer,
    etcd: E2eProcess,
    start: () => Promise<ApiServer>,
  ) {
    this.dir = dir;
    this.kubeconfig = kubeconfig;
    this.#apiserver = apiserver;
    this.#etcd = etcd;
    this.#start = start;
  }

  /** Starts etcd and kube-apiserver; creates the Lease namespace. */
  static async start(bins: KubeBinaries, pki: E2ePki): Promise<LeaseControlPlane> {
    const dir = await Deno.makeTempDir({ prefix: "knp-e2e-leases-" });
    const etcd = await startEtcd(dir);
    const egress = await directEgress(dir);
    const first = await startApiServer(bins, pki, etcd.url, egress);
    const port = Number(new URL(first.url).port);
    const start = () => startApiServer(bins, pki, etcd.url, egress, port);
    const kubeconfig = await writeKubeconfig(dir, first.url, pki);
    const plane = new LeaseControlPlane(dir, kubeconfig, first, etcd.proc, start);
    await plane.api.must("POST", "/api/v1/namespaces", {
      apiVersion: "v1",
      kind: "Namespace",
      metadata: { name: LEASES.namespace },
    });
    return plane;
  }

  /** The admin's API client of the running kube-apiserver. */
  get api(): KubeApi {
    return new KubeApi(this.#apiserver.url, this.#apiserver.client);
  }

  /** Kills kube-apiserver (SIGKILL) and waits for its exit. */
  async stopApiServer(): Promise<void> {
    await this.#apiserver.proc.stop();
    this.#apiserver.client.close();
  }

  /** Starts kube-apiserver again on the same port and waits until it serves. */
  async restartApiServer(): Promise<void> {
    this.#apiserver = await this.#start();
  }

  /** The Leases carrying the servers' label, by name. */
  // deno-lint-ignore no-explicit-any -- API objects are untyped JSON
  async leases(): Promise<Map<string, any>> {
    const r = await this.api.must(
      "GET",
      `${LEASES.path}?labelSelector=${encodeURIComponent("k8s-app=konnectivity-server")}`,
    );
    // deno-lint-ignore no-explicit-any
    return new Map(r.body.items.map((l: any) => [l.metadata.name, l]));
  }

  /** Resolves with the first watch event on Lease `name` that `done` accepts. */
  // deno-lint-ignore no-explicit-any
  watchLease(name: string, done: (type: string, lease: any) => boolean) {
    return this.api.watchUntil(
      `${LEASES.path}?fieldSelector=${encodeURIComponent(`metadata.name=${name}`)}`,
      (e) => done(e.type, e.object),
    );
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.#apiserver.proc.stop();
    this.#apiserver.client.close();
    await this.#etcd.stop();
    await Deno.remove(this.dir, { recursive: true }).catch(() => {});
  }
}

/** A knp server with the lease controller. */
export interface LeaseServer extends AsyncDisposable {
  id: string;
  process: ManagedProcess;
  udsPath: string;
  agentPort: number;
}

/** Starts a server `id` with `--enable-lease-controller`; awaits "proxy server started". */
export async function startLeaseServer(plane: LeaseControlPlane, id: string): Promise<LeaseServer> {
  const { files } = await testPki();
  const udsPath = join(plane.dir, `${id}.socket`);
  const args = [
    `--uds-name=${udsPath}`,
    "--server-port=0",
    "--agent-port=0",
    "--agent-bind-address=127.0.0.1",
    "--health-port=0",
    "--health-bind-address=127.0.0.1",
    "--admin-port=0",
    `--cluster-cert=${files.serverCert}`,
    `--cluster-key=${files.serverKey}`,
    `--cluster-ca-cert=${files.caCert}`,
    `--server-id=${id}`,
    "--server-count=1",
    "--enable-lease-controller",
    `--lease-namespace=${LEASES.namespace}`,
    `--kubeconfig=${plane.kubeconfig}`,
    `--knp-lease-duration=${LEASES.durationSeconds}s`,
    "--knp-lease-renew-interval=1s",
    "--knp-lease-gc-interval=1s",
    "-v=5",
  ];
  const { process, ports } = await spawnServer(`server-${id}`, args);
  return {
    id,
    process,
    udsPath,
    agentPort: ports.agentPort ?? 0,
    [Symbol.asyncDispose]: async () => void await process.stop(),
  };
}

/** An agent of `server` with `--count-server-leases`; awaits its "agent link" record. */
export async function startLeaseAgent(
  plane: LeaseControlPlane,
  server: LeaseServer,
  agentId: string,
): Promise<{ process: ManagedProcess; healthPort: number }> {
  const { files } = await testPki();
  const args = [
    ...agentArgs(server.agentPort, 0, files, agentId),
    "--count-server-leases",
    `--lease-namespace=${LEASES.namespace}`,
    `--kubeconfig=${plane.kubeconfig}`,
    "-v=5",
  ];
  const process = new ManagedProcess(`agent-${agentId}`, [
    "run",
    ...agentPermissionFlags(args),
    "agent/main.ts",
    ...args,
  ]);
  const link = await process.waitForLog("agent link");
  const ports = link["listening"] as Record<string, number>;
  return { process, healthPort: ports.healthPort ?? 0 };
}

/** The agent's next "server count from leases" record with `count` (from `from` on). */
export function leaseCount(agent: ManagedProcess, count: number, from = 0): Promise<LogRecord> {
  return agent.waitForLog(
    (r) => r.msg === "server count from leases" && r["serverCount"] === count,
    { from, timeoutMs: 60_000 },
  );
}

/** The agent's `/readyz?verbose` body. */
export async function readyzVerbose(healthPort: number): Promise<string> {
  const res = await fetch(`http://127.0.0.1:${healthPort}/readyz?verbose`);
  return await res.text();
}

/** One HTTP GET through `server`'s frontend to `address`; resolves with the body. */
export async function getThrough(server: LeaseServer, address: string): Promise<string> {
  const tunnel = createSingleUseTunnel({ udsPath: server.udsPath });
  try {
    const conn = await tunnel.dial("tcp", address, { timeoutMs: 10_000 });
    const res = await httpRequest(conn, "GET", "/success");
    return new TextDecoder().decode(res.body);
  } finally {
    tunnel.close();
  }
}
