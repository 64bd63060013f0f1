import assert from "node:assert/strict";
import { KnpError } from "@knp/core/errors";
import { fakeTimers } from "@knp/testing/fakes";
import { Keepalive, keepaliveFor } from "./keepalive.ts";

function setup(intervalMs = 1_000, timeoutMs = 300) {
  const { clock, timers } = fakeTimers();
  const pings: number[] = [];
  const expired: KnpError[] = [];
  const keepalive = new Keepalive("ws:10.0.0.9:41000", { intervalMs, timeoutMs }, {
    ping: () => pings.push(clock.now),
    expired: (error) => expired.push(error),
  }, timers);
  return { clock, pings, expired, keepalive };
}

Deno.test("keepalive pings at the interval and reports a silent peer after the timeout", () => {
  const { clock, pings, expired, keepalive } = setup();
  keepalive.start();
  clock.tick(999);
  assert.deepEqual(pings, [], "no ping before the interval");
  clock.tick(1);
  assert.deepEqual(pings, [1_000]);
  clock.tick(299);
  assert.equal(expired.length, 0, "the peer still has 1 ms to answer");
  clock.tick(1);
  assert.equal(expired.length, 1);
  const error = expired[0]!;
  assert.equal(error.code, "TIMEOUT");
  assert.match(error.message, /ws:10\.0\.0\.9:41000/);
  assert.match(error.message, /keepalive time 1000 ms/);
  assert.match(error.message, /300 ms/);
  clock.tick(10_000);
  assert.equal(expired.length, 1, "reported once, and stopped");
  assert.deepEqual(pings, [1_000], "no pings after expiry");
});

Deno.test("keepalive never reports a peer that answers every ping", () => {
  const { clock, pings, expired, keepalive } = setup();
  keepalive.start();
  clock.tick(1_000);
  for (let i = 1; i <= 20; i++) {
    assert.equal(pings.length, i, `ping ${i} went out at ${i * 1_000} ms`);
    clock.tick(250);
    keepalive.alive();
    clock.tick(750);
  }
  clock.tick(299);
  assert.equal(expired.length, 0);
});

Deno.test("keepalive: any sign of life after the last ping counts; stop() ends everything", () => {
  const { clock, pings, expired, keepalive } = setup(1_000, 1_500);
  keepalive.start();
  clock.tick(1_000); // ping 1, deadline at 2500
  clock.tick(1_000); // ping 2 at 2000, the deadline stays at 2500
  keepalive.alive();
  clock.tick(1_000); // ping 3 at 3000, new deadline at 4500
  clock.tick(1_499); // ping 4 at 4000 leaves the pending deadline alone
  assert.equal(expired.length, 0, "ping 2 was answered");
  keepalive.stop();
  clock.tick(60_000);
  assert.equal(expired.length, 0);
  assert.deepEqual(pings, [1_000, 2_000, 3_000, 4_000]);
});

Deno.test("keepalive rejects times that are not positive", () => {
  const hooks = { ping() {}, expired() {} };
  assert.throws(() => new Keepalive("p", { intervalMs: 0, timeoutMs: 1 }, hooks), RangeError);
  assert.throws(() => new Keepalive("p", { intervalMs: 1, timeoutMs: NaN }, hooks), RangeError);
});

Deno.test("keepaliveFor: the timeout is the keepalive time, at most 20 s; 0 is off", () => {
  assert.deepEqual(keepaliveFor(1_000), { intervalMs: 1_000, timeoutMs: 1_000 });
  assert.deepEqual(keepaliveFor(3_600_000), { intervalMs: 3_600_000, timeoutMs: 20_000 });
  assert.equal(keepaliveFor(0), undefined);
});
