/**
 * knp's macro benchmark suite (`deno task bench`): every case measures the direct path (client
 * straight to the backend, the physical limit) and the tunnel path in the same run, and reports
 * both and their ratio (tunnel ÷ direct) as a table and as one JSON document.
 *
 * Process topology (all on loopback, all separate processes):
 * - this driver: starts everything, reads /proc, never carries benchmark traffic itself;
 * - `bench/backend.ts`: raw TCP source, sink, echo and banner backends;
 * - `bench/client.ts`: the measuring client, driven command by command over stdin/stdout;
 * - `server/main.ts` and `agent/main.ts`: real processes started by `tests/framework.ts`, the
 *   server's frontend on a UDS (`--mode=http-connect` or `--mode=grpc`), the agent over one link
 *   of `bench/links.ts`.
 *
 * Usage: `deno run -A bench/main.ts [--smoke] [--json FILE] [--cases a,b] [--links a,b]
 * [--frontends http-connect,grpc] [--idle-conns N] [--window-ms MS]`
 *
 * @module
 */

import { parseArgs } from "node:util";
import type { IsolationResult, TransferResult } from "./client.ts";
import { BackendProcess, ClientProcess, type Stack, startStack } from "./children.ts";
import type { Target as ConnTarget } from "./conns.ts";
import { detectLinks, type Link, LINKS } from "./links.ts";
import { type Row, row, table, type Target } from "./report.ts";
import { cpuSeconds, type LatencySummary, openFilesLimit, round, rssBytes } from "./wire.ts";

const MiB = 1 << 20;
const GiB = 1 << 30;

/** Sizes and counts of a run. */
interface Settings {
  bulkBytes: number;
  aggregateConns: number;
  aggregateBytesEach: number;
  echoIterations: number;
  echoWarmup: number;
  dialCount: number;
  dialConcurrency: number;
  idleConns: number;
  idleConcurrency: number;
  isolationHealthy: number;
  isolationWarmupMs: number;
  isolationWindowMs: number;
  /** How long the stalled connection is read after the window to see whether it was ended. */
  isolationDrainMs: number;
  warmupBytes: number;
}

const FULL: Settings = {
  bulkBytes: GiB,
  aggregateConns: 100,
  aggregateBytesEach: 10 * MiB,
  echoIterations: 2000,
  echoWarmup: 200,
  dialCount: 200,
  dialConcurrency: 10,
  idleConns: 10_000,
  idleConcurrency: 100,
  isolationHealthy: 50,
  isolationWarmupMs: 1_000,
  isolationWindowMs: 5_000,
  isolationDrainMs: 1_000,
  warmupBytes: 64 * MiB,
};

const SMOKE: Settings = {
  bulkBytes: 8 * MiB,
  aggregateConns: 10,
  aggregateBytesEach: 256 * 1024,
  echoIterations: 50,
  echoWarmup: 10,
  dialCount: 20,
  dialConcurrency: 5,
  idleConns: 200,
  idleConcurrency: 50,
  isolationHealthy: 10,
  isolationWarmupMs: 50,
  isolationWindowMs: 200,
  isolationDrainMs: 100,
  warmupBytes: 1 * MiB,
};

/** Case families, in run order. */
const CASES = ["download", "upload", "aggregate", "echo", "dial", "isolation", "idle"] as const;
type CaseName = typeof CASES[number];
const FRONTENDS = ["http-connect", "grpc"] as const;
type Frontend = typeof FRONTENDS[number];

const HELP = `Usage: deno run -A bench/main.ts [options]

  --smoke              tiny sizes and few iterations (a CI check that the suite works; ~30 s)
  --json FILE          write the JSON document to FILE instead of stdout
  --cases a,b          only these cases: ${CASES.join(", ")}
  --links a,b          only these agent links (bench/links.ts): ${
  LINKS.map((l) => l.name).join(", ")
}
  --frontends a,b      only these frontends: ${FRONTENDS.join(", ")}
  --idle-conns N       idle connections of the idle case (default 10000, smoke 200)
  --window-ms MS       each measuring window of the isolation case (default 5000, smoke 200)
  -h, --help           this text
`;

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));
const encoder = new TextEncoder();
const progress = (line: string) => writeAll(Deno.stderr, `[bench] ${line}\n`);
/** Prints to stdout (the table and the JSON document). */
const print = (text: string) => writeAll(Deno.stdout, text + "\n");

function writeAll(to: { writeSync(p: Uint8Array): number }, text: string): void {
  let bytes = encoder.encode(text);
  while (bytes.byteLength > 0) bytes = bytes.subarray(to.writeSync(bytes));
}

function list<T extends string>(value: string | undefined, all: readonly T[], what: string): T[] {
  if (value === undefined) return [...all];
  const picked = value.split(",").map((s) => s.trim()).filter(Boolean);
  for (const p of picked) {
    if (!all.includes(p as T)) throw new Error(`unknown ${what} ${p} (known: ${all.join(", ")})`);
  }
  return picked as T[];
}

async function machine(): Promise<Record<string, unknown>> {
  const cpuinfo = await Deno.readTextFile("/proc/cpuinfo").catch(() => "");
  const meminfo = await Deno.readTextFile("/proc/meminfo").catch(() => "");
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

/** RSS of `pids` once it stops moving (≤0.5% between samples 250 ms apart, 6 s at most). */
async function settledRss(pids: number[]): Promise<number[]> {
  await sleep(500);
  let last = pids.map(rssBytes);
  for (let i = 0; i < 22; i++) {
    await sleep(250);
    const cur = pids.map(rssBytes);
    const stable = cur.every((v, j) => Math.abs(v - last[j]!) <= 0.005 * last[j]!);
    last = cur;
    if (stable) break;
  }
  return last;
}

async function main(): Promise<number> {
  const { values } = parseArgs({
    options: {
      smoke: { type: "boolean", default: false },
      json: { type: "string" },
      cases: { type: "string" },
      links: { type: "string" },
      frontends: { type: "string" },
      "idle-conns": { type: "string" },
      "window-ms": { type: "string" },
      help: { type: "boolean", short: "h", default: false },
    },
    strict: true,
    allowPositionals: false,
  });
  if (values.help) {
    print(HELP);
    return 0;
  }
  const settings: Settings = { ...(values.smoke ? SMOKE : FULL) };
  if (values["idle-conns"]) settings.idleConns = Number(values["idle-conns"]);
  if (values["window-ms"]) settings.isolationWindowMs = Number(values["window-ms"]);
  const cases = new Set<CaseName>(list(values.cases, CASES, "case"));
  const frontends = list(values.frontends, FRONTENDS, "frontend");
  const linkNames = list(values.links, LINKS.map((l) => l.name), "link");

  const started = new Date();
  const info = await machine();
  progress(`${info.cores} cores (${info.cpu}); deno ${info.deno}; commit ${info.commit}`);
  progress(String(info.note));

  const rows: Row[] = [];
  const errors: { case: string; frontend: string; link: string; error: string }[] = [];
  const linkStatus = await detectLinks(LINKS.filter((l) => linkNames.includes(l.name)));
  for (const s of linkStatus) {
    progress(`link ${s.link.name}: ${s.available ? "available" : `skipped (${s.reason})`}`);
  }
  const links = linkStatus.filter((s) => s.available).map((s) => s.link);
  const fastLink = links.find((l) => l.fast);

  // Only caps the idle count when the open-files limit is lower than it needs.
  const fdLimit = openFilesLimit();
  const idleWanted = settings.idleConns;
  settings.idleConns = Math.max(1, Math.min(idleWanted, fdLimit - 256));
  if (settings.idleConns < idleWanted) {
    progress(`idle: open-files limit ${fdLimit} allows ${settings.idleConns} of ${idleWanted}`);
  }

  const attempt = async (
    what: { case: string; frontend: string; link: string },
    body: () => Promise<void>,
  ) => {
    try {
      await body();
    } catch (err) {
      const error = err instanceof Error ? err.message : String(err);
      progress(`FAILED ${what.case} (${what.frontend}, ${what.link}): ${error}`);
      errors.push({ ...what, error });
    }
  };
  const add = (r: Row) => {
    rows.push(r);
    progress(
      `${r.title} [${r.frontend}, ${r.link}]: direct ${round(r.direct, 1)} ${r.unit}, ` +
        `tunnel ${round(r.tunnel, 1)} ${r.unit}, ratio ${r.ratio.toFixed(3)}` +
        (r.met === undefined ? "" : r.met ? " (target met)" : " (target NOT met)"),
    );
  };

  {
    await using backend = await BackendProcess.start();
    await using client = ClientProcess.start();
    const ports = backend.ports;
    const direct = (port: number): ConnTarget => ({ via: "direct", port });

    for (const link of links) {
      for (const frontend of frontends) {
        const pathCases = CASES.filter((c) => c !== "idle" && cases.has(c));
        if (pathCases.length === 0) continue;
        const where = { frontend, link: link.name };
        let stack: Stack;
        try {
          stack = await startStack(link, frontend);
        } catch (err) {
          errors.push({ case: "stack", ...where, error: String(err) });
          progress(`FAILED to start ${frontend} server + ${link.name} agent: ${err}`);
          continue;
        }
        await using _stack = stack;
        const via = (port: number): ConnTarget => ({
          via: frontend,
          udsPath: stack.server.udsPath,
          port,
        });
        const pids = {
          client: client.pid,
          server: stack.server.process.child.pid,
          agent: stack.agent.process.child.pid,
          backend: backend.pid,
        };
        progress(`${frontend} frontend over the ${link.name} link: warming up`);
        await attempt({ case: "warmup", ...where }, async () => {
          for (const target of [direct(ports.source), via(ports.source)]) {
            await client.call({
              op: "transfer",
              target,
              direction: "download",
              bytes: settings.warmupBytes,
            });
          }
          await client.call({ op: "echo", target: via(ports.echo), iterations: 100, warmup: 0 });
        });

        for (const c of pathCases) {
          await attempt({ case: c, ...where }, async () => {
            switch (c) {
              case "download":
              case "upload": {
                const port = c === "download" ? ports.source : ports.sink;
                const bytes = settings.bulkBytes;
                const cmd = { op: "transfer", direction: c, bytes } as const;
                const c0 = cpuNow(pids);
                const d = await client.call<TransferResult>({ ...cmd, target: direct(port) });
                const directCpu = cpuPerGiB(
                  { client: pids.client, backend: pids.backend },
                  c0,
                  bytes,
                );
                const c1 = cpuNow(pids);
                const t = await client.call<TransferResult>({ ...cmd, target: via(port) });
                add(row({
                  case: c,
                  title: `1 conn ${c}`,
                  ...where,
                  unit: "MB/s",
                  better: "higher",
                  direct: mbps(d),
                  tunnel: mbps(t),
                  target: c === "download" ? downloadTarget(frontend, link, fastLink) : undefined,
                  details: {
                    bytes,
                    directSeconds: round(d.seconds, 3),
                    tunnelSeconds: round(t.seconds, 3),
                    directCpuSecondsPerGiB: directCpu,
                    tunnelCpuSecondsPerGiB: cpuPerGiB(pids, c1, bytes),
                  },
                }));
                return;
              }
              case "aggregate": {
                const cmd = {
                  op: "aggregate",
                  direction: "download",
                  conns: settings.aggregateConns,
                  bytesEach: settings.aggregateBytesEach,
                } as const;
                const d = await client.call<TransferResult>({
                  ...cmd,
                  target: direct(ports.source),
                });
                const c1 = cpuNow(pids);
                const t = await client.call<TransferResult>({ ...cmd, target: via(ports.source) });
                add(row({
                  case: c,
                  title: `${cmd.conns} conns download (aggregate)`,
                  ...where,
                  unit: "MB/s",
                  better: "higher",
                  direct: mbps(d),
                  tunnel: mbps(t),
                  details: {
                    bytes: t.bytes,
                    tunnelCpuSecondsPerGiB: cpuPerGiB(pids, c1, t.bytes),
                  },
                }));
                return;
              }
              case "echo": {
                const cmd = {
                  op: "echo",
                  iterations: settings.echoIterations,
                  warmup: settings.echoWarmup,
                } as const;
                const d = await client.call<LatencySummary>({ ...cmd, target: direct(ports.echo) });
                const t = await client.call<LatencySummary>({ ...cmd, target: via(ports.echo) });
                for (const p of ["p50", "p99"] as const) {
                  add(row({
                    case: c,
                    title: `32 B echo round trip ${p}`,
                    ...where,
                    unit: "µs",
                    better: "lower",
                    direct: d[p],
                    tunnel: t[p],
                    details: { direct: d, tunnel: t },
                  }));
                }
                return;
              }
              case "dial": {
                type DialResult = LatencySummary & { perSecond: number };
                const run = (target: ConnTarget, concurrency: number) =>
                  client.call<DialResult>({
                    op: "dial",
                    target,
                    count: settings.dialCount,
                    concurrency,
                  });
                const ds = await run(direct(ports.banner), 1);
                const ts = await run(via(ports.banner), 1);
                const dc = await run(direct(ports.banner), settings.dialConcurrency);
                const tc = await run(via(ports.banner), settings.dialConcurrency);
                const common = { case: c, ...where };
                for (const p of ["p50", "p99"] as const) {
                  add(row({
                    ...common,
                    title: `dial (connect + first byte) ${p}, sequential`,
                    unit: "µs",
                    better: "lower",
                    direct: ds[p],
                    tunnel: ts[p],
                    details: { direct: ds, tunnel: ts },
                  }));
                }
                add(row({
                  ...common,
                  title: "dials per second, sequential",
                  unit: "dials/s",
                  better: "higher",
                  direct: ds.perSecond,
                  tunnel: ts.perSecond,
                }));
                add(row({
                  ...common,
                  title: `dials per second, ${settings.dialConcurrency} concurrent`,
                  unit: "dials/s",
                  better: "higher",
                  direct: dc.perSecond,
                  tunnel: tc.perSecond,
                  details: { direct: dc, tunnel: tc },
                }));
                return;
              }
              case "isolation": {
                for (const mode of ["throughput", "echo"] as const) {
                  const cmd = {
                    op: "isolation",
                    healthyTarget: via(mode === "throughput" ? ports.source : ports.echo),
                    stallTarget: via(ports.source),
                    mode,
                    healthy: settings.isolationHealthy,
                    warmupMs: settings.isolationWarmupMs,
                    windowMs: settings.isolationWindowMs,
                    drainMs: settings.isolationDrainMs,
                  } as const;
                  // A B B A: none stalled, stalled, stalled, none stalled; each side is the mean
                  // of its two windows, so a drift over the run weighs on both alike.
                  const runs: IsolationResult[] = [];
                  for (const stalled of [false, true, true, false]) {
                    runs.push(await client.call<IsolationResult>({ ...cmd, stalled }));
                  }
                  const none = [runs[0]!, runs[3]!];
                  const one = [runs[1]!, runs[2]!];
                  const mean = (rs: IsolationResult[], f: (r: IsolationResult) => number) =>
                    rs.reduce((a, r) => a + f(r), 0) / rs.length;
                  const common = {
                    case: c,
                    ...where,
                    directIs: "tunnel, none stalled",
                    tunnelIs: "tunnel, 1 reader stalled (means of 2 windows each, run A B B A)",
                    details: { none, stalled: one },
                  };
                  if (mode === "throughput") {
                    add(row({
                      ...common,
                      title: `isolation: ${cmd.healthy} healthy conns' throughput`,
                      unit: "MB/s",
                      better: "higher",
                      direct: mean(none, (r) => r.mbPerSecond!),
                      tunnel: mean(one, (r) => r.mbPerSecond!),
                      target: { on: "ratio", op: ">=", value: 0.9 },
                    }));
                  } else {
                    add(row({
                      ...common,
                      title: `isolation: ${cmd.healthy} healthy conns' echo p99`,
                      unit: "µs",
                      better: "lower",
                      direct: mean(none, (r) => r.latency!.p99),
                      tunnel: mean(one, (r) => r.latency!.p99),
                      target: { on: "ratio", op: "<=", value: 1.2 },
                    }));
                  }
                }
                return;
              }
            }
          });
        }
      }
    }
  }

  if (cases.has("idle") && links.length > 0) {
    await attempt({ case: "idle", frontend: "http-connect", link: "*" }, async () => {
      await idleCase(links, settings, add);
    });
  }

  const document = {
    schema: "knp-bench/1",
    started: started.toISOString(),
    seconds: round((Date.now() - started.getTime()) / 1000, 1),
    smoke: values.smoke,
    machine: info,
    settings,
    idleConnsRequested: idleWanted,
    links: linkStatus.map((s) => ({
      name: s.link.name,
      description: s.link.description,
      serverArgs: s.link.serverArgs,
      agentArgs: s.link.agentArgs,
      available: s.available,
      ...(s.reason ? { reason: s.reason } : {}),
    })),
    results: rows,
    errors,
  };
  print(
    `\nknp bench — ${info.cores} cores (${info.cpu}), deno ${info.deno}, ` +
      `commit ${info.commit}${values.smoke ? ", SMOKE sizes (numbers mean nothing)" : ""}`,
  );
  print(`${info.note}`);
  print(
    "direct = client straight to the backend; tunnel = client → server frontend (UDS) → agent " +
      "link → agent → backend; ratio = tunnel ÷ direct.\n",
  );
  print(table(rows));
  for (const s of linkStatus.filter((s) => !s.available)) {
    print(`\nlink ${s.link.name} skipped: ${s.reason}`);
  }
  for (const e of errors) print(`\nFAILED ${e.case} (${e.frontend}, ${e.link}): ${e.error}`);
  const json = JSON.stringify(document, null, 2);
  if (values.json) await Deno.writeTextFile(values.json, json + "\n");
  else print("\n" + json);
  return errors.length === 0 ? 0 : 1;
}

/** The issue's targets on one-connection downloads. */
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

/** RSS growth; RSS moves in 4 KiB pages, so growth under one page is reported as one page. */
function grew(before: number, after: number): number {
  return Math.max(4096, after - before);
}

/**
 * RSS per idle connection. Direct: a fresh client and a fresh backend process holding N TCP
 * connections between them (the floor: two processes each holding one end). Tunnel, per link: a
 * fresh HTTP-CONNECT server and agent while the client holds N tunneled connections to the
 * backend; (after − before) ÷ N of the server and of the agent.
 */
async function idleCase(links: Link[], settings: Settings, add: (r: Row) => void): Promise<void> {
  const n = settings.idleConns;
  await using backend = await BackendProcess.start();
  await using client = ClientProcess.start();
  const open = async (target: ConnTarget, count: number) => {
    const r = await client.call<{ opened: number; error?: string; seconds: number }>({
      op: "idleOpen",
      target,
      count,
      concurrency: settings.idleConcurrency,
    });
    if (r.error) {
      await client.call({ op: "idleClose" });
      throw new Error(`opened ${r.opened} of ${count} idle connections: ${r.error}`);
    }
    return r;
  };
  const mib = (b: number) => round(b / MiB, 1);

  // Direct floor.
  const target = { via: "direct", port: backend.ports.hold } as const;
  await open(target, 50);
  await client.call({ op: "idleClose" });
  const [c0, b0] = await settledRss([client.pid, backend.pid]);
  const opened = await open(target, n);
  const [c1, b1] = await settledRss([client.pid, backend.pid]);
  await client.call({ op: "idleClose" });
  const directPair = (grew(c0!, c1!) + grew(b0!, b1!)) / n;
  const directOne = directPair / 2;
  progress(
    `idle direct: ${n} conns in ${round(opened.seconds, 2)} s, ` +
      `client ${mib(c0!)}→${mib(c1!)} MiB, backend ${mib(b0!)}→${mib(b1!)} MiB`,
  );
  await sleep(1_000);

  for (const link of links) {
    await using stack = await startStack(link, "http-connect");
    const via = { via: "http-connect", udsPath: stack.server.udsPath, port: backend.ports.hold };
    const pids = [stack.server.process.child.pid, stack.agent.process.child.pid];
    await open(via as ConnTarget, 50);
    await client.call({ op: "idleClose" });
    await sleep(1_000);
    const [s0, a0] = await settledRss(pids);
    const t = await open(via as ConnTarget, n);
    const [s1, a1] = await settledRss(pids);
    await client.call({ op: "idleClose" });
    const [s2, a2] = await settledRss(pids);
    const details = {
      conns: n,
      openSeconds: round(t.seconds, 2),
      serverMiB: { before: mib(s0!), holding: mib(s1!), afterClose: mib(s2!) },
      agentMiB: { before: mib(a0!), holding: mib(a1!), afterClose: mib(a2!) },
      directMiB: { client: [mib(c0!), mib(c1!)], backend: [mib(b0!), mib(b1!)] },
    };
    const common = {
      case: "idle",
      frontend: "http-connect",
      link: link.name,
      unit: "B/conn",
      better: "lower" as const,
      details,
    };
    const server = grew(s0!, s1!) / n;
    const agent = grew(a0!, a1!) / n;
    [
      row({
        ...common,
        title: `${n} idle conns: server + agent RSS`,
        directIs: "client + backend RSS (direct)",
        tunnelIs: "server + agent RSS",
        direct: directPair,
        tunnel: server + agent,
        target: { on: "tunnel", op: "<=", value: 16 * 1024 },
      }),
      row({
        ...common,
        title: `${n} idle conns: server RSS`,
        directIs: "one direct end",
        tunnelIs: "server",
        direct: directOne,
        tunnel: server,
      }),
      row({
        ...common,
        title: `${n} idle conns: agent RSS`,
        directIs: "one direct end",
        tunnelIs: "agent",
        direct: directOne,
        tunnel: agent,
      }),
    ].forEach(add);
  }
}

if (import.meta.main) Deno.exit(await main());
