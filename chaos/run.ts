/**
 * One chaos run: a {@linkcode Cluster} under seeded load while the seeded fault plan is applied,
 * then the invariants: no violation among the operations, the agents' endpoint connections and
 * the server's gauges back to 0, the cluster still carrying an exact transfer, and RSS near the
 * baseline (soft).
 *
 * @module
 */

import { startChaosBackend } from "./backend.ts";
import { Cluster } from "./cluster.ts";
import { applyFault, describeFault, type Fault, planFaults } from "./faults.ts";
import { type OpEnv, type Outcome, planOp, runOp } from "./ops.ts";
import { Prng } from "./prng.ts";
import { quiesce, type RssRow } from "./quiesce.ts";

/** Options of a run. */
export interface ChaosOptions {
  seed: number;
  /** Number of faults (each followed by a gap of 0.3–2 s). */
  faults: number;
  /** Concurrent clients. */
  workers: number;
  /** Largest transfer in each direction. */
  maxBytes: number;
  /** Overall deadline of each client operation. */
  deadlineMs: number;
  /** Progress lines (the CLI prints them; the test keeps them). */
  log: (line: string) => void;
}

/** What a run found. */
export interface ChaosReport {
  seed: number;
  faults: Fault[];
  outcomes: Outcome[];
  violations: string[];
  gauges: Record<string, number>;
  rss: RssRow[];
  /** Soft findings (RSS growth). */
  warnings: string[];
}

async function worker(env: OpEnv, rng: Prng, stop: () => boolean, next: () => number) {
  const outcomes: Outcome[] = [];
  while (!stop()) {
    const plan = planOp(rng, next(), env.frontend(), env.maxBytes);
    const outcome = await runOp(env, plan);
    outcomes.push(outcome);
    // After a failure (a restart in progress), give the cluster a moment instead of spinning.
    if (outcome.status === "error") await new Promise((r) => setTimeout(r, 50));
  }
  return outcomes;
}

async function injectFaults(cluster: Cluster, faults: Fault[], o: ChaosOptions) {
  // The fault in progress per target (agent/link 0 or 1); a server restart waits for both.
  const busy = new Map<number, Promise<void>>();
  for (const [i, f] of faults.entries()) {
    await new Promise((r) => setTimeout(r, f.gapMs));
    if (f.kind === "server-restart") await Promise.all(busy.values());
    else await busy.get(f.target);
    o.log(`fault ${i + 1}/${faults.length}: ${describeFault(f)}`);
    const applying = applyFault(cluster, f);
    busy.set(f.target, applying);
    if (!f.overlap || f.kind === "server-restart") await applying;
  }
  await Promise.all(busy.values());
}

/** Runs the load and the faults; returns the report (the caller decides pass/fail). */
export async function runChaos(o: ChaosOptions): Promise<ChaosReport> {
  const rng = new Prng(o.seed);
  const faults = planFaults(rng, o.faults);
  const workerSeeds = Array.from({ length: o.workers }, () => rng.fork());
  await using backend = startChaosBackend();
  await using cluster = await Cluster.start();
  const baseline = cluster.rss();
  const peak = { ...baseline };
  const sampler = setInterval(() => {
    for (const [k, v] of Object.entries(cluster.rss())) peak[k] = Math.max(peak[k] ?? 0, v);
  }, 1_000);
  const env: OpEnv = {
    udsPath: cluster.udsPath,
    frontend: () => cluster.frontend,
    backend,
    deadlineMs: o.deadlineMs,
    maxBytes: o.maxBytes,
  };
  let stopped = false;
  let token = 0;
  const load = workerSeeds.map((s) => worker(env, new Prng(s), () => stopped, () => ++token));
  try {
    await injectFaults(cluster, faults, o);
  } finally {
    stopped = true;
  }
  const outcomes = (await Promise.all(load)).flat();
  clearInterval(sampler);
  o.log(`load stopped after ${outcomes.length} operations; checking quiescence`);
  const q = await quiesce(cluster, backend, env, baseline, peak);
  const violations = outcomes.filter((x) => x.status === "violation").map((x) =>
    `op ${x.plan.transfer.token} ${x.plan.kind} via ${x.plan.frontend}: ${x.detail}`
  );
  return {
    seed: o.seed,
    faults,
    outcomes,
    violations: [...violations, ...q.violations],
    gauges: q.gauges,
    rss: q.rss,
    warnings: q.warnings,
  };
}
