// deno-lint-ignore-file no-console -- the suite says why it is skipped and what it builds
/**
 * knp's main end-to-end test: a real kube-apiserver (built from the Go module proxy) and etcd,
 * with the `cluster` egress through knp's real server and agent processes, in each egress mode:
 * GRPC over a UDS, HTTPConnect over a UDS, HTTPConnect over TCP with mTLS. Each scenario checks
 * what crossed the tunnel (dials in knp's logs), not only that the call succeeded.
 *
 * Needs Go (to build kube-apiserver and kubectl once; cached by version) and etcd (installed from
 * Debian when missing and root). Without them it is skipped with the reason printed; with
 * `KNP_E2E_REQUIRED=1` (set by `.ci/run`) a missing part fails instead.
 *
 * @module
 */

import assert from "node:assert/strict";
import { e2eUnavailable } from "./e2e/availability.ts";
import { ensureKubeBinaries, KUBE_VERSION, type KubeBinaries } from "./e2e/kube_binaries.ts";
import { generateE2ePki } from "./e2e/pki.ts";
import { E2eCluster } from "./e2e/e2e_cluster.ts";
import { EGRESS_MODES } from "./e2e/cluster.ts";
import {
  awaitWebhookActive,
  createConfigMap,
  dialsForwarded,
  webhookCalls,
  wireWebhook,
} from "./e2e/webhook_scenarios.ts";
import { kubectl, readExactly, wireKubelet } from "./e2e/logs_scenarios.ts";
import { wireAggregatedApi } from "./e2e/api_scenarios.ts";
import { API_GROUP, patternBytes } from "./e2e/backends.ts";

const missing = await e2eUnavailable("e2e (kube-apiserver)");

let bins: Promise<KubeBinaries> | undefined;
function binaries(): Promise<KubeBinaries> {
  bins ??= ensureKubeBinaries(KUBE_VERSION, (l) => console.log(l));
  return bins;
}

for (const mode of EGRESS_MODES) {
  Deno.test({
    name: `e2e(${mode}): real kube-apiserver through knp`,
    ignore: missing !== undefined,
  }, async (t) => {
    const pki = await generateE2ePki();
    await using cluster = await E2eCluster.start(mode, await binaries(), pki);
    const api = cluster.api;

    // One webhook serves the call scenarios and the fault scenarios.
    await using webhook = await wireWebhook(api, pki);
    await awaitWebhookActive(api, webhook);

    await t.step("webhook: 200 calls with keep-alive, 200 with a new connection each", async () => {
      webhook.closeEach = false;
      const kept = await webhookCalls(api, webhook, cluster.server, 200);
      assert.equal(kept.reviews, 200);
      assert.ok(kept.dials >= 0 && kept.dials < 20, `keep-alive used ${kept.dials} dials`);
      webhook.closeEach = true;
      const fresh = await webhookCalls(api, webhook, cluster.server, 200);
      assert.equal(fresh.reviews, 200);
      // The first call may still ride the last kept-alive connection.
      assert.ok(fresh.dials >= 199, `a new connection per call used only ${fresh.dials} dials`);
    });

    await t.step(
      "kubectl logs and logs -f from the kubelet, byte-exact, closed by either side",
      async () => {
        await using wired = await wireKubelet(api, pki);
        const dials0 = dialsForwarded(cluster.server);
        const plain = await kubectl(cluster.bins.kubectl, cluster.kubeconfig, [
          "logs",
          "e2e-pod",
          "-c",
          "c",
        ])
          .output();
        assert.equal(plain.code, 0, new TextDecoder().decode(plain.stderr));
        assert.deepEqual(plain.stdout, wired.kubelet.log);
        assert.ok(dialsForwarded(cluster.server) > dials0, "kubectl logs did not cross knp");

        // Follow, ended by the kubelet: every byte arrives and kubectl exits 0.
        const follow = kubectl(cluster.bins.kubectl, cluster.kubeconfig, [
          "logs",
          "-f",
          "e2e-pod",
          "-c",
          "c",
        ]);
        const reader = follow.stdout.getReader();
        const stream = await wired.kubelet.nextFollow();
        assert.deepEqual(await readExactly(reader, wired.kubelet.log.length), wired.kubelet.log);
        const more = patternBytes(100_000, 9);
        stream.write(more);
        assert.deepEqual(await readExactly(reader, more.length), more);
        stream.end();
        assert.equal((await reader.read()).done, true);
        assert.equal((await follow.status).code, 0);
        await follow.stderr.cancel();

        // Follow, ended by the client: the kubelet sees its stream closed.
        const follow2 = kubectl(cluster.bins.kubectl, cluster.kubeconfig, [
          "logs",
          "-f",
          "e2e-pod",
          "-c",
          "c",
        ]);
        const reader2 = follow2.stdout.getReader();
        await wired.kubelet.nextFollow();
        await readExactly(reader2, wired.kubelet.log.length);
        follow2.kill("SIGTERM");
        await wired.kubelet.clientClosed.promise;
        await follow2.status;
        reader2.releaseLock();
        await follow2.stdout.cancel();
        await follow2.stderr.cancel();
      },
    );

    await t.step(
      "aggregated API: Available, GET, watch, and a 64 MiB response byte-exact",
      async () => {
        await using wired = await wireAggregatedApi(api, pki);
        const list = await api.must("GET", `/apis/${API_GROUP}/v1/namespaces/default/widgets`);
        assert.equal(list.body.items[0].metadata.name, "first");
        const watchers = wired.server.watchers;
        const event = api.watchUntil(
          `/apis/${API_GROUP}/v1/namespaces/default/widgets`,
          (e) => e.type === "MODIFIED" && e.object.metadata.name === "second",
        );
        // The watch is open once the aggregated server holds one more watcher.
        await wired.server.nextWatcher(watchers);
        wired.server.emit("MODIFIED", "second");
        await event;
        const big = await api.bytes(`/apis/${API_GROUP}/v1/namespaces/default/widgets/big`);
        assert.equal(big.status, 200);
        assert.equal(big.bytes.length, wired.server.big.length);
        assert.ok(equalBytes(big.bytes, wired.server.big), "the large response differs");
      },
    );

    await t.step(
      "faults: agent killed mid-call, agent restarted, server restarted, no agent",
      async () => {
        webhook.closeEach = false;
        // The agent is SIGKILLed while a webhook call is in flight: an error, not a hang.
        const gate = Promise.withResolvers<void>();
        webhook.gate = gate.promise;
        const arrived = webhook.nextReview();
        const call = createConfigMap(api);
        await arrived;
        await cluster.killAgent();
        const failed = await call;
        gate.resolve();
        webhook.gate = undefined;
        assert.notEqual(failed.status, 201, "the call succeeded although its agent was killed");
        assert.match(failed.text, /failed calling webhook/);
        assert.doesNotMatch(failed.text, /context deadline exceeded|Client\.Timeout/);

        // No agent connected: the reason reaches kube-apiserver.
        const none = await createConfigMap(api);
        assert.notEqual(none.status, 201);
        assert.match(
          none.text,
          cluster.mode === "grpc-uds" ? /No agent available/ : /50\d|No agent available/,
        );

        // The agent restarted: the next call succeeds.
        await cluster.startAgent();
        assert.equal((await createConfigMap(api)).status, 201);

        // The proxy-server restarted: calls recover once the agent is back.
        await cluster.restartServer();
        const after = await webhookCalls(api, webhook, cluster.server, 5);
        assert.equal(after.reviews, 5);
        assert.ok(after.dials >= 1);
      },
    );

    await t.step(
      "graceful shutdown: a webhook call in flight at SIGTERM completes with 201",
      async () => {
        await cluster.restartServer(["--graceful-shutdown-timeout=20s"]);
        // A new connection per call: the tunnel ends with the response, so the server exits
        // once the call is done instead of at the timeout.
        webhook.closeEach = true;
        const gate = Promise.withResolvers<void>();
        webhook.gate = gate.promise;
        const arrived = webhook.nextReview();
        const call = createConfigMap(api);
        await arrived;
        const { exited } = await cluster.terminateServer();
        gate.resolve();
        webhook.gate = undefined;
        const done = await call;
        assert.equal(done.status, 201, done.text);
        assert.equal(await exited, 0);
        // It exited because its last tunnel ended, not at the timeout.
        const said = cluster.server.records().map((r) => r["msg"]);
        assert.ok(said.includes("graceful shutdown complete"), cluster.server.tail());
        // Back to a running server (no graceful timeout) for the steps that follow.
        await cluster.restartServer();
        webhook.closeEach = false;
        assert.equal((await createConfigMap(api)).status, 201);
      },
    );

    if (mode === "grpc-uds") {
      await t.step(
        "deploy/ manifests pass the API server's validation (apply --dry-run=server)",
        async () => {
          const files = [];
          for await (const e of Deno.readDir(new URL("../deploy/kubernetes/", import.meta.url))) {
            if (e.name.endsWith(".yaml") && !e.name.startsWith("egress-selector")) {
              files.push(e.name);
            }
          }
          assert.ok(files.length >= 2);
          for (const f of files.sort()) {
            const path = new URL(`../deploy/kubernetes/${f}`, import.meta.url).pathname;
            const out = await kubectl(cluster.bins.kubectl, cluster.kubeconfig, [
              "apply",
              "--dry-run=server",
              "-f",
              path,
            ]).output();
            assert.equal(out.code, 0, `${f}: ${new TextDecoder().decode(out.stderr)}`);
          }
        },
      );
    }
  });
}

function equalBytes(a: Uint8Array, b: Uint8Array): boolean {
  if (a.length !== b.length) return false;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false;
  return true;
}
