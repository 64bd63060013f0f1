/**
 * Tests of `LeaseTally` (valid Leases at an instant, the next expiry, the outage grace) and of
 * the server-count aggregation (upstream's `TestAggregateServerCounter` cases).
 *
 * @module
 */

import assert from "node:assert/strict";
import type { LeaseRecord } from "@knp/cli/kube_leases";
import { LeaseTally } from "./lease_tally.ts";
import { aggregateServerCount, serverCounter } from "./server_count.ts";

const T = 1_800_000_000_000;

function lease(name: string, renewTime: number | undefined, durationSeconds = 30): LeaseRecord {
  return { name, resourceVersion: "1", labels: {}, durationSeconds, renewTime };
}

Deno.test("LeaseTally counts valid Leases and names the next expiry", () => {
  const tally = new LeaseTally();
  tally.reset([
    lease("a", T),
    lease("b", T + 5_000),
    lease("c", T - 40_000),
    lease("d", undefined),
  ]);
  assert.equal(tally.size, 4);
  assert.equal(tally.valid(T), 2);
  assert.deepEqual(tally.validNames(T), ["a", "b"]);
  assert.equal(tally.nextExpiry(T), T + 30_000);
  assert.equal(tally.valid(T + 30_000), 1);
  assert.equal(tally.nextExpiry(T + 30_000), T + 35_000);
  assert.equal(tally.nextExpiry(T + 35_000), undefined);
  tally.upsert(lease("a", T + 30_000)); // renewed
  assert.equal(tally.valid(T + 31_000), 2);
  tally.remove("b");
  assert.equal(tally.valid(T + 31_000), 1);
  tally.reset([]);
  assert.equal(tally.valid(T), 0);
});

Deno.test("LeaseTally: Leases valid when contact was lost get one duration after it is back", () => {
  const tally = new LeaseTally();
  // a: valid at the loss (T + 1 s), b: expired before it.
  tally.reset([lease("a", T - 10_000), lease("b", T - 31_000)]);
  const lostAt = T + 1_000;
  const backAt = T + 60_000; // a's own expiry (T + 20 s) has passed
  tally.outage(lostAt, backAt);
  assert.equal(tally.valid(backAt), 1);
  assert.deepEqual(tally.validNames(backAt), ["a"]);
  assert.equal(tally.nextExpiry(backAt), backAt + 30_000);
  assert.equal(tally.valid(backAt + 30_000), 0); // not renewed within the grace: gone
  tally.upsert(lease("a", backAt + 2_000)); // renewed after the outage
  assert.equal(tally.valid(backAt + 31_000), 1);
});

Deno.test("aggregateServerCount(): default, max, no leases, zero and unknown", () => {
  assert.equal(aggregateServerCount("default", 3, 1), 3);
  assert.equal(aggregateServerCount("", 3, 5), 3);
  assert.equal(aggregateServerCount("max", 3, 5), 5);
  assert.equal(aggregateServerCount("max", 4, 2), 4);
  assert.equal(aggregateServerCount("default", 0, 2), 1);
  assert.equal(aggregateServerCount("default", undefined, 2), 2); // never known: the servers'
  assert.equal(aggregateServerCount("default", undefined, 0), 1);
  const leases: { count?: number } = {};
  const listeners: (() => void)[] = [];
  const counter = serverCounter({
    serverCount: () => leases.count,
    onChange: (l) => {
      listeners.push(l);
      return () => {};
    },
  }, "max");
  assert.equal(counter.count(2), 2);
  leases.count = 3;
  assert.equal(counter.count(2), 3);
  let called = 0;
  counter.onChange(() => called++);
  for (const l of listeners) l();
  assert.equal(called, 1);
});
