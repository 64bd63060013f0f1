/**
 * End-to-end service-account token authentication of agents: knp's server reviews agent tokens
 * with a real kube-apiserver (TokenReview), over both agent links. Tokens come from the
 * TokenRequest API; an expired one is a stand-in signed with the cluster's own service-account
 * key. Refused agents get no dials and are logged with the reason, the claimed agent ID and the
 * peer. The server, with token flags but no working Kubernetes API, ends with one line naming the
 * flag. Skips like tests/e2e_test.ts (fails instead with `KNP_E2E_REQUIRED=1`).
 *
 * @module
 */

import assert from "node:assert/strict";
import { e2eUnavailable } from "./e2e/availability.ts";
import { join } from "node:path";
import { DialError } from "@knp/client";
import { ensureKubeBinaries, KUBE_VERSION } from "./e2e/kube_binaries.ts";
import { generateE2ePki } from "./e2e/pki.ts";
import { startApiServer, startEtcd } from "./e2e/cluster.ts";
import { KubeApi, writeKubeconfig } from "./e2e/kube_api.ts";
import {
  admitted,
  AUTH,
  createServiceAccount,
  directEgress,
  getThrough,
  gone,
  kubeReview,
  mintServiceAccountToken,
  refused,
  requestToken,
  startTokenAgent,
  startTokenServer,
  type TokenServer,
  tokenServerArgs,
} from "./e2e/auth_scenarios.ts";
import {
  AGENT_LINKS,
  type AgentLink,
  foundFreePort,
  ManagedProcess,
  testPki,
} from "./framework.ts";
import { startHttpBackend } from "./backends.ts";
import { serverRunFlags } from "../server/permissions.ts";

const missing = await e2eUnavailable("e2e auth (kube-apiserver)");

/** The tokens of the scenarios. */
interface Tokens {
  good: string;
  wrongAudience: string;
  wrongNamespace: string;
  otherServiceAccount: string;
  expired: string;
  deletedServiceAccount: string;
}

/** Service accounts and tokens; the "doomed" account is deleted after its token was issued. */
async function tokens(api: KubeApi, saKey: string): Promise<Tokens> {
  const { namespace: ns, serviceAccount: sa, audience } = AUTH;
  const uid = await createServiceAccount(api, ns, sa);
  await createServiceAccount(api, "knp-auth-other", sa);
  await createServiceAccount(api, ns, "other-agent");
  await createServiceAccount(api, ns, "doomed-agent");
  const now = Math.floor(Date.now() / 1000);
  const minted = (exp: number) => mintServiceAccountToken(saKey, { ns, sa, uid, audience, exp });
  // The stand-in signer is right: with an exp ahead, kube-apiserver accepts its token.
  const control = await kubeReview(api, await minted(now + 600));
  assert.equal(control.authenticated, true, JSON.stringify(control));
  const t: Tokens = {
    good: await requestToken(api, ns, sa, audience),
    wrongAudience: await requestToken(api, ns, sa, "some-other-audience"),
    wrongNamespace: await requestToken(api, "knp-auth-other", sa, audience),
    otherServiceAccount: await requestToken(api, ns, "other-agent", audience),
    expired: await minted(now - 600),
    deletedServiceAccount: await requestToken(api, ns, "doomed-agent", audience),
  };
  await deleteServiceAccount(api, ns, "doomed-agent");
  return t;
}

/**
 * Deletes a service account and resolves once a watch from its resource version has seen it
 * deleted. kube-apiserver's token authenticator looks service accounts up in its informer cache,
 * which learns of the deletion the same way, after the DELETE has answered.
 */
async function deleteServiceAccount(api: KubeApi, ns: string, name: string): Promise<void> {
  const path = `/api/v1/namespaces/${ns}/serviceaccounts`;
  const { body } = await api.must("GET", `${path}/${name}`);
  const rv = body.metadata.resourceVersion;
  await Promise.all([
    api.watchUntil(
      `${path}?fieldSelector=metadata.name%3D${name}&resourceVersion=${rv}`,
      (e) => e.type === "DELETED",
    ),
    api.must("DELETE", `${path}/${name}`),
  ]);
}

/** Writes `token` to a fresh file; resolves with its path. */
async function tokenFile(dir: string, name: string, token: string): Promise<string> {
  const path = join(dir, `${name}.token`);
  await Deno.writeTextFile(path, token);
  return path;
}

/** An agent with `token` is refused: logged with reason, agent ID and peer; dials find no agent. */
async function assertRefused(
  server: TokenServer,
  link: AgentLink,
  dir: string,
  name: string,
  token: string,
  reason: RegExp,
  backend: string,
): Promise<void> {
  const agentId = `${link}-${name}`;
  const from = server.process.mark();
  await using _agent = await startTokenAgent(
    server,
    link,
    await tokenFile(dir, agentId, token),
    agentId,
  );
  const record = await refused(server, agentId, from);
  assert.equal(record["reason"], "unauthenticated", JSON.stringify(record));
  assert.match(String(record["peer"]), /^127\.0\.0\.1:\d+$/);
  assert.match(String(record["error"]), reason);
  const err = await getThrough(server, backend).then(() => undefined, (e) => e);
  assert.ok(err instanceof DialError, `a dial found an agent: ${err}`);
  assert.equal(err.kind, "no-agent", err.message);
  assert.ok(
    !server.process.records.slice(from).some((r) => r.msg === "agent connected"),
    `${name} was admitted`,
  );
}

Deno.test({
  name: "e2e(auth): agents' service-account tokens reviewed by a real kube-apiserver",
  ignore: missing !== undefined,
}, async (t) => {
  const bins = await ensureKubeBinaries(KUBE_VERSION);
  const pki = await generateE2ePki();
  const dir = await Deno.makeTempDir({ prefix: "knp-e2e-auth-" });
  const etcd = await startEtcd(dir);
  await using _etcd = etcd.proc;
  const apiserver = await startApiServer(bins, pki, etcd.url, await directEgress(dir));
  await using _apiserver = apiserver.proc;
  await using backend = startHttpBackend();
  try {
    const api = new KubeApi(apiserver.url, apiserver.client);
    const tok = await tokens(api, pki.saKey);
    // knp's server reviews with the admin certificate, under exactly its computed permissions.
    await using server = await startTokenServer(
      dir,
      await writeKubeconfig(dir, apiserver.url, pki),
    );
    // The deleted account's token: kube-apiserver itself refuses it now (asked after the server's
    // start, well after the watch saw the deletion: see deleteServiceAccount).
    const doomed = await kubeReview(api, tok.deletedServiceAccount);
    assert.notEqual(doomed.authenticated, true, JSON.stringify(doomed));

    for (const link of AGENT_LINKS) {
      await t.step(`${link}: a good token is admitted and carries dials`, async () => {
        const agentId = `${link}-good`;
        const from = server.process.mark();
        const agent = await startTokenAgent(
          server,
          link,
          await tokenFile(dir, agentId, tok.good),
          agentId,
        );
        try {
          await admitted(server, agentId, from);
          assert.equal(await getThrough(server, backend.address), "hello");
        } finally {
          await agent.stop();
        }
        await gone(server, agentId, from);
      });

      await t.step(
        `${link}: wrong audience, namespace, account, expired, deleted: refused`,
        async () => {
          const cases: [string, string, RegExp][] = [
            [
              "wrong-audience",
              tok.wrongAudience,
              /^Failed to validate authentication token, err:lookup failed: .*is invalid for the target audiences/,
            ],
            [
              "wrong-namespace",
              tok.wrongNamespace,
              /lookup failed: incoming request from "knp-auth-other" namespace\. Expected "knp-auth"/,
            ],
            [
              "other-service-account",
              tok.otherServiceAccount,
              /lookup failed: incoming request from "other-agent" service account\. Expected "konnectivity-agent"/,
            ],
            [
              "expired",
              tok.expired,
              /^Failed to validate authentication token, err:lookup failed: .*expired/,
            ],
            [
              "deleted-service-account",
              tok.deletedServiceAccount,
              /^Failed to validate authentication token, err:lookup failed: .*(has been deleted|not found)/,
            ],
          ];
          for (const [name, token, reason] of cases) {
            await assertRefused(server, link, dir, name, token, reason, backend.address);
          }
        },
      );

      await t.step(`${link}: a rotated token file is read at the next connect`, async () => {
        const agentId = `${link}-rotated`;
        const path = await tokenFile(dir, agentId, tok.wrongAudience);
        const from = server.process.mark();
        const agent = await startTokenAgent(server, link, path, agentId);
        try {
          await refused(server, agentId, from);
          const rotated = server.process.mark();
          await Deno.writeTextFile(`${path}.new`, tok.good);
          await Deno.rename(`${path}.new`, path); // as the kubelet swaps a projected token
          await admitted(server, agentId, rotated);
          assert.equal(await getThrough(server, backend.address), "hello");
        } finally {
          await agent.stop();
        }
        await gone(server, agentId, from);
      });
    }
  } finally {
    apiserver.client.close();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
});

/**
 * Runs the server with its computed permissions; resolves with its exit code and what it said
 * about the failure: plain lines and error records (as their `error` or `msg`).
 */
async function failedStart(args: string[], env: Record<string, string> = {}) {
  const server = new ManagedProcess("server", [
    "run",
    ...serverRunFlags(args),
    "server/main.ts",
    ...args,
  ], env);
  const { code } = await server.status;
  const lines = server.log.split("\n").filter((l) => l !== "").flatMap((l) => {
    if (!l.startsWith("{")) return [l];
    const r = JSON.parse(l);
    return r.level === "error" ? [String(r.error ?? r.msg)] : [];
  });
  const started = server.records.some((r) => r.msg === "proxy server started");
  return { code, lines, started, log: server.log };
}

Deno.test("e2e(auth): token flags without a working Kubernetes API end the server with one line", async () => {
  const dir = await Deno.makeTempDir({ prefix: "knp-e2e-auth-fail-" });
  try {
    const kubeconfig = join(dir, "kubeconfig");
    // Nothing listens there (fetch refuses "bad ports" such as 1 before dialing, so not CLOSED_PORT).
    const closed = foundFreePort();
    const { caCert } = (await testPki()).files;
    await Deno.writeTextFile(
      kubeconfig,
      JSON.stringify({
        clusters: [{
          name: "c",
          cluster: { server: `https://127.0.0.1:${closed}`, "certificate-authority": caCert },
        }],
        users: [{ name: "u", user: { token: "unused" } }],
        contexts: [{ name: "x", context: { cluster: "c", user: "u" } }],
        "current-context": "x",
      }),
    );
    const base = await tokenServerArgs(dir, kubeconfig);
    const unreachable = await failedStart(base);
    assert.equal(unreachable.code, 1, unreachable.log);
    assert.ok(!unreachable.started, unreachable.log);
    assert.equal(unreachable.lines.length, 1, unreachable.log);
    assert.match(
      unreachable.lines[0]!,
      new RegExp(
        `--kubeconfig: ${kubeconfig}: the API server https://127\\.0\\.0\\.1:${closed} is unreachable`,
      ),
    );

    const missingFile = join(dir, "missing-kubeconfig");
    const absent = await failedStart(
      base.map((a) => a.startsWith("--kubeconfig=") ? `--kubeconfig=${missingFile}` : a),
    );
    assert.equal(absent.code, 1, absent.log);
    assert.ok(!absent.started, absent.log);
    assert.equal(absent.lines.length, 1, absent.log);
    assert.match(absent.lines[0]!, /--kubeconfig/);

    // No --kubeconfig and not in a cluster.
    const outside = await failedStart(
      base.filter((a) => !a.startsWith("--kubeconfig=")),
      { KUBERNETES_SERVICE_HOST: "", KUBERNETES_SERVICE_PORT: "" },
    );
    assert.equal(outside.code, 1, outside.log);
    assert.ok(!outside.started, outside.log);
    assert.equal(outside.lines.length, 1, outside.log);
    assert.match(
      outside.lines[0]!,
      /--agent-namespace: token authentication needs a Kubernetes API/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
