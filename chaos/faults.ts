/**
 * The seeded fault plan and its injector. The plan (kinds, targets, durations, gaps) is drawn
 * from the seed before the run starts, so a seed always applies the same faults in the same order;
 * only their timing relative to the load varies. A server restart is always in the middle of the
 * plan, so both frontends carry load in every run.
 *
 * @module
 */

import type { Cluster } from "./cluster.ts";
import type { Prng } from "./prng.ts";

/** Kinds of fault. */
export type FaultKind =
  | "agent-kill"
  | "agent-stop"
  | "server-restart"
  | "link-cut"
  | "link-blackhole";
const KINDS: readonly FaultKind[] = [
  "agent-kill",
  "agent-stop",
  "server-restart",
  "link-cut",
  "link-blackhole",
];
const WEIGHTS = [2, 2, 1, 2, 2];

/** One planned fault. */
export interface Fault {
  kind: FaultKind;
  /** Agent (or its link) 0 (gRPC link) or 1 (WebSocket link). */
  target: number;
  /** How long a stop or blackhole lasts. */
  durationMs: number;
  /** Pause before the fault. */
  gapMs: number;
  /**
   * The next fault starts without waiting for this one to end (faults on one agent or link, and
   * server restarts, still never overlap each other).
   */
  overlap: boolean;
}

/** Draws `count` faults from `rng`, with a server restart in the middle. */
export function planFaults(rng: Prng, count: number): Fault[] {
  const faults: Fault[] = [];
  for (let i = 0; i < count; i++) {
    const kind = i === Math.floor(count / 2) ? "server-restart" : rng.pick(KINDS, WEIGHTS);
    faults.push({
      kind,
      target: rng.int(0, 1),
      durationMs: rng.int(300, 3_000),
      gapMs: rng.int(300, 2_000),
      overlap: rng.next() < 0.3,
    });
  }
  return faults;
}

/** Describes a fault for logs. */
export function describeFault(f: Fault): string {
  const who = f.target === 0 ? "agent0/grpc-link" : "agent1/ws-link";
  switch (f.kind) {
    case "server-restart":
      return "server restart";
    case "agent-stop":
    case "link-blackhole":
      return `${f.kind} ${who} for ${f.durationMs} ms${f.overlap ? " (overlapping)" : ""}`;
    default:
      return `${f.kind} ${who}${f.overlap ? " (overlapping)" : ""}`;
  }
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

/** Applies one fault and waits until it is over (the cluster is whole again, processes-wise). */
export async function applyFault(cluster: Cluster, f: Fault): Promise<void> {
  const relay = cluster.relays[f.target];
  const agent = cluster.agents[f.target];
  switch (f.kind) {
    case "agent-kill":
      return await cluster.killAgent(f.target);
    case "agent-stop":
      agent?.kill("SIGSTOP");
      await sleep(f.durationMs);
      agent?.kill("SIGCONT");
      return;
    case "server-restart":
      return await cluster.restartServer();
    case "link-cut":
      relay?.cut();
      return;
    case "link-blackhole":
      relay?.blackhole();
      await sleep(f.durationMs);
      relay?.resume();
      return;
  }
}
