// deno-lint-ignore-file no-console -- the chaos CLI reports on stdout
/**
 * `deno task chaos [--seed N] [--faults N] [--workers N] [--max-bytes N] [--deadline-ms N]`: one
 * seeded chaos run against real processes (see run.ts); exits 1 on a violated invariant and
 * prints the replay command.
 *
 * @module
 */

import { parseArgs } from "node:util";
import { formatReport, replayCommand } from "./run_report.ts";
import { runChaos } from "./run.ts";

const NAMES = ["seed", "faults", "workers", "max-bytes", "deadline-ms"] as const;
const { values: args } = parseArgs({
  args: Deno.args,
  options: Object.fromEntries(NAMES.map((n) => [n, { type: "string" as const }])),
}) as { values: Partial<Record<(typeof NAMES)[number], string>> };
const seed = args.seed !== undefined ? Number(args.seed) : Math.floor(Math.random() * 1e9);
const extra = NAMES.slice(1)
  .filter((k) => args[k] !== undefined).map((k) => `--${k} ${args[k]}`).join(" ");
console.log(`chaos: seed ${seed} (replay: ${replayCommand(seed, extra)})`);
const started = Date.now();
const report = await runChaos({
  seed,
  faults: Number(args.faults ?? 30),
  workers: Number(args.workers ?? 6),
  maxBytes: Number(args["max-bytes"] ?? 2 * 1048576),
  deadlineMs: Number(args["deadline-ms"] ?? 30_000),
  log: (line) => console.log(`[${((Date.now() - started) / 1000).toFixed(1)}s] ${line}`),
});
for (const line of formatReport(report, extra)) console.log(line);
Deno.exit(report.violations.length === 0 ? 0 : 1);
