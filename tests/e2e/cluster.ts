/**
 * An e2e control plane on loopback: etcd, a real kube-apiserver whose `cluster` egress goes
 * through knp (one of three egress modes), and knp's server and agent as real processes.
 *
 * @module
 */

import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { E2eProcess, foundFreePort } from "./process.ts";
import type { E2ePki } from "./pki.ts";
import { serverRunFlags } from "../../server/permissions.ts";
import { agentPermissionFlags } from "../../agent/permissions.ts";
import type { KubeBinaries } from "./kube_binaries.ts";

const ROOT = fileURLToPath(new URL("../..", import.meta.url));

/** How kube-apiserver reaches knp. */
export type EgressMode = "grpc-uds" | "http-connect-uds" | "http-connect-tcp";

/** Every egress mode the suite covers. */
export const EGRESS_MODES: EgressMode[] = ["grpc-uds", "http-connect-uds", "http-connect-tcp"];

/** Starts etcd on loopback and resolves once it serves clients. */
export async function startEtcd(dir: string): Promise<{ proc: E2eProcess; url: string }> {
  const client = foundFreePort();
  const peer = foundFreePort();
  const url = `http://127.0.0.1:${client}`;
  const proc = new E2eProcess("etcd", "etcd", [
    `--data-dir=${join(dir, "etcd")}`,
    `--listen-client-urls=${url}`,
    `--advertise-client-urls=${url}`,
    `--listen-peer-urls=http://127.0.0.1:${peer}`,
    `--initial-advertise-peer-urls=http://127.0.0.1:${peer}`,
    `--initial-cluster=default=http://127.0.0.1:${peer}`,
    "--log-level=info",
    "--logger=zap",
  ], { ETCD_UNSUPPORTED_ARCH: "" });
  await proc.waitFor(/ready to serve client requests|serving client traffic/i);
  return { proc, url };
}

/** knp's server and agent for one egress mode. */
export interface KnpPair {
  server: E2eProcess;
  agent: E2eProcess | undefined;
  /** The frontend's UDS path (UDS modes). */
  udsPath: string;
  /** The ports the server reported. */
  ports: { serverPort: number; agentPort: number; healthPort: number; adminPort: number };
}

/** The server's flags for `mode`. */
function serverArgs(mode: EgressMode, pki: E2ePki, udsPath: string): string[] {
  const common = [
    `--mode=${mode === "grpc-uds" ? "grpc" : "http-connect"}`,
    `--cluster-cert=${pki.knpServerCert}`,
    `--cluster-key=${pki.knpServerKey}`,
    `--cluster-ca-cert=${pki.caCert}`,
    "--agent-port=0",
    "--health-port=0",
    "--admin-port=0",
    "--agent-bind-address=127.0.0.1",
    "--health-bind-address=127.0.0.1",
    "--server-id=e2e-server",
    "-v=5",
  ];
  if (mode === "http-connect-tcp") {
    return [
      ...common,
      "--server-port=0",
      "--server-bind-address=127.0.0.1",
      `--server-cert=${pki.knpServerCert}`,
      `--server-key=${pki.knpServerKey}`,
      `--server-ca-cert=${pki.caCert}`,
    ];
  }
  return [...common, `--uds-name=${udsPath}`, "--server-port=0"];
}

/** `base` with every flag that `extra` sets replaced by `extra`'s value. */
function overridden(base: string[], extra: string[]): string[] {
  const name = (arg: string) => arg.split("=")[0];
  const set = new Set(extra.map(name));
  return [...base.filter((a) => !set.has(name(a))), ...extra];
}

/** Starts knp's proxy-server for `mode` and waits for the ports it reports. */
export async function startKnpServer(
  mode: EgressMode,
  pki: E2ePki,
  dir: string,
  extra: string[] = [],
): Promise<Omit<KnpPair, "agent">> {
  const udsPath = join(dir, "konnectivity-server.socket");
  const args = overridden(serverArgs(mode, pki, udsPath), extra);
  // The binary runs with exactly the permission set its flags need, as in production.
  const server = new E2eProcess("proxy-server", Deno.execPath(), [
    "run",
    ...serverRunFlags(args),
    join(ROOT, "server/main.ts"),
    ...args,
  ]);
  const started = await server.record("proxy server started");
  const ports = started.listening as KnpPair["ports"];
  return { server, udsPath, ports };
}

/**
 * Starts knp's proxy-agent against `agentPort` and waits until the server has registered it;
 * `extra` flags replace the defaults of the same name (as for {@linkcode startKnpServer}).
 */
export async function startKnpAgent(
  pki: E2ePki,
  server: E2eProcess,
  agentPort: number,
  extra: string[] = [],
): Promise<E2eProcess> {
  const before = server.records().filter((r) => r.msg === "agent connected").length;
  const args = overridden([
    "--proxy-server-host=127.0.0.1",
    `--proxy-server-port=${agentPort}`,
    `--ca-cert=${pki.caCert}`,
    `--agent-cert=${pki.knpAgentCert}`,
    `--agent-key=${pki.knpAgentKey}`,
    "--health-server-port=0",
    "--admin-server-port=0",
    "--health-server-host=127.0.0.1",
    "-v=5",
  ], extra);
  const agent = new E2eProcess("proxy-agent", Deno.execPath(), [
    "run",
    ...agentPermissionFlags(args),
    join(ROOT, "agent/main.ts"),
    ...args,
  ]);
  let seen = 0;
  await server.waitFor((l) => l.includes('"msg":"agent connected"') && ++seen > before);
  // Default flags on both sides: the agent negotiated knp's WebSocket link on the agent port.
  const connected = server.records().filter((r) => r.msg === "agent connected").at(-1);
  if (!String(connected?.peer).startsWith("ws:")) {
    throw new Error(`the agent did not move to the WebSocket link: ${JSON.stringify(connected)}`);
  }
  return agent;
}

/** The EgressSelectorConfiguration file from deploy/ for `mode`, with this run's paths. */
export async function egressConfig(
  mode: EgressMode,
  pki: E2ePki,
  knp: Omit<KnpPair, "agent">,
  dir: string,
): Promise<string> {
  const file = mode === "grpc-uds"
    ? "egress-selector-configuration.yaml"
    : mode === "http-connect-uds"
    ? "egress-selector-http-connect.yaml"
    : "egress-selector-http-connect-tcp.yaml";
  let text = await Deno.readTextFile(join(ROOT, "deploy/kubernetes", file));
  text = text.replaceAll(
    "/etc/kubernetes/konnectivity-server/konnectivity-server.socket",
    knp.udsPath,
  );
  text = text.replaceAll("https://127.0.0.1:8090", `https://127.0.0.1:${knp.ports.serverPort}`)
    .replaceAll("/etc/kubernetes/pki/ca.crt", pki.caCert)
    .replaceAll("/etc/kubernetes/pki/konnectivity-client.crt", pki.egressClientCert)
    .replaceAll("/etc/kubernetes/pki/konnectivity-client.key", pki.egressClientKey);
  const path = join(dir, `egress-${mode}.yaml`);
  await Deno.writeTextFile(path, text);
  return path;
}

/** A running kube-apiserver and how to reach it. */
export interface ApiServer {
  proc: E2eProcess;
  url: string;
  /** A fetch client presenting the admin certificate. */
  client: Deno.HttpClient;
}

/** kube-apiserver's flags for the e2e cluster. */
function apiserverArgs(pki: E2ePki, etcdUrl: string, port: number, egress: string): string[] {
  return [
    `--etcd-servers=${etcdUrl}`,
    "--bind-address=127.0.0.1",
    "--advertise-address=127.0.0.1",
    `--secure-port=${port}`,
    `--tls-cert-file=${pki.apiserverCert}`,
    `--tls-private-key-file=${pki.apiserverKey}`,
    `--client-ca-file=${pki.caCert}`,
    `--requestheader-client-ca-file=${pki.caCert}`,
    "--requestheader-allowed-names=front-proxy-client",
    "--requestheader-username-headers=X-Remote-User",
    "--requestheader-group-headers=X-Remote-Group",
    "--requestheader-extra-headers-prefix=X-Remote-Extra-",
    `--proxy-client-cert-file=${pki.frontProxyCert}`,
    `--proxy-client-key-file=${pki.frontProxyKey}`,
    "--service-account-issuer=https://kubernetes.default.svc",
    `--service-account-key-file=${pki.saPub}`,
    `--service-account-signing-key-file=${pki.saKey}`,
    "--service-cluster-ip-range=10.96.0.0/16",
    "--authorization-mode=Node,RBAC",
    "--endpoint-reconciler-type=none",
    `--kubelet-client-certificate=${pki.adminCert}`,
    `--kubelet-client-key=${pki.adminKey}`,
    `--kubelet-certificate-authority=${pki.caCert}`,
    "--kubelet-preferred-address-types=InternalIP",
    `--egress-selector-config-file=${egress}`,
  ];
}

/**
 * Starts kube-apiserver and resolves once it reports itself ready; `port` lets a restart keep
 * the port its clients know.
 */
export async function startApiServer(
  bins: KubeBinaries,
  pki: E2ePki,
  etcdUrl: string,
  egress: string,
  port: number = foundFreePort(),
): Promise<ApiServer> {
  const proc = new E2eProcess(
    "kube-apiserver",
    bins.kubeApiserver,
    apiserverArgs(pki, etcdUrl, port, egress),
  );
  const client = Deno.createHttpClient({
    caCerts: [await Deno.readTextFile(pki.caCert)],
    cert: await Deno.readTextFile(pki.adminCert),
    key: await Deno.readTextFile(pki.adminKey),
  });
  const url = `https://127.0.0.1:${port}`;
  await proc.waitFor(/Serving securely on/);
  return { proc, url, client };
}
