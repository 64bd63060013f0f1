/**
 * Unit tests of the agent's drain (`drain.ts`) on a fake clock, and of `--knp-drain-timeout`.
 * The real-process rolling restart is tests/agent_drain_test.ts.
 *
 * @module
 */

import assert from "node:assert/strict";
import { fakeTimers } from "@knp/testing/fakes";
import { type Logger, nullLogger } from "@knp/core/log";
import {
  DEFAULT_DRAIN_TIMEOUT_MS,
  drainAgent,
  type DrainOutcome,
  type DrainTarget,
  validateAgentDrainOptions,
} from "./drain.ts";
import { parseAgentOptions } from "./options.ts";

function target(
  connections = 0,
): DrainTarget & { drains: number; connections: number; pendingDials: number } {
  return {
    connections,
    pendingDials: 0,
    size: 2,
    drains: 0,
    drain() {
      this.drains++;
    },
  };
}

/** Messages logged, in order. */
function messages(): { log: Logger; said: string[] } {
  const said: string[] = [];
  const log: Logger = {
    ...nullLogger,
    info: (m) => said.push(m),
    warn: (m) => said.push(m),
    with: () => log,
  };
  return { log, said };
}

/** Runs a drain and tracks whether it ended. */
function run(t: DrainTarget, timeoutMs: number, log: Logger = nullLogger) {
  const { clock, timers } = fakeTimers();
  let outcome: DrainOutcome | undefined;
  drainAgent(t, { timeoutMs, settleMs: 2_000, timers, logger: log }).then((o) => outcome = o);
  return { clock, outcome: () => outcome };
}

Deno.test("drain: an idle agent sends DRAIN and ends after the settle time", async () => {
  const t = target();
  const { log, said } = messages();
  const d = run(t, 25_000, log);
  assert.equal(t.drains, 1);
  await d.clock.tickAsync(1_900);
  assert.equal(d.outcome(), undefined, "a dial may still be in flight");
  await d.clock.tickAsync(200);
  assert.deepEqual(d.outcome(), { reason: "drained", open: 0 });
  assert.equal(said[0], "draining: sent DRAIN to every proxy server; serving open connections");
  assert.equal(said.at(-1), "drained: every connection finished; exiting");
});

Deno.test("drain: waits for open connections and for dials that arrive meanwhile", async () => {
  const t = target(2);
  const d = run(t, 25_000);
  await d.clock.tickAsync(10_000);
  assert.equal(d.outcome(), undefined, "connections are open");
  t.connections = 0;
  await d.clock.tickAsync(1_000);
  t.pendingDials = 1; // a server chose this agent before it read the DRAIN
  await d.clock.tickAsync(1_500);
  assert.equal(d.outcome(), undefined, "the dial restarted the settle time");
  t.pendingDials = 0;
  await d.clock.tickAsync(1_900);
  assert.equal(d.outcome(), undefined);
  await d.clock.tickAsync(300);
  assert.deepEqual(d.outcome(), { reason: "drained", open: 0 });
});

Deno.test("drain: the timeout ends a drain with connections still open", async () => {
  const t = target(3);
  const { log, said } = messages();
  const d = run(t, 5_000, log);
  await d.clock.tickAsync(4_800);
  assert.equal(d.outcome(), undefined);
  await d.clock.tickAsync(300);
  assert.deepEqual(d.outcome(), { reason: "timeout", open: 3 });
  assert.equal(said.at(-1), "drain timeout: exiting with connections still open");
});

Deno.test("drain: a timeout of 0 drains and never ends by itself (upstream's behaviour)", async () => {
  const t = target();
  const d = run(t, 0);
  await d.clock.tickAsync(3_600_000);
  assert.equal(t.drains, 1);
  assert.equal(d.outcome(), undefined);
});

Deno.test("--knp-drain-timeout: 25s by default, a duration >= 0", () => {
  const parsed = parseAgentOptions([], {});
  assert.ok(!("help" in parsed));
  assert.equal(parsed.options.knpDrainTimeout, DEFAULT_DRAIN_TIMEOUT_MS);
  const zero = parseAgentOptions(["--knp-drain-timeout=0"], {});
  assert.ok(!("help" in zero));
  assert.equal(zero.options.knpDrainTimeout, 0);
  validateAgentDrainOptions({ knpDrainTimeout: 0 });
  assert.throws(
    () => validateAgentDrainOptions({ knpDrainTimeout: -1 }),
    /--knp-drain-timeout: must be >= 0/,
  );
});
