// deno-lint-ignore-file no-console -- the soak CLI reports on stdout
/**
 * `deno task soak [--minutes N] [--interval S] [--workers N] [--max-bytes N] [--out FILE]`:
 * churn (chaos/ops.ts operations, no process faults) over both frontends and both agent links for
 * N minutes (default 60): two clusters, one per frontend (gRPC and HTTP-CONNECT on a UDS), each
 * with an agent on the gRPC link and one on the WebSocket link. Every S seconds (default 10) the
 * RSS of the six processes is appended to a CSV file; the end prints a small table of the curve
 * and checks quiescence (gauges and endpoint connections back to 0).
 *
 * @module
 */

import { parseArgs } from "node:util";
import { type ChaosBackend, startChaosBackend } from "./backend.ts";
import { Cluster } from "./cluster.ts";
import { type OpEnv, type Outcome, planOp, runOp } from "./ops.ts";
import { Prng } from "./prng.ts";
import { quiesce } from "./quiesce.ts";
import { rssTable } from "./run_report.ts";

const NAMES = ["minutes", "interval", "workers", "max-bytes", "out", "seed"] as const;

interface SoakOptions {
  minutes: number;
  intervalS: number;
  workers: number;
  maxBytes: number;
  seed: number;
  out: string;
}

function options(): SoakOptions {
  const { values: args } = parseArgs({
    args: Deno.args,
    options: Object.fromEntries(NAMES.map((n) => [n, { type: "string" as const }])),
  }) as { values: Partial<Record<(typeof NAMES)[number], string>> };
  const stamp = new Date().toISOString().replace(/[:.]/g, "-");
  return {
    minutes: Number(args.minutes ?? 60),
    intervalS: Number(args.interval ?? 10),
    workers: Number(args.workers ?? 3),
    maxBytes: Number(args["max-bytes"] ?? 256 * 1024),
    seed: Number(args.seed ?? 1),
    out: args.out ?? `/tmp/knp-soak-${stamp}.csv`,
  };
}

/** RSS samples of the clusters, appended to the CSV as they are taken. */
class Sampler {
  readonly rows: number[][] = [];
  readonly columns: string[];
  readonly baselines: Record<string, number>[];
  readonly peaks: Record<string, number>[];
  #started = Date.now();

  constructor(readonly clusters: [string, Cluster][], readonly out: string) {
    this.columns = clusters.flatMap(([n, c]) => Object.keys(c.rss()).map((p) => `${n}-${p}`));
    this.baselines = clusters.map(([, c]) => c.rss());
    this.peaks = clusters.map(([, c]) => c.rss());
  }

  async header(): Promise<void> {
    const head = ["seconds", "ops", "violations", ...this.columns].join(",");
    await Deno.writeTextFile(this.out, head + "\n");
  }

  async record(outcomes: readonly Outcome[]): Promise<void> {
    const rss = this.clusters.map(([, c]) => c.rss());
    rss.forEach((r, i) => {
      const peak = this.peaks[i] ?? {};
      for (const [k, v] of Object.entries(r)) peak[k] = Math.max(peak[k] ?? 0, v);
    });
    const seconds = Math.round((Date.now() - this.#started) / 1000);
    const violations = outcomes.filter((o) => o.status === "violation").length;
    const row = [seconds, outcomes.length, violations, ...rss.flatMap((r) => Object.values(r))];
    this.rows.push(row);
    await Deno.writeTextFile(this.out, row.join(",") + "\n", { append: true });
  }

  /** The curve, at most 13 rows evenly spaced. */
  table(): string[] {
    const step = Math.max(1, Math.ceil(this.rows.length / 12));
    const shown = this.rows.filter((_, i) => i % step === 0 || i === this.rows.length - 1);
    const pad = (v: string | number) => String(v).padStart(13);
    return [
      ["seconds", "ops", "viol", ...this.columns].map(pad).join(""),
      ...shown.map((row) => row.map(pad).join("")),
    ];
  }
}

async function churn(env: OpEnv, rng: Prng, end: number, outcomes: Outcome[], token: () => number) {
  while (Date.now() < end) {
    const outcome = await runOp(env, planOp(rng, token(), env.frontend(), env.maxBytes));
    outcomes.push(outcome);
    if (outcome.status === "violation") {
      console.log(
        `violation: op ${outcome.plan.transfer.token} ${outcome.plan.kind}: ${outcome.detail}`,
      );
    }
  }
}

async function soak(o: SoakOptions, backend: ChaosBackend, clusters: [string, Cluster][]) {
  const envOf = (c: Cluster): OpEnv => ({
    udsPath: c.udsPath,
    frontend: () => c.frontend,
    backend,
    deadlineMs: 30_000,
    maxBytes: o.maxBytes,
  });
  const sampler = new Sampler(clusters, o.out);
  const outcomes: Outcome[] = [];
  await sampler.header();
  await sampler.record(outcomes);
  console.log(`soak: ${o.minutes} min, RSS every ${o.intervalS} s to ${o.out}`);
  const end = Date.now() + o.minutes * 60_000;
  const rng = new Prng(o.seed);
  let token = 0;
  const load = clusters.flatMap(([, c]) =>
    Array.from(
      { length: o.workers },
      () => churn(envOf(c), new Prng(rng.fork()), end, outcomes, () => ++token),
    )
  );
  const timer = setInterval(() => sampler.record(outcomes), o.intervalS * 1000);
  await Promise.all(load);
  clearInterval(timer);
  await sampler.record(outcomes);
  for (const line of sampler.table()) console.log(line);
  let failed = outcomes.some((x) => x.status === "violation");
  for (const [i, [name, c]] of clusters.entries()) {
    const q = await quiesce(
      c,
      backend,
      envOf(c),
      sampler.baselines[i] ?? {},
      sampler.peaks[i] ?? {},
    );
    console.log(`${name} cluster:`);
    for (const line of [...rssTable(q.rss), ...q.violations, ...q.warnings]) {
      console.log(`  ${line}`);
    }
    if (q.violations.length > 0) failed = true;
  }
  const count = (s: string) => outcomes.filter((x) => x.status === s).length;
  console.log(
    `${outcomes.length} operations: ${count("exact")} exact, ${count("error")} error, ` +
      `${count("cancelled")} cancelled, ${count("violation")} violations; CSV: ${o.out}`,
  );
  return !failed;
}

async function main(): Promise<boolean> {
  const o = options();
  await using backend = startChaosBackend();
  await using grpc = await Cluster.start("grpc");
  await using http = await Cluster.start("http-connect");
  return await soak(o, backend, [["grpc", grpc], ["http", http]]);
}

if (import.meta.main) Deno.exit(await main() ? 0 : 1);
