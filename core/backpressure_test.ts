import assert from "node:assert/strict";
import { type GuardedSink, type Pausable, SharedPause, SinkGuard } from "./backpressure.ts";
import { fakeTimers } from "@knp/testing/fakes";

/** Records pause()/resume() calls and the current state. */
class FakeSource implements Pausable {
  paused = false;
  calls: string[] = [];
  pause(): void {
    this.paused = true;
    this.calls.push("pause");
  }
  resume(): void {
    this.paused = false;
    this.calls.push("resume");
  }
}

/** A sink whose buffered byte count the test sets; `drain()` runs the waiting callbacks. */
class FakeSink implements GuardedSink {
  bufferedBytes = 0;
  #waiters: (() => void)[] = [];
  onDrain(callback: () => void): void {
    this.#waiters.push(callback);
  }
  get waiting(): number {
    return this.#waiters.length;
  }
  drain(to = 0): void {
    this.bufferedBytes = to;
    const w = this.#waiters;
    this.#waiters = [];
    for (const cb of w) cb();
  }
}

const LIMITS = { stallMs: 100, maxBytes: 1000 };

/** One SinkGuard with LIMITS on a fake clock, guarding a fake sink for a fake source. */
function guarded() {
  const { clock, timers } = fakeTimers();
  const source = new FakeSource();
  const shared = new SharedPause(source);
  const sink = new FakeSink();
  const guard = new SinkGuard(sink, shared, LIMITS, timers);
  return { clock, source, shared, sink, guard };
}

Deno.test("SharedPause pauses the source on the first holder and resumes after the last release", () => {
  const source = new FakeSource();
  const shared = new SharedPause(source);
  const a = {}, b = {};
  shared.hold(a);
  assert.equal(source.paused, true);
  shared.hold(b);
  shared.hold(a); // holding twice counts once
  assert.equal(shared.holders, 2);
  assert.deepEqual(source.calls, ["pause"]);
  shared.release(a);
  assert.equal(source.paused, true);
  shared.release(a); // releasing twice is a no-op
  assert.equal(shared.holders, 1);
  shared.release(b);
  assert.equal(source.paused, false);
  assert.equal(shared.holders, 0);
  assert.deepEqual(source.calls, ["pause", "resume"]);
});

Deno.test("SharedPause ignores a release from a key that never held", () => {
  const source = new FakeSource();
  const shared = new SharedPause(source);
  shared.release({});
  assert.deepEqual(source.calls, []);
});

Deno.test("SinkGuard does nothing while the sink stays under its mark", () => {
  const { clock, source, sink, guard } = guarded();
  sink.bufferedBytes = 10;
  assert.equal(guard.afterSend(true), "ok");
  assert.equal(source.paused, false);
  assert.equal(clock.countTimers(), 0);
  guard.dispose();
});

Deno.test("SinkGuard holds the shared source while over its mark and lets go when the sink drains", () => {
  const { clock, source, shared, sink, guard } = guarded();
  sink.bufferedBytes = 500;
  assert.equal(guard.afterSend(false), "ok");
  assert.equal(source.paused, true);
  assert.equal(shared.holders, 1);
  // More sends while holding do not register again.
  assert.equal(guard.afterSend(false), "ok");
  assert.equal(sink.waiting, 1);
  clock.tick(50);
  sink.drain(100);
  assert.equal(source.paused, false);
  assert.equal(guard.stalled, false);
  assert.equal(clock.countTimers(), 0, "the stall timer is cleared");
  // It can hold again later.
  sink.bufferedBytes = 600;
  guard.afterSend(false);
  assert.equal(source.paused, true);
  guard.dispose();
  assert.equal(source.paused, false);
  assert.equal(clock.countTimers(), 0);
});

Deno.test("SinkGuard lets go of the source after stallMs when the sink does not drain", () => {
  const { clock, source, sink, guard } = guarded();
  sink.bufferedBytes = 500;
  guard.afterSend(false);
  clock.tick(99);
  assert.equal(source.paused, true);
  assert.equal(guard.stalled, false);
  clock.tick(1);
  assert.equal(source.paused, false);
  assert.equal(guard.stalled, true);
  // While stalled, further sends over the mark do not hold the source again.
  sink.bufferedBytes = 900;
  assert.equal(guard.afterSend(false), "ok");
  assert.equal(source.paused, false);
  assert.equal(clock.countTimers(), 0);
  // Draining ends the stall; the next time over the mark holds again.
  sink.drain(0);
  assert.equal(guard.stalled, false);
  sink.bufferedBytes = 700;
  guard.afterSend(false);
  assert.equal(source.paused, true);
  guard.dispose();
  assert.equal(source.paused, false);
});

Deno.test("SinkGuard reports overflow once the sink passes maxBytes", () => {
  const { source, sink, guard } = guarded();
  sink.bufferedBytes = 1000;
  assert.equal(guard.afterSend(false), "ok", "exactly maxBytes is still allowed");
  sink.bufferedBytes = 1001;
  assert.equal(guard.afterSend(false), "overflow");
  assert.equal(guard.afterSend(true), "overflow", "overflow wins even under the stream's mark");
  guard.dispose();
  assert.equal(source.paused, false);
});

Deno.test("SinkGuard stops holding and ignores drains and sends once disposed", () => {
  const { clock, source, sink, guard } = guarded();
  sink.bufferedBytes = 500;
  guard.afterSend(false);
  guard.dispose();
  guard.dispose();
  assert.equal(source.paused, false);
  assert.equal(clock.countTimers(), 0);
  sink.bufferedBytes = 5000;
  assert.equal(guard.afterSend(false), "ok");
  sink.drain();
  assert.equal(source.paused, false);
  assert.deepEqual(source.calls, ["pause", "resume"]);
});

Deno.test("SinkGuard keeps the source paused until every holding connection lets go", () => {
  const { clock, timers } = fakeTimers();
  const source = new FakeSource();
  const shared = new SharedPause(source);
  const sinkA = new FakeSink();
  const sinkB = new FakeSink();
  const a = new SinkGuard(sinkA, shared, LIMITS, timers);
  const b = new SinkGuard(sinkB, shared, { stallMs: 300, maxBytes: 1000 }, timers);
  sinkA.bufferedBytes = 500;
  sinkB.bufferedBytes = 500;
  a.afterSend(false);
  b.afterSend(false);
  assert.equal(shared.holders, 2);
  clock.tick(100); // a stalls and lets go; b still holds
  assert.equal(a.stalled, true);
  assert.equal(source.paused, true);
  sinkB.drain();
  assert.equal(source.paused, false);
  a.dispose();
  b.dispose();
  assert.equal(clock.countTimers(), 0);
});
