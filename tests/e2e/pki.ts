/**
 * Certificates for the e2e cluster, made with the `openssl` CLI: one CA for the API server, its
 * clients, knp and the test backends (kube-apiserver accepts one CA for client and request-header
 * authentication when `--requestheader-allowed-names` is set), plus the service-account key pair.
 *
 * @module
 */

import { join } from "node:path";

/** File paths of the e2e PKI. */
export interface E2ePki {
  dir: string;
  caCert: string;
  caKey: string;
  /** kube-apiserver serving certificate (127.0.0.1, localhost). */
  apiserverCert: string;
  apiserverKey: string;
  /** A client in `system:masters` (kubectl, the test's API calls). */
  adminCert: string;
  adminKey: string;
  /** kube-apiserver's request-header client to aggregated APIs (`front-proxy-client`). */
  frontProxyCert: string;
  frontProxyKey: string;
  /** kube-apiserver's client certificate toward knp's TCP frontend. */
  egressClientCert: string;
  egressClientKey: string;
  /** knp server certificate (frontend and agent port). */
  knpServerCert: string;
  knpServerKey: string;
  /** knp agent client certificate. */
  knpAgentCert: string;
  knpAgentKey: string;
  /** Serving certificate of the webhook, aggregated API and fake kubelet backends. */
  backendCert: string;
  backendKey: string;
  /** Service-account token signing key pair. */
  saKey: string;
  saPub: string;
}

async function openssl(dir: string, args: string[]): Promise<void> {
  const out = await new Deno.Command("openssl", {
    args,
    cwd: dir,
    stdout: "piped",
    stderr: "piped",
  })
    .output();
  if (!out.success) {
    throw new Error(`openssl ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
}

async function issue(
  dir: string,
  name: string,
  subject: string,
  usage: "serverAuth" | "clientAuth" | "serverAuth,clientAuth",
  sans: string[] = [],
): Promise<void> {
  await openssl(dir, [
    "ecparam",
    "-name",
    "prime256v1",
    "-genkey",
    "-noout",
    "-out",
    `${name}.key`,
  ]);
  await openssl(dir, [
    "req",
    "-new",
    "-key",
    `${name}.key`,
    "-subj",
    subject,
    "-out",
    `${name}.csr`,
  ]);
  const ext = [
    "basicConstraints=critical,CA:FALSE",
    "keyUsage=critical,digitalSignature,keyEncipherment",
    `extendedKeyUsage=${usage}`,
    ...(sans.length ? [`subjectAltName=${sans.join(",")}`] : []),
  ].join("\n");
  await Deno.writeTextFile(join(dir, `${name}.ext`), ext + "\n");
  await openssl(dir, [
    "x509",
    "-req",
    "-in",
    `${name}.csr`,
    "-CA",
    "ca.crt",
    "-CAkey",
    "ca.key",
    "-CAcreateserial",
    "-days",
    "30",
    "-sha256",
    "-extfile",
    `${name}.ext`,
    "-out",
    `${name}.crt`,
  ]);
}

/** Service names the backends answer for (kube-apiserver checks `<svc>.<ns>.svc`). */
export const BACKEND_NAMES = ["e2e-webhook.default.svc", "e2e-api.default.svc"];

/** Generates the whole PKI into a new temp directory. */
export async function generateE2ePki(): Promise<E2ePki> {
  const dir = await Deno.makeTempDir({ prefix: "knp-e2e-pki-" });
  await openssl(dir, ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "ca.key"]);
  await openssl(dir, [
    "req",
    "-x509",
    "-new",
    "-key",
    "ca.key",
    "-subj",
    "/CN=knp-e2e-ca",
    "-days",
    "30",
    "-addext",
    "basicConstraints=critical,CA:TRUE",
    "-addext",
    "keyUsage=critical,keyCertSign,cRLSign",
    "-out",
    "ca.crt",
  ]);
  const local = ["IP:127.0.0.1", "DNS:localhost"];
  await issue(dir, "apiserver", "/CN=kube-apiserver", "serverAuth", local);
  await issue(dir, "admin", "/O=system:masters/CN=knp-e2e-admin", "clientAuth");
  await issue(dir, "front-proxy", "/CN=front-proxy-client", "clientAuth");
  await issue(dir, "egress-client", "/CN=kube-apiserver-egress", "clientAuth");
  await issue(dir, "knp-server", "/CN=konnectivity-server", "serverAuth", local);
  await issue(dir, "knp-agent", "/CN=system:konnectivity-agent", "clientAuth");
  const backendSans = [
    ...BACKEND_NAMES.map((n) => `DNS:${n}`),
    "IP:127.0.0.2",
    "IP:127.0.0.3",
    "IP:127.0.0.1",
  ];
  await issue(dir, "backend", "/CN=knp-e2e-backend", "serverAuth", backendSans);
  await openssl(dir, ["ecparam", "-name", "prime256v1", "-genkey", "-noout", "-out", "sa.key"]);
  await openssl(dir, ["ec", "-in", "sa.key", "-pubout", "-out", "sa.pub"]);
  const p = (f: string) => join(dir, f);
  return {
    dir,
    caCert: p("ca.crt"),
    caKey: p("ca.key"),
    apiserverCert: p("apiserver.crt"),
    apiserverKey: p("apiserver.key"),
    adminCert: p("admin.crt"),
    adminKey: p("admin.key"),
    frontProxyCert: p("front-proxy.crt"),
    frontProxyKey: p("front-proxy.key"),
    egressClientCert: p("egress-client.crt"),
    egressClientKey: p("egress-client.key"),
    knpServerCert: p("knp-server.crt"),
    knpServerKey: p("knp-server.key"),
    knpAgentCert: p("knp-agent.crt"),
    knpAgentKey: p("knp-agent.key"),
    backendCert: p("backend.crt"),
    backendKey: p("backend.key"),
    saKey: p("sa.key"),
    saPub: p("sa.pub"),
  };
}
