/**
 * The cases that compare one path with the other on a running stack: bulk transfer, aggregate
 * download, echo latency, dial rate and isolation. Each measures the direct path and the tunnel
 * path in turn and adds its rows.
 *
 * @module
 */

import type { IsolationResult, TransferResult } from "./client.ts";
import type { ClientProcess } from "./children.ts";
import type { Target as ConnTarget } from "./conns.ts";
import type { Link } from "./links.ts";
import { type Row, row, type Target } from "./report.ts";
import { type CaseName, type Frontend, GiB, type Settings } from "./settings.ts";
import type { BackendPorts, LatencySummary } from "./wire.ts";
import { cpuSeconds, round } from "./wire.ts";
import { type HealthPorts, withReadyzProbe } from "./readyz_probe.ts";

/** What a case needs: the client, the targets of both paths and where its rows go. */
export interface CaseContext {
  client: ClientProcess;
  ports: BackendPorts;
  /** Pids of the processes whose CPU is measured. */
  pids: Record<string, number>;
  where: { frontend: Frontend; link: string };
  link: Link;
  /** The fast link of this run, if any (for the download target). */
  fastLink: Link | undefined;
  settings: Settings;
  direct(port: number): ConnTarget;
  via(port: number): ConnTarget;
  add(r: Row): void;
  /** Health ports of the stack's server and agent (their `/readyz` is probed under load). */
  health?: HealthPorts;
}

/** Runs one case (not "idle", which needs stacks of its own). */
export async function runPathCase(c: Exclude<CaseName, "idle">, ctx: CaseContext): Promise<void> {
  switch (c) {
    case "download":
    case "upload":
      return await transferCase(c, ctx);
    case "aggregate":
      return await aggregateCase(ctx);
    case "echo":
      return await echoCase(ctx);
    case "dial":
      return await dialCase(ctx);
    case "isolation":
      for (const mode of ["throughput", "echo"] as const) await isolationCase(mode, ctx);
  }
}

const mbps = (t: TransferResult) => t.bytes / 1e6 / t.seconds;

/** CPU seconds used per GiB moved, by process, between two samples. */
function cpuPerGiB(
  pids: Record<string, number>,
  before: Record<string, number>,
  bytes: number,
): Record<string, number> {
  const out: Record<string, number> = {};
  for (const [name, pid] of Object.entries(pids)) {
    out[name] = round((cpuSeconds(pid) - before[name]!) / (bytes / GiB), 2);
  }
  return out;
}

function cpuNow(pids: Record<string, number>): Record<string, number> {
  return Object.fromEntries(Object.entries(pids).map(([k, pid]) => [k, cpuSeconds(pid)]));
}

async function transferCase(c: "download" | "upload", ctx: CaseContext): Promise<void> {
  const { client, pids, ports } = ctx;
  const port = c === "download" ? ports.source : ports.sink;
  const bytes = ctx.settings.bulkBytes;
  const cmd = { op: "transfer", direction: c, bytes } as const;
  const c0 = cpuNow(pids);
  const d = await client.call<TransferResult>({ ...cmd, target: ctx.direct(port) });
  const directCpu = cpuPerGiB({ client: pids.client!, backend: pids.backend! }, c0, bytes);
  const c1 = cpuNow(pids);
  const t = await client.call<TransferResult>({ ...cmd, target: ctx.via(port) });
  ctx.add(row({
    case: c,
    title: `1 conn ${c}`,
    ...ctx.where,
    unit: "MB/s",
    better: "higher",
    direct: mbps(d),
    tunnel: mbps(t),
    target: c === "download"
      ? downloadTarget(ctx.where.frontend, ctx.link, ctx.fastLink)
      : undefined,
    details: {
      bytes,
      directSeconds: round(d.seconds, 3),
      tunnelSeconds: round(t.seconds, 3),
      directCpuSecondsPerGiB: directCpu,
      tunnelCpuSecondsPerGiB: cpuPerGiB(pids, c1, bytes),
    },
  }));
}

async function aggregateCase(ctx: CaseContext): Promise<void> {
  const { client, pids, ports, settings } = ctx;
  const cmd = {
    op: "aggregate",
    direction: "download",
    conns: settings.aggregateConns,
    bytesEach: settings.aggregateBytesEach,
  } as const;
  const d = await client.call<TransferResult>({ ...cmd, target: ctx.direct(ports.source) });
  const c1 = cpuNow(pids);
  // /readyz of the server and the agent is asked back to back while the tunnel is loaded.
  const { result: t, rows } = await withReadyzProbe(
    ctx.health ?? {},
    ctx.where,
    () => client.call<TransferResult>({ ...cmd, target: ctx.via(ports.source) }),
  );
  for (const r of rows) ctx.add(r);
  ctx.add(row({
    case: "aggregate",
    title: `${cmd.conns} conns download (aggregate)`,
    ...ctx.where,
    unit: "MB/s",
    better: "higher",
    direct: mbps(d),
    tunnel: mbps(t),
    details: { bytes: t.bytes, tunnelCpuSecondsPerGiB: cpuPerGiB(pids, c1, t.bytes) },
  }));
}

async function echoCase(ctx: CaseContext): Promise<void> {
  const { client, ports, settings } = ctx;
  const cmd = {
    op: "echo",
    iterations: settings.echoIterations,
    warmup: settings.echoWarmup,
  } as const;
  const d = await client.call<LatencySummary>({ ...cmd, target: ctx.direct(ports.echo) });
  const t = await client.call<LatencySummary>({ ...cmd, target: ctx.via(ports.echo) });
  for (const p of ["p50", "p99"] as const) {
    ctx.add(row({
      case: "echo",
      title: `32 B echo round trip ${p}`,
      ...ctx.where,
      unit: "µs",
      better: "lower",
      direct: d[p],
      tunnel: t[p],
      details: { direct: d, tunnel: t },
    }));
  }
}

async function dialCase(ctx: CaseContext): Promise<void> {
  const { client, ports, settings } = ctx;
  type DialResult = LatencySummary & { perSecond: number };
  const run = (target: ConnTarget, concurrency: number) =>
    client.call<DialResult>({ op: "dial", target, count: settings.dialCount, concurrency });
  const ds = await run(ctx.direct(ports.banner), 1);
  const ts = await run(ctx.via(ports.banner), 1);
  const dc = await run(ctx.direct(ports.banner), settings.dialConcurrency);
  const tc = await run(ctx.via(ports.banner), settings.dialConcurrency);
  const common = { case: "dial", ...ctx.where };
  for (const p of ["p50", "p99"] as const) {
    ctx.add(row({
      ...common,
      title: `dial (connect + first byte) ${p}, sequential`,
      unit: "µs",
      better: "lower",
      direct: ds[p],
      tunnel: ts[p],
      details: { direct: ds, tunnel: ts },
    }));
  }
  const perSecond = { ...common, unit: "dials/s", better: "higher" } as const;
  ctx.add(row({
    ...perSecond,
    title: "dials per second, sequential",
    direct: ds.perSecond,
    tunnel: ts.perSecond,
  }));
  ctx.add(row({
    ...perSecond,
    title: `dials per second, ${settings.dialConcurrency} concurrent`,
    direct: dc.perSecond,
    tunnel: tc.perSecond,
    details: { direct: dc, tunnel: tc },
  }));
}

async function isolationCase(mode: "throughput" | "echo", ctx: CaseContext): Promise<void> {
  const { ports, settings } = ctx;
  const cmd = {
    op: "isolation",
    healthyTarget: ctx.via(mode === "throughput" ? ports.source : ports.echo),
    stallTarget: ctx.via(ports.source),
    mode,
    healthy: settings.isolationHealthy,
    warmupMs: settings.isolationWarmupMs,
    windowMs: settings.isolationWindowMs,
    drainMs: settings.isolationDrainMs,
  } as const;
  // A B B A: none stalled, stalled, stalled, none stalled; each side is the mean of its two
  // windows, so a drift over the run weighs on both alike.
  const runs: IsolationResult[] = [];
  for (const stalled of [false, true, true, false]) {
    runs.push(await ctx.client.call<IsolationResult>({ ...cmd, stalled }));
  }
  const none = [runs[0]!, runs[3]!];
  const one = [runs[1]!, runs[2]!];
  const mean = (rs: IsolationResult[], f: (r: IsolationResult) => number) =>
    rs.reduce((a, r) => a + f(r), 0) / rs.length;
  const common = {
    case: "isolation",
    ...ctx.where,
    directIs: "tunnel, none stalled",
    tunnelIs: "tunnel, 1 reader stalled (means of 2 windows each, run A B B A)",
    details: { none, stalled: one },
  };
  ctx.add(row(
    mode === "throughput"
      ? {
        ...common,
        title: `isolation: ${cmd.healthy} healthy conns' throughput`,
        unit: "MB/s",
        better: "higher",
        direct: mean(none, (r) => r.mbPerSecond!),
        tunnel: mean(one, (r) => r.mbPerSecond!),
        target: { on: "ratio", op: ">=", value: 0.9 },
      }
      : {
        ...common,
        title: `isolation: ${cmd.healthy} healthy conns' echo p99`,
        unit: "µs",
        better: "lower",
        direct: mean(none, (r) => r.latency!.p99),
        tunnel: mean(one, (r) => r.latency!.p99),
        target: { on: "ratio", op: "<=", value: 1.2 },
      },
  ));
}

/** The targets on one-connection downloads. */
function downloadTarget(
  frontend: Frontend,
  link: Link,
  fast: Link | undefined,
): Target | undefined {
  if (frontend === "http-connect") {
    if (link.fast) return { on: "ratio", op: ">=", value: 0.35 };
    if (!fast && link.name === "grpc") {
      return {
        on: "ratio",
        op: ">=",
        value: 0.35,
        note: "the fast-link target, checked on the grpc link while no fast link is available",
      };
    }
  }
  if (frontend === "grpc" && link.name === "grpc") return { on: "ratio", op: ">=", value: 0.10 };
  return undefined;
}
