/**
 * A short seeded chaos run (chaos/run.ts) against real server and agent processes: two agents
 * (gRPC link and WebSocket link, each through a faultable relay), both frontends, load with
 * checksummed transfers, resets, stalls and cancels, while agents are killed and frozen, links cut
 * and blackholed, and the server restarted. Every invariant the suite checks must hold; a failure
 * names the seed to replay with `deno task chaos --seed N --faults 6 --workers 4`.
 */

import assert from "node:assert/strict";
import { formatReport } from "../chaos/run_report.ts";
import { runChaos } from "../chaos/run.ts";

const SEED = 20261130;

Deno.test("chaos: a short seeded run keeps every invariant", async () => {
  const lines: string[] = [];
  const report = await runChaos({
    seed: SEED,
    faults: 6,
    workers: 4,
    maxBytes: 1 << 20,
    deadlineMs: 30_000,
    log: (line) => lines.push(line),
  });
  const text = [...lines, ...formatReport(report, "--faults 6 --workers 4")].join("\n");
  assert.deepEqual(report.violations, [], text);
  // The run must have exercised what it claims to: faults applied, exact bytes on both frontends.
  assert.equal(report.faults.length, 6);
  assert.ok(report.faults.some((f) => f.kind === "server-restart"), text);
  for (const frontend of ["grpc", "http-connect"]) {
    const exact = report.outcomes.filter((o) =>
      o.plan.frontend === frontend && o.status === "exact"
    );
    assert.ok(exact.length > 0, `no exact transfer via ${frontend}\n${text}`);
  }
});
