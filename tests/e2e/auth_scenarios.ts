/**
 * Service-account token authentication of agents against a real kube-apiserver: service accounts
 * and tokens from the TokenRequest API, a stand-in for an expired token (signed with the
 * cluster's own service-account key, since TokenRequest will not issue one), knp's server with
 * the token flags and agents with `--service-account-token-path`, over either agent link.
 *
 * @module
 */

import { sign } from "node:crypto";
import { join } from "node:path";
import { createSingleUseTunnel } from "@knp/client";
import { agentPermissionFlags } from "../../agent/permissions.ts";
import {
  agentArgs,
  type AgentLink,
  foundFreePort,
  type LogRecord,
  ManagedProcess,
  spawnServer,
  testPki,
} from "../framework.ts";
import { httpRequest } from "../http_client.ts";
import type { KubeApi } from "./kube_api.ts";

/** The namespace, service account and audience the server expects. */
export const AUTH = {
  namespace: "knp-auth",
  serviceAccount: "konnectivity-agent",
  audience: "knp-e2e-konnectivity",
  issuer: "https://kubernetes.default.svc",
} as const;

/** An EgressSelectorConfiguration that dials directly (kube-apiserver is only the TokenReview authority here). */
export async function directEgress(dir: string): Promise<string> {
  const path = join(dir, "egress-direct.yaml");
  await Deno.writeTextFile(
    path,
    "apiVersion: apiserver.k8s.io/v1beta1\nkind: EgressSelectorConfiguration\negressSelections:\n" +
      "- name: cluster\n  connection:\n    proxyProtocol: Direct\n",
  );
  return path;
}

/** Creates the namespace (if absent) and the service account; resolves with the account's UID. */
export async function createServiceAccount(
  api: KubeApi,
  ns: string,
  name: string,
): Promise<string> {
  const created = await api.call("POST", "/api/v1/namespaces", {
    apiVersion: "v1",
    kind: "Namespace",
    metadata: { name: ns },
  });
  if (created.status !== 201 && created.status !== 409) {
    throw new Error(`namespace ${ns}: ${created.status} ${created.text}`);
  }
  const sa = await api.must("POST", `/api/v1/namespaces/${ns}/serviceaccounts`, {
    apiVersion: "v1",
    kind: "ServiceAccount",
    metadata: { name },
  });
  return sa.body.metadata.uid;
}

/** A token for `ns/sa` from the TokenRequest API. */
export async function requestToken(
  api: KubeApi,
  ns: string,
  sa: string,
  audience: string,
): Promise<string> {
  const r = await api.must("POST", `/api/v1/namespaces/${ns}/serviceaccounts/${sa}/token`, {
    apiVersion: "authentication.k8s.io/v1",
    kind: "TokenRequest",
    spec: { audiences: [audience], expirationSeconds: 3600 },
  });
  return r.body.status.token;
}

/**
 * A stand-in for a service-account token the cluster issued: signed (ES256) with the cluster's own
 * service-account signing key, with the claims TokenRequest puts in, and the `exp` given.
 */
export async function mintServiceAccountToken(
  saKeyFile: string,
  claims: { ns: string; sa: string; uid: string; audience: string; exp: number },
): Promise<string> {
  const b64 = (obj: unknown) =>
    new TextEncoder().encode(JSON.stringify(obj)).toBase64({
      alphabet: "base64url",
      omitPadding: true,
    });
  const iat = claims.exp - 3600;
  const body = `${b64({ alg: "ES256", typ: "JWT" })}.${
    b64({
      aud: [claims.audience],
      exp: claims.exp,
      iat,
      nbf: iat,
      iss: AUTH.issuer,
      sub: `system:serviceaccount:${claims.ns}:${claims.sa}`,
      "kubernetes.io": {
        namespace: claims.ns,
        serviceaccount: { name: claims.sa, uid: claims.uid },
      },
    })
  }`;
  const key = await Deno.readTextFile(saKeyFile);
  const signature = sign("sha256", new TextEncoder().encode(body), {
    key,
    dsaEncoding: "ieee-p1363",
  });
  return `${body}.${
    new Uint8Array(signature).toBase64({ alphabet: "base64url", omitPadding: true })
  }`;
}

/** What kube-apiserver itself says of a token for the audience (TokenReview by the admin). */
export async function kubeReview(
  api: KubeApi,
  token: string,
  audience: string = AUTH.audience,
): Promise<{ authenticated?: boolean; error?: string; user?: { username?: string } }> {
  const r = await api.must("POST", "/apis/authentication.k8s.io/v1/tokenreviews", {
    apiVersion: "authentication.k8s.io/v1",
    kind: "TokenReview",
    spec: { token, audiences: [audience] },
  });
  return r.body.status ?? {};
}

/** knp's server with token authentication (no `--cluster-ca-cert`), both agent links on. */
export interface TokenServer extends AsyncDisposable {
  process: ManagedProcess;
  udsPath: string;
  agentPort: number;
  websocketPort: number;
}

/** The server's flags: UDS frontend, loopback agent ports, the token flags. */
export async function tokenServerArgs(dir: string, kubeconfig: string): Promise<string[]> {
  const { files } = await testPki();
  return [
    `--uds-name=${join(dir, "konnectivity-server.socket")}`,
    "--server-port=0",
    "--agent-port=0",
    "--agent-bind-address=127.0.0.1",
    `--knp-websocket-port=${foundFreePort()}`,
    "--health-port=0",
    "--health-bind-address=127.0.0.1",
    "--admin-port=0",
    `--cluster-cert=${files.serverCert}`,
    `--cluster-key=${files.serverKey}`,
    "--server-id=e2e-auth-server",
    `--agent-namespace=${AUTH.namespace}`,
    `--agent-service-account=${AUTH.serviceAccount}`,
    `--authentication-audience=${AUTH.audience}`,
    `--kubeconfig=${kubeconfig}`,
  ];
}

/** Starts the server with exactly the permissions its flags compute; awaits "proxy server started". */
export async function startTokenServer(dir: string, kubeconfig: string): Promise<TokenServer> {
  const args = await tokenServerArgs(dir, kubeconfig);
  const { process, ports } = await spawnServer("server", args);
  return {
    process,
    udsPath: join(dir, "konnectivity-server.socket"),
    agentPort: ports.agentPort ?? 0,
    websocketPort: ports.websocketPort ?? 0,
    [Symbol.asyncDispose]: async () => void await process.stop(),
  };
}

/** Starts an agent on `link` that sends the token in `tokenPath` (read at every connect). */
export async function startTokenAgent(
  server: TokenServer,
  link: AgentLink,
  tokenPath: string,
  agentId: string,
): Promise<ManagedProcess> {
  const { files } = await testPki();
  const wsPort = link === "websocket" ? server.websocketPort : 0;
  // As upstream's token-authenticated agents: the server's CA and the token, no client certificate.
  const flags = [
    ...agentArgs(server.agentPort, wsPort, files, agentId)
      .filter((a) => !a.startsWith("--agent-cert=") && !a.startsWith("--agent-key=")),
    `--service-account-token-path=${tokenPath}`,
  ];
  return new ManagedProcess(`agent-${agentId}`, [
    "run",
    ...agentPermissionFlags(flags),
    "agent/main.ts",
    ...flags,
  ]);
}

/** The server's "agent connected" record of `agentId` (from `from` on). */
export function admitted(server: TokenServer, agentId: string, from = 0): Promise<LogRecord> {
  return server.process.waitForLog(
    (r) => r.msg === "agent connected" && r["agentID"] === agentId,
    { from },
  );
}

/** The server's "agent disconnected" record of `agentId` (from `from` on). */
export function gone(server: TokenServer, agentId: string, from = 0): Promise<LogRecord> {
  return server.process.waitForLog(
    (r) => r.msg === "agent disconnected" && r["agentID"] === agentId,
    { from },
  );
}

/** The server's "agent refused" record of `agentId` (from `from` on). */
export function refused(server: TokenServer, agentId: string, from = 0): Promise<LogRecord> {
  return server.process.waitForLog(
    (r) => r.msg === "agent refused" && r["agentID"] === agentId,
    { from },
  );
}

/** One HTTP GET through the server's frontend to `address`; resolves with the body. */
export async function getThrough(server: TokenServer, address: string): Promise<string> {
  const tunnel = createSingleUseTunnel({ udsPath: server.udsPath });
  try {
    const conn = await tunnel.dial("tcp", address, { timeoutMs: 10_000 });
    const res = await httpRequest(conn, "GET", "/success");
    return new TextDecoder().decode(res.body);
  } finally {
    tunnel.close();
  }
}
