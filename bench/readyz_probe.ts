/**
 * `/readyz` latency of the server and the agent while the tunnel is busy (issue 13: health
 * answers within 100 ms while the process is saturated). The driver asks each health port's
 * `/readyz`: first idle (20 times back to back), then every 10 ms for as long as a load runs;
 * {@linkcode readyzRows} turns both into rows (direct column = idle, tunnel column = under load).
 *
 * @module
 */

import { type Row, row } from "./report.ts";
import { percentile, round } from "./wire.ts";

/** Health ports of a stack's processes, by process name. */
export type HealthPorts = Record<string, number>;

/** One `/readyz` round trip in ms (the body is read: the answer is complete). */
async function once(port: number): Promise<number> {
  const t0 = performance.now();
  const res = await fetch(`http://127.0.0.1:${port}/readyz`);
  await res.arrayBuffer();
  return performance.now() - t0;
}

/** `n` sequential round trips. */
export async function probeIdle(port: number, n = 20): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i++) out.push(await once(port));
  return out;
}

/** Pause between probes under load, so that the probes do not become the load themselves. */
const PACE_MS = 10;

/** Round trips every {@linkcode PACE_MS} until `load` settles (at least one). */
export async function probeWhile(port: number, load: Promise<unknown>): Promise<number[]> {
  let done = false;
  load.then(() => done = true, () => done = true);
  const out: number[] = [];
  do {
    out.push(await once(port));
    if (!done) await new Promise((resolve) => setTimeout(resolve, PACE_MS));
  } while (!done);
  return out;
}

/**
 * Measures every health port idle, then while `load()` runs; returns the load's result and one
 * row per process (p99 ms, target ≤ 100 ms under load).
 */
export async function withReadyzProbe<T>(
  ports: HealthPorts,
  where: { frontend: string; link: string },
  load: () => Promise<T>,
): Promise<{ result: T; rows: Row[] }> {
  const idle: Record<string, number[]> = {};
  for (const [name, port] of Object.entries(ports)) idle[name] = await probeIdle(port);
  const running = load();
  const busy = await Promise.all(
    Object.entries(ports).map(async ([name, port]) => [name, await probeWhile(port, running)]),
  ) as [string, number[]][];
  const result = await running;
  const rows = busy.map(([name, samples]) => {
    const loaded = [...samples].sort((a, b) => a - b);
    const quiet = [...idle[name]!].sort((a, b) => a - b);
    return row({
      case: "readyz",
      title: `${name} /readyz p99`,
      ...where,
      unit: "ms",
      better: "lower",
      direct: round(percentile(quiet, 99), 2),
      tunnel: round(percentile(loaded, 99), 2),
      directIs: "idle",
      tunnelIs: "under aggregate load",
      targets: [{ on: "tunnel", op: "<=", value: 100 }],
      details: { samplesUnderLoad: loaded.length, maxMs: round(loaded.at(-1) ?? 0, 2) },
    });
  });
  return { result, rows };
}
