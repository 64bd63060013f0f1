/**
 * The end-of-run invariants, checked once load has stopped.
 *
 * Gauges: the server exposes them only in /metrics, with no log record when they change, so they
 * are re-read a bounded number of times ({@linkcode GAUGE_READS}); between reads the check awaits
 * the server's next log record (an event: a connection ending is usually logged) with a short
 * bound, so it never spins. The agents' endpoint connections are the backend's open connections
 * (the agent has no metrics of its own yet), awaited as an event of the backend.
 *
 * @module
 */

import type { ChaosBackend } from "./backend.ts";
import type { Cluster } from "./cluster.ts";
import { NO_RESET } from "./backend.ts";
import { type OpEnv, runOp } from "./ops.ts";

/** Reads of the gauges before they count as stuck. */
export const GAUGE_READS = 20;
/** Bound of each wait between two reads. */
const READ_WAIT_MS = 500;

/** RSS of one process in MiB. */
export interface RssRow {
  process: string;
  baseline: number;
  peak: number;
  final: number;
}

function withTimeout<T>(p: Promise<T>, ms: number): Promise<T | "timeout"> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const t = new Promise<"timeout">((r) => (timer = setTimeout(() => r("timeout"), ms)));
  return Promise.race([p, t]).finally(() => clearTimeout(timer));
}

async function settledGauges(cluster: Cluster): Promise<Record<string, number>> {
  let gauges = await cluster.gauges();
  for (let i = 1; i < GAUGE_READS; i++) {
    if (Object.values(gauges).every((v) => v === 0)) break;
    const from = cluster.server.mark();
    await withTimeout(
      cluster.server.waitForLog(() => true, { from }).catch(() => {}),
      READ_WAIT_MS,
    );
    gauges = await cluster.gauges();
  }
  return gauges;
}

function rssRows(cluster: Cluster, baseline: Record<string, number>, peak: Record<string, number>) {
  const final = cluster.rss();
  return Object.keys(final).map((p) => ({
    process: p,
    baseline: baseline[p] ?? 0,
    peak: Math.max(peak[p] ?? 0, final[p] ?? 0),
    final: final[p] ?? 0,
  }));
}

/** Checks the invariants; returns violations, warnings, the last gauges and RSS. */
export async function quiesce(
  cluster: Cluster,
  backend: ChaosBackend,
  env: OpEnv,
  baseline: Record<string, number>,
  peak: Record<string, number>,
) {
  const violations: string[] = [];
  const warnings: string[] = [];
  await cluster.awaitAgents(30_000).catch((err) => violations.push(`agents: ${err}`));
  const t = { token: 0, upSeed: 7, upLen: 300_000, downSeed: 9, downLen: 300_000 };
  const check = await runOp(env, {
    kind: "transfer",
    frontend: cluster.frontend,
    transfer: { ...t, resetAt: NO_RESET },
    at: 0,
    waitMs: 0,
  });
  if (check.status !== "exact") violations.push(`after the faults: ${check.detail}`);
  if (await withTimeout(backend.idle(), 20_000) === "timeout") {
    violations.push(`agents still hold ${backend.open} endpoint connection(s)`);
  }
  const gauges = await settledGauges(cluster);
  for (const [g, v] of Object.entries(gauges)) {
    if (v !== 0) violations.push(`gauge ${g} = ${v} after ${GAUGE_READS} reads`);
  }
  const rss = rssRows(cluster, baseline, peak);
  for (const r of rss) {
    if (r.final > 3 * r.baseline + 256) violations.push(`${r.process} RSS ${r.final} MiB`);
    else if (r.final > 1.5 * r.baseline + 32) {
      warnings.push(`${r.process} RSS ${r.baseline} → ${r.final} MiB`);
    }
  }
  return { violations, warnings, gauges, rss };
}
