/**
 * Formats a chaos run's report: outcome counts by frontend and kind, the invariants, RSS, and the
 * replay command of the seed.
 *
 * @module
 */

import type { ChaosReport } from "./run.ts";
import type { RssRow } from "./quiesce.ts";

/** The command that replays `seed` with the given extra arguments. */
export function replayCommand(seed: number, extra = ""): string {
  return `deno task chaos --seed ${seed}${extra ? " " + extra : ""}`;
}

/** Renders RSS rows as a small table. */
export function rssTable(rows: readonly RssRow[]): string[] {
  const lines = ["process   baseline     peak    final (MiB)"];
  for (const r of rows) {
    lines.push(
      `${r.process.padEnd(8)} ${String(r.baseline).padStart(9)} ${String(r.peak).padStart(8)} ${
        String(r.final).padStart(8)
      }`,
    );
  }
  return lines;
}

function outcomeTable(report: ChaosReport): string[] {
  const counts = new Map<string, Record<string, number>>();
  for (const o of report.outcomes) {
    const key = `${o.plan.frontend.padEnd(12)} ${o.plan.kind.padEnd(11)}`;
    const row = counts.get(key) ?? {};
    row[o.status] = (row[o.status] ?? 0) + 1;
    counts.set(key, row);
  }
  const lines = ["frontend     kind           exact   error cancel  VIOL"];
  for (const [key, row] of [...counts].sort()) {
    const cell = (s: string) => String(row[s] ?? 0).padStart(7);
    lines.push(
      `${key} ${cell("exact")} ${cell("error")} ${cell("cancelled")} ${cell("violation")}`,
    );
  }
  return lines;
}

function slowest(report: ChaosReport): string[] {
  const lines: string[] = [];
  for (const status of ["exact", "error", "cancelled"]) {
    const ops = report.outcomes.filter((o) => o.status === status).sort((a, b) => a.ms - b.ms);
    const last = ops.at(-1);
    if (last === undefined) continue;
    const p99 = ops[Math.floor(ops.length * 0.99)]?.ms ?? last.ms;
    lines.push(
      `slowest ${status}: ${last.ms} ms (${last.plan.kind} via ${last.plan.frontend}: ${
        last.detail.slice(0, 70)
      }), p99 ${p99} ms`,
    );
  }
  return lines;
}

/** The whole report as lines. */
export function formatReport(report: ChaosReport, extra = ""): string[] {
  const bytes = report.outcomes.filter((o) => o.status === "exact")
    .reduce((n, o) => n + o.plan.transfer.upLen + o.plan.transfer.downLen, 0);
  const kinds = new Map<string, number>();
  for (const f of report.faults) kinds.set(f.kind, (kinds.get(f.kind) ?? 0) + 1);
  const errors = new Map<string, number>();
  for (const o of report.outcomes.filter((o) => o.status === "error")) {
    const key = o.detail.replace(/\d+/g, "N").slice(0, 90);
    errors.set(key, (errors.get(key) ?? 0) + 1);
  }
  return [
    `seed ${report.seed}: ${report.outcomes.length} operations, ${
      (bytes / 1048576).toFixed(1)
    } MiB verified exact`,
    `faults: ${[...kinds].map(([k, n]) => `${k} ×${n}`).join(", ")}`,
    ...outcomeTable(report),
    ...slowest(report),
    "errors by message:",
    ...[...errors].sort((a, b) => b[1] - a[1]).slice(0, 12).map(([m, n]) => `  ${n} × ${m}`),
    `gauges after load: ${JSON.stringify(report.gauges)}`,
    ...rssTable(report.rss),
    ...report.warnings.map((w) => `warning (soft): ${w}`),
    ...(report.violations.length === 0 ? ["invariants: OK"] : [
      `VIOLATIONS (${report.violations.length}):`,
      ...report.violations.map((v) => `  ${v}`),
      `replay: ${replayCommand(report.seed, extra)}`,
    ]),
  ];
}
