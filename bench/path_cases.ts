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

/** A knp ÷ upstream target, on the default link's rows only (issue 14's targets). */
function vsUpstream(ctx: CaseContext, op: ">=" | "<=", value: number): Target | undefined {
  return ctx.link.default ? { on: "upstream", op, value } : undefined;
}

/** One 10 ms CPU clock tick per GiB of `bytes`. */
const tick = (bytes: number) => round(0.01 / (bytes / GiB), 2);

const sum = (o: Record<string, number>) => round(Object.values(o).reduce((a, b) => a + b, 0), 2);

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
  const tunnelCpu = cpuPerGiB(pids, c1, bytes);
  ctx.add(row({
    case: c,
    title: `1 conn ${c}`,
    ...ctx.where,
    unit: "MB/s",
    better: "higher",
    direct: mbps(d),
    tunnel: mbps(t),
    targets: [
      c === "download" ? downloadTarget(ctx.where.frontend, ctx.link, ctx.fastLink) : undefined,
      vsUpstream(ctx, ">=", 1.5),
    ],
    details: {
      bytes,
      directSeconds: round(d.seconds, 3),
      tunnelSeconds: round(t.seconds, 3),
      directCpuSecondsPerGiB: directCpu,
      tunnelCpuSecondsPerGiB: tunnelCpu,
    },
  }));
  const proxy = { server: tunnelCpu.server!, agent: tunnelCpu.agent! };
  ctx.add(row({
    case: "cpu",
    title: `CPU s per GiB, 1 conn ${c}`,
    ...ctx.where,
    unit: "s/GiB",
    better: "lower",
    directIs: "client + backend (direct path)",
    tunnelIs: "server + agent",
    // CPU time moves in 10 ms clock ticks: a share under one tick is reported as one.
    direct: Math.max(sum(directCpu), tick(bytes)),
    tunnel: Math.max(sum(proxy), tick(bytes)),
    targets: [vsUpstream(ctx, "<=", 1)],
    details: { direct: directCpu, tunnel: tunnelCpu },
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
    targets: [vsUpstream(ctx, ">=", 1.5)],
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
      targets: [vsUpstream(ctx, "<=", 1)],
      details: { direct: d, tunnel: t },
    }));
  }
  await loadedEchoCase(ctx);
}

/** Echo p99 on one connection while N others download as fast as they can. */
async function loadedEchoCase(ctx: CaseContext): Promise<void> {
  const { client, ports, settings } = ctx;
  const run = (via: (port: number) => ConnTarget) =>
    client.call<LatencySummary>({
      op: "loadedEcho",
      echoTarget: via(ports.echo),
      loadTarget: via(ports.source),
      loaders: settings.loadedEchoConns,
      warmupMs: settings.isolationWarmupMs,
      windowMs: settings.loadedEchoMs,
    });
  const d = await run(ctx.direct);
  const t = await run(ctx.via);
  ctx.add(row({
    case: "echo",
    title: `32 B echo p99 while ${settings.loadedEchoConns} conns download`,
    ...ctx.where,
    unit: "µs",
    better: "lower",
    direct: d.p99,
    tunnel: t.p99,
    targets: [vsUpstream(ctx, "<=", 1)],
    details: { direct: d, tunnel: t },
  }));
}

async function dialCase(ctx: CaseContext): Promise<void> {
  const { client, ports, settings } = ctx;
  type DialResult = LatencySummary & { perSecond: number };
  // The Go konnectivity-client drops data that arrives before it has registered the connection
  // (a server-first backend's banner races its DIAL_RSP handling and the tunnel is closed): it
  // sends one byte to the echo backend and waits for it instead.
  const send = client.kind === "go";
  const port = send ? ports.echo : ports.banner;
  const run = (target: ConnTarget, concurrency: number, count = settings.dialCount) =>
    client.call<DialResult>({ op: "dial", target, count, concurrency, send });
  // Unmeasured dials each way first: the rows then compare servers that have dialed before (a
  // JIT-compiled server runs its first ~1,000 dials in code V8 is still optimizing: measured
  // after 200 of them, knp's server + agent spent ~0.9 ms CPU per dial, after 1,000 ~0.5 ms; a
  // Go server has no such phase), and every stack meets a client that is equally warm (one
  // client process serves the stacks in turn, so without it the first stack measured would also
  // pay for the client's warm-up). The cold round is kept in the row's details.
  await run(ctx.direct(port), settings.dialConcurrency, settings.dialWarmup);
  const cold = await run(ctx.via(port), 1);
  await run(ctx.via(port), settings.dialConcurrency, settings.dialWarmup);
  const ds = await run(ctx.direct(port), 1);
  const ts = await run(ctx.via(port), 1);
  const dc = await run(ctx.direct(port), settings.dialConcurrency);
  const tc = await run(ctx.via(port), settings.dialConcurrency);
  const common = { case: "dial", ...ctx.where };
  for (const p of ["p50", "p99"] as const) {
    ctx.add(row({
      ...common,
      title: `dial (connect + first byte) ${p}, sequential`,
      unit: "µs",
      better: "lower",
      direct: ds[p],
      tunnel: ts[p],
      targets: [vsUpstream(ctx, "<=", 1)],
      details: { direct: ds, tunnel: ts, tunnelCold: cold },
    }));
  }
  const perSecond = {
    ...common,
    unit: "dials/s",
    better: "higher",
    targets: [vsUpstream(ctx, ">=", 1)],
  } as const;
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
        targets: [{ on: "ratio", op: ">=", value: 0.9 }, vsUpstream(ctx, ">=", 1.5)],
      }
      : {
        ...common,
        title: `isolation: ${cmd.healthy} healthy conns' echo p99`,
        unit: "µs",
        better: "lower",
        direct: mean(none, p99OrWindow),
        tunnel: mean(one, p99OrWindow),
        targets: [{ on: "ratio", op: "<=", value: 1.2 }],
      },
  ));
}

/** A window's echo p99; the window itself when no round trip completed within it (a floor). */
function p99OrWindow(r: IsolationResult): number {
  return r.latency && r.latency.samples > 0 ? r.latency.p99 : r.windowSeconds * 1e6;
}

/**
 * Targets on one-connection downloads against the direct path: the fast link through HTTP-CONNECT
 * ≥ 0.35× (issue 11), and knp's default configuration through the gRPC frontend ≥ 0.25× (issue 14).
 */
function downloadTarget(
  frontend: Frontend,
  link: Link,
  _fast: Link | undefined,
): Target | undefined {
  if (link.upstream) return undefined;
  if (frontend === "http-connect" && link.fast) return { on: "ratio", op: ">=", value: 0.35 };
  if (frontend === "grpc" && link.default) return { on: "ratio", op: ">=", value: 0.25 };
  return undefined;
}
