/**
 * The kube-apiserver webhook case: the latency of a validating-webhook call made by a real
 * kube-apiserver, with keep-alive and with a new connection per call, direct (egress `Direct`)
 * and through knp in each egress mode. It reuses the e2e harness (tests/e2e/): etcd, a
 * kube-apiserver built from the Go module proxy, knp's real processes.
 *
 * Each sample is one ConfigMap create timed at the client; the webhook's own work is nothing, so
 * the difference between the direct and the tunnel columns is the proxy's share.
 *
 * @module
 */

import { join } from "node:path";
import {
  EGRESS_MODES,
  egressConfig,
  type EgressMode,
  startApiServer,
  startEtcd,
  startKnpAgent,
  startKnpServer,
} from "../tests/e2e/cluster.ts";
import {
  ensureKubeBinaries,
  type KubeBinaries,
  missingToolchain,
} from "../tests/e2e/kube_binaries.ts";
import { KubeApi } from "../tests/e2e/kube_api.ts";
import { type E2ePki, generateE2ePki } from "../tests/e2e/pki.ts";
import type { E2eProcess } from "../tests/e2e/process.ts";
import {
  awaitWebhookActive,
  createConfigMap,
  wireWebhook,
} from "../tests/e2e/webhook_scenarios.ts";
import { startUpstreamPair, upstreamBinaries } from "../tests/e2e/upstream.ts";
import { progress } from "./output.ts";
import { type Row, row } from "./report.ts";
import type { Settings } from "./settings.ts";

const DIRECT_EGRESS = `apiVersion: apiserver.k8s.io/v1beta1
kind: EgressSelectorConfiguration
egressSelections:
  - name: cluster
    connection:
      proxyProtocol: Direct
`;

/** p50 and p99 of `samples` (milliseconds). */
function percentiles(samples: number[]): { p50: number; p99: number } {
  const s = [...samples].sort((a, b) => a - b);
  const at = (q: number) => s[Math.min(s.length - 1, Math.floor(q * s.length))] ?? NaN;
  return { p50: at(0.5), p99: at(0.99) };
}

/** Latencies of the measured calls, and the p50 of the warm-up calls before them. */
type Latencies = Record<"keepAlive" | "newConn", { p50: number; p99: number; warmupP50: number }>;

/** How many calls: `warmup` unmeasured, then `calls` measured, per connection style. */
interface Calls {
  calls: number;
  warmup: number;
}

async function measure(api: KubeApi, pki: E2ePki, n: Calls): Promise<Latencies> {
  await using webhook = await wireWebhook(api, pki);
  await awaitWebhookActive(api, webhook);
  const timed = async (count: number) => {
    const ms: number[] = [];
    for (let i = 0; i < count; i++) {
      const t0 = performance.now();
      const r = await createConfigMap(api);
      ms.push(performance.now() - t0);
      if (r.status !== 201) throw new Error(`webhook call failed: ${r.status} ${r.text}`);
    }
    return percentiles(ms);
  };
  const sample = async (closeEach: boolean) => {
    webhook.closeEach = closeEach;
    const warm = await timed(n.warmup);
    return { ...await timed(n.calls), warmupP50: warm.p50 };
  };
  return { keepAlive: await sample(false), newConn: await sample(true) };
}

/** One control plane for `mode` ("direct": no knp), measured, then stopped. */
async function runMode(
  mode: EgressMode | "direct",
  bins: KubeBinaries,
  calls: Calls,
  upstream?: { server: string; agent: string },
): Promise<Latencies> {
  const pki = await generateE2ePki();
  const dir = await Deno.makeTempDir({ prefix: `knp-bench-webhook-${mode}-` });
  const procs: E2eProcess[] = [];
  try {
    const etcd = await startEtcd(dir);
    procs.push(etcd.proc);
    let egress = join(dir, "egress-direct.yaml");
    if (mode === "direct") {
      await Deno.writeTextFile(egress, DIRECT_EGRESS);
    } else if (upstream) {
      const pair = await startUpstreamPair(upstream, mode, pki, dir);
      procs.push(pair.server, pair.agent!);
      egress = await egressConfig(mode, pki, pair, dir);
    } else {
      // Both at info level, as upstream's binaries run here (their default verbosity).
      const knp = await startKnpServer(mode, pki, dir, ["-v=0"]);
      procs.push(knp.server);
      procs.push(await startKnpAgent(pki, knp.server, knp.ports.agentPort, ["-v=0"]));
      egress = await egressConfig(mode, pki, knp, dir);
    }
    const apiserver = await startApiServer(bins, pki, etcd.url, egress);
    procs.push(apiserver.proc);
    const api = new KubeApi(apiserver.url, apiserver.client);
    await api.watchUntil(
      "/api/v1/namespaces?fieldSelector=metadata.name%3Ddefault",
      (e) => e.type === "ADDED",
    );
    try {
      return await measure(api, pki, calls);
    } finally {
      apiserver.client.close();
    }
  } finally {
    for (const p of procs.reverse()) await p.stop();
    await Deno.remove(dir, { recursive: true }).catch(() => {});
    await Deno.remove(pki.dir, { recursive: true }).catch(() => {});
  }
}

/**
 * Runs the case: `webhookWarmup` unmeasured and `webhookCalls` measured calls per mode and
 * connection style; rows go to `add`. Skipped (with a progress line) where Go is missing.
 */
export async function webhookCase(
  settings: Pick<Settings, "webhookCalls" | "webhookWarmup">,
  add: (r: Row) => void,
): Promise<void> {
  const calls = { calls: settings.webhookCalls, warmup: settings.webhookWarmup };
  const missing = await missingToolchain();
  if (missing) {
    progress(`webhook case skipped: ${missing}`);
    return;
  }
  const bins = await ensureKubeBinaries(undefined, progress);
  const direct = await runMode("direct", bins, calls);
  const upstream = upstreamBinaries();
  const runs: [string, EgressMode, typeof upstream][] = EGRESS_MODES.flatMap((m) => [
    [m, m, undefined] as [string, EgressMode, typeof upstream],
    ...(upstream
      ? [[`${m} (upstream)`, m, upstream] as [string, EgressMode, typeof upstream]]
      : []),
  ]);
  if (!upstream) {
    progress("webhook case: no upstream column (set KNP_UPSTREAM_SERVER and KNP_UPSTREAM_AGENT)");
  }
  for (const [label, mode, bins2] of runs) {
    const tunnel = await runMode(mode, bins, calls, bins2);
    for (const style of ["keepAlive", "newConn"] as const) {
      for (const q of ["p50", "p99"] as const) {
        add(row({
          case: "webhook",
          title: `webhook call ${q}, ${style === "keepAlive" ? "keep-alive" : "new conn each"}`,
          frontend: label,
          link: "default",
          unit: "ms",
          better: "lower",
          direct: direct[style][q],
          tunnel: tunnel[style][q],
          details: {
            warmupP50: { direct: direct[style].warmupP50, tunnel: tunnel[style].warmupP50 },
          },
        }));
      }
    }
  }
}
