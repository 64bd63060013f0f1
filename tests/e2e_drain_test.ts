// deno-lint-ignore-file no-console -- the suite says why it is skipped
/**
 * The agent's drain end to end: a real kube-apiserver (the e2e harness of `e2e_test.ts`) calls a
 * validating webhook through knp continuously while the 3 agents are rolled one at a time (each
 * SIGTERMed, then replaced), and not one call fails. Each rolled agent must exit 0 on its own,
 * having drained.
 *
 * The webhook answers with `Connection: close`, so each call is its own tunnel (a webhook that
 * keeps connections alive pins kube-apiserver's pooled connection to one agent; draining that
 * agent ends at `--knp-drain-timeout`, when the connection is cut: see the README's drain notes).
 *
 * Needs what `e2e_test.ts` needs (Go, etcd); skipped with the reason otherwise, or failed with
 * `KNP_E2E_REQUIRED=1`.
 *
 * @module
 */

import assert from "node:assert/strict";
import { e2eUnavailable } from "./e2e/availability.ts";
import { ensureKubeBinaries, KUBE_VERSION, type KubeBinaries } from "./e2e/kube_binaries.ts";
import { generateE2ePki } from "./e2e/pki.ts";
import { E2eCluster } from "./e2e/e2e_cluster.ts";
import { type EgressMode, startKnpAgent } from "./e2e/cluster.ts";
import type { KubeApi } from "./e2e/kube_api.ts";
import type { E2eProcess } from "./e2e/process.ts";
import {
  awaitWebhookActive,
  createConfigMap,
  dialsForwarded,
  wireWebhook,
} from "./e2e/webhook_scenarios.ts";

const missing = await e2eUnavailable("e2e drain (kube-apiserver)");

let bins: Promise<KubeBinaries> | undefined;
function binaries(): Promise<KubeBinaries> {
  bins ??= ensureKubeBinaries(KUBE_VERSION, (l) => console.log(l));
  return bins;
}

/** Webhook calls from `loops` concurrent loops until `stop()`; every failure is kept. */
function continuousCalls(api: KubeApi, loops: number) {
  let ok = 0;
  let running = true;
  const failures: string[] = [];
  const waiters: { n: number; resolve: () => void }[] = [];
  const loop = async () => {
    while (running) {
      const r = await createConfigMap(api);
      if (r.status === 201) ok++;
      else failures.push(`${r.status} ${r.text.slice(0, 300)}`);
      for (const w of waiters.filter((w) => w.n <= ok)) w.resolve();
    }
  };
  const all = Array.from({ length: loops }, loop);
  return {
    failures,
    get ok() {
      return ok;
    },
    /** Resolves once `n` more calls than now have succeeded. */
    more(n: number): Promise<void> {
      const { promise, resolve } = Promise.withResolvers<void>();
      waiters.push({ n: ok + n, resolve });
      return promise;
    },
    async stop() {
      running = false;
      await Promise.all(all);
    },
  };
}

/** SIGTERMs `agent`; resolves once the server has marked it draining. */
async function sigterm(agent: E2eProcess, server: E2eProcess): Promise<void> {
  const marked = server.record("agent is draining", false);
  agent.kill("SIGTERM");
  await agent.waitFor((l) => l.includes('"msg":"draining: sent DRAIN'));
  await marked;
}

const MODES: EgressMode[] = ["grpc-uds", "http-connect-uds"];

for (const mode of MODES) {
  Deno.test({
    name: `e2e drain(${mode}): rolling 3 agents under continuous webhook calls fails none`,
    ignore: missing !== undefined,
  }, async () => {
    const pki = await generateE2ePki();
    await using cluster = await E2eCluster.start(mode, await binaries(), pki);
    const api = cluster.api;
    const agents: E2eProcess[] = [cluster.agent!];
    // The cluster disposes of its own agent; these are ours.
    const extra: E2eProcess[] = [];
    try {
      for (let i = 0; i < 2; i++) {
        extra.push(await startKnpAgent(pki, cluster.server, cluster.ports.agentPort));
      }
      agents.push(...extra);
      await using webhook = await wireWebhook(api, pki);
      webhook.closeEach = true;
      await awaitWebhookActive(api, webhook);

      const dials0 = dialsForwarded(cluster.server);
      const calls = continuousCalls(api, 2);
      await calls.more(20);
      for (const victim of agents) {
        await sigterm(victim, cluster.server);
        extra.push(await startKnpAgent(pki, cluster.server, cluster.ports.agentPort));
        await calls.more(20);
        const status = await victim.status;
        assert.equal(status.code, 0, victim.tail());
        assert.ok(victim.lines.some((l) => l.includes('"msg":"drained: every connection')));
      }
      await calls.more(20);
      await calls.stop();
      assert.deepEqual(calls.failures, [], `${calls.failures.length} calls failed`);
      const dials = dialsForwarded(cluster.server) - dials0;
      // Each call is a new connection through knp (the last may still be open).
      assert.ok(dials >= calls.ok - 1, `${calls.ok} calls but ${dials} dials through knp`);
      console.log(`    ${calls.ok} webhook calls, ${dials} dials, 3 agents rolled, 0 failed`);
    } finally {
      for (const p of extra) await p.stop();
    }
  });
}
