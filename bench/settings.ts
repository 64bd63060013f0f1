/**
 * The bench's settings: sizes and counts of a full and a smoke run, the case and frontend names,
 * the usage text, and a description of the machine for the report.
 *
 * @module
 */

import { readProcFile } from "../testing/proc_files.ts";
import { LINKS } from "./links.ts";
import { openFilesLimit, round } from "./wire.ts";

export const MiB = 1 << 20;
export const GiB = 1 << 30;

/** Sizes and counts of a run. */
export interface Settings {
  bulkBytes: number;
  aggregateConns: number;
  aggregateBytesEach: number;
  echoIterations: number;
  /**
   * Unmeasured echoes first: a JIT-compiled proxy runs its first thousand or so round trips in
   * code V8 is still optimizing (a Go proxy does not), and the rows compare steady states.
   */
  echoWarmup: number;
  dialCount: number;
  /** Unmeasured dials first, each way (see `echoWarmup`: knp's dial path takes ~1,000). */
  dialWarmup: number;
  dialConcurrency: number;
  idleConns: number;
  idleConcurrency: number;
  /**
   * How long the idle connections are held before the second ("settled") RSS sample: V8 gives
   * back the young generation that opening them grew after about 20–30 s without allocation.
   */
  idleHoldMs: number;
  isolationHealthy: number;
  /** Connections downloading while the loaded echo is measured. */
  loadedEchoConns: number;
  /** The loaded echo's measuring window. */
  loadedEchoMs: number;
  isolationWarmupMs: number;
  isolationWindowMs: number;
  /** How long the stalled connection is read after the window to see whether it was ended. */
  isolationDrainMs: number;
  warmupBytes: number;
  /**
   * Rounds of the latency cases (echo, dial), each on freshly started stacks, the stacks' order
   * alternating; their rows report each value's median (every round kept in the row's details).
   */
  latencyRounds: number;
  /** Measured webhook calls per mode and style through a real kube-apiserver (0: skip). */
  webhookCalls: number;
  /** Unmeasured webhook calls first, per mode and style (see `echoWarmup`). */
  webhookWarmup: number;
  /** Longest one client command may take before its case (and its stack's others) is failed. */
  commandTimeoutMs: number;
  /** Concurrent sessions of the opt-in `ha-load` case. */
  haLoadSessions: number;
  /** Bytes each `ha-load` session downloads. */
  haLoadBytesEach: number;
}

export const FULL: Settings = {
  bulkBytes: GiB,
  aggregateConns: 100,
  aggregateBytesEach: 10 * MiB,
  echoIterations: 2000,
  echoWarmup: 2000,
  dialCount: 1000,
  dialWarmup: 1000,
  dialConcurrency: 10,
  idleConns: 10_000,
  idleConcurrency: 100,
  idleHoldMs: 45_000,
  isolationHealthy: 50,
  loadedEchoConns: 50,
  loadedEchoMs: 6_000,
  isolationWarmupMs: 1_000,
  isolationWindowMs: 5_000,
  isolationDrainMs: 1_000,
  warmupBytes: 64 * MiB,
  latencyRounds: 3,
  webhookCalls: 500,
  webhookWarmup: 1000,
  commandTimeoutMs: 2 * 60_000,
  haLoadSessions: 2_000,
  haLoadBytesEach: 5 * MiB,
};

export const SMOKE: Settings = {
  bulkBytes: 8 * MiB,
  aggregateConns: 10,
  aggregateBytesEach: 256 * 1024,
  echoIterations: 50,
  echoWarmup: 10,
  dialCount: 20,
  dialWarmup: 20,
  dialConcurrency: 5,
  idleConns: 200,
  idleConcurrency: 50,
  idleHoldMs: 500,
  isolationHealthy: 10,
  loadedEchoConns: 5,
  loadedEchoMs: 200,
  isolationWarmupMs: 50,
  isolationWindowMs: 200,
  isolationDrainMs: 100,
  warmupBytes: 1 * MiB,
  latencyRounds: 1,
  webhookCalls: 0,
  webhookWarmup: 0,
  commandTimeoutMs: 60_000,
  haLoadSessions: 30,
  haLoadBytesEach: 256 * 1024,
};

/** The cases that run `latencyRounds` times. */
export const LATENCY_CASES: readonly CaseName[] = ["echo", "dial"];

/** Case families, in run order. */
export const CASES = [
  "download",
  "upload",
  "aggregate",
  "echo",
  "dial",
  "isolation",
  "idle",
  "webhook",
  "ha-load",
] as const;
export type CaseName = typeof CASES[number];
/** Cases run only when named in `--cases` (heavy). */
export const OPT_IN_CASES: readonly CaseName[] = ["ha-load"];
/** The cases of a run without `--cases`. */
export const DEFAULT_CASES: readonly CaseName[] = CASES.filter((c) => !OPT_IN_CASES.includes(c));
export const FRONTENDS = ["http-connect", "grpc"] as const;
export type Frontend = typeof FRONTENDS[number];

export const HELP = `Usage: deno task bench [options]

  --smoke              tiny sizes and few iterations (a CI check that the suite works; ~30 s)
  --json FILE          write the JSON document to FILE instead of stdout
  --cases a,b          only these cases: ${CASES.join(", ")}
                       (default: all but the opt-in ${OPT_IN_CASES.join(", ")})
  --links a,b          only these agent links (bench/links.ts): ${
  LINKS.map((l) => l.name).join(", ")
}
  --frontends a,b      only these frontends: ${FRONTENDS.join(", ")}
  --upstream-server P  upstream's proxy-server binary (default: env KNP_UPSTREAM_SERVER)
  --upstream-agent P   upstream's proxy-agent binary (default: env KNP_UPSTREAM_AGENT); with
                       both, every case also runs through upstream's server + agent
  --no-upstream        do not run upstream even when the environment names its binaries
  --go-client          gRPC-frontend rows with the Go konnectivity-client (default when \`go\` works)
  --knp-client         gRPC-frontend rows with knp's client library instead
  --idle-conns N       idle connections of the idle case (default 10000, smoke 200)
  --window-ms MS       each measuring window of the isolation case (default 5000, smoke 200)
  --rounds N           rounds of the latency cases (${LATENCY_CASES.join(", ")}), each on fresh
                       stacks; their rows give medians (default 3, smoke 1)
  --ha-sessions N      concurrent sessions of ha-load (default 2000, smoke 30)
  --ha-mib N           MiB each ha-load session downloads (default 5, smoke 0.25)
  -h, --help           this text
`;

export function list<T extends string>(
  value: string | undefined,
  all: readonly T[],
  what: string,
): T[] {
  if (value === undefined) return [...all];
  const picked = value.split(",").map((s) => s.trim()).filter(Boolean);
  for (const p of picked) {
    if (!all.includes(p as T)) throw new Error(`unknown ${what} ${p} (known: ${all.join(", ")})`);
  }
  return picked as T[];
}

export async function machine(): Promise<Record<string, unknown>> {
  const info = (path: string) => {
    try {
      return readProcFile(path);
    } catch {
      return "";
    }
  };
  const [cpuinfo, meminfo] = [info("/proc/cpuinfo"), info("/proc/meminfo")];
  const git = await new Deno.Command("git", { args: ["describe", "--always", "--dirty"] }).output()
    .then((o) => new TextDecoder().decode(o.stdout).trim(), () => "");
  const cores = navigator.hardwareConcurrency;
  return {
    cores,
    cpu: /^model name\s*:\s*(.+)$/m.exec(cpuinfo)?.[1] ?? "unknown",
    memoryGiB: round(Number(/^MemTotal:\s+(\d+)/m.exec(meminfo)?.[1] ?? 0) / MiB, 1),
    kernel: Deno.osRelease(),
    deno: Deno.version.deno,
    v8: Deno.version.v8,
    commit: git || "unknown",
    openFilesLimit: openFilesLimit(),
    note: `${cores} cores shared by every process: the direct path runs 2 busy processes ` +
      "(client, backend), the tunnel path 4 (client, server, agent, backend), so tunnel " +
      "ratios here are bounded by CPU, not by the loopback.",
  };
}
