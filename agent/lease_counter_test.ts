/**
 * Tests of `LeaseCounter`'s state machine with an injected clock: counts from a list, follows
 * watch events, re-lists at the earliest expiry (a deadline, not a poll), and degrades without
 * dropping the count when the API stops answering. The API here is a scripted stand-in of the
 * counter's own `LeaseWatchApi` interface, driven call by call; the real kube-apiserver (and
 * client-node) is covered by tests/e2e_lease_test.ts.
 *
 * @module
 */

import assert from "node:assert/strict";
import { fakeTimers } from "@knp/testing/fakes";
import type { LeaseRecord } from "@knp/cli/kube_leases";
import type { LogFields, Logger } from "@knp/core/log";
import { LeaseCounter, type LeaseEvent, type LeaseWatchApi } from "./lease_counter.ts";
import { agentHealthHandler } from "./health.ts";

const T = 1_800_000_000_000;

interface ListCall {
  kind: "list";
  answer(leases: LeaseRecord[], resourceVersion?: string): void;
  fail(err: Error): void;
}

interface WatchCall {
  kind: "watch";
  from: string;
  emit(type: string, lease: LeaseRecord): void;
  fail(err: Error): void;
}

/** The counter's API, answered by the test one call at a time. */
class ScriptedApi implements LeaseWatchApi {
  readonly server = "https://stand-in";
  #calls: (ListCall | WatchCall)[] = [];
  #waiting: ((call: ListCall | WatchCall) => void) | undefined;

  #push(call: ListCall | WatchCall): void {
    const w = this.#waiting;
    this.#waiting = undefined;
    if (w) w(call);
    else this.#calls.push(call);
  }

  /** The counter's next call, which must be of `kind`. */
  async next<K extends "list" | "watch">(
    kind: K,
  ): Promise<Extract<ListCall | WatchCall, { kind: K }>> {
    const call = this.#calls.shift() ??
      await new Promise<ListCall | WatchCall>((r) => this.#waiting = r);
    assert.equal(call.kind, kind);
    return call as Extract<ListCall | WatchCall, { kind: K }>;
  }

  list(_selector: string, signal: AbortSignal) {
    return new Promise<{ leases: LeaseRecord[]; resourceVersion: string }>((resolve, reject) => {
      signal.addEventListener("abort", () => reject(signal.reason), { once: true });
      this.#push({
        kind: "list",
        answer: (leases, resourceVersion = "1") => resolve({ leases, resourceVersion }),
        fail: reject,
      });
    });
  }

  watch(
    _selector: string,
    from: string,
    onEvent: (event: LeaseEvent) => void,
    signal: AbortSignal,
  ): Promise<void> {
    return new Promise((_resolve, reject) => {
      signal.addEventListener("abort", () => reject(signal.reason), { once: true });
      this.#push({
        kind: "watch",
        from,
        emit: (type, lease) => onEvent({ type, lease, resourceVersion: lease.resourceVersion }),
        fail: reject,
      });
    });
  }
}

interface Rec {
  level: string;
  msg: string;
  fields: LogFields;
}

/** A logger that keeps the records; `logged(prefix)` resolves at the next such record. */
function recorder(): Logger & { records: Rec[]; logged(prefix: string): Promise<Rec> } {
  const records: Rec[] = [];
  const waiters: { prefix: string; resolve: (r: Rec) => void }[] = [];
  const log = (level: string) => (msg: string, fields: LogFields = {}) => {
    const rec = { level, msg, fields };
    records.push(rec);
    for (const w of waiters.splice(0)) {
      if (msg.startsWith(w.prefix)) w.resolve(rec);
      else waiters.push(w);
    }
  };
  const logger = {
    records,
    logged: (prefix: string) => new Promise<Rec>((resolve) => waiters.push({ prefix, resolve })),
    debug: log("debug"),
    info: log("info"),
    warn: log("warn"),
    error: log("error"),
    with: () => logger,
  };
  return logger;
}

function lease(name: string, renewTime: number, rv = "1"): LeaseRecord {
  return { name, resourceVersion: rv, labels: {}, durationSeconds: 30, renewTime };
}

function counter() {
  const { clock, timers } = fakeTimers();
  const api = new ScriptedApi();
  const logger = recorder();
  const c = new LeaseCounter({
    api: () => Promise.resolve(api),
    selector: "k8s-app=konnectivity-server",
    namespace: "kube-system",
    timers,
    wallClock: () => T + timers.now(),
    logger,
  });
  let changes = 0;
  c.onChange(() => changes++);
  return { c, api, clock, timers, logger, changes: () => changes };
}

Deno.test("LeaseCounter: counts valid Leases, follows the watch, re-lists at the expiry", async () => {
  const { c, api, clock, logger, changes } = counter();
  await c.start();
  (await api.next("list")).answer([lease("a", T), lease("b", T + 5_000), lease("x", T - 31_000)]);
  const watch = await api.next("watch");
  assert.equal(watch.from, "1");
  assert.equal(c.serverCount(), 2);
  assert.equal(changes(), 1);
  assert.equal(c.connected, true);
  watch.emit("ADDED", lease("c", T + 1_000, "2"));
  assert.equal(c.serverCount(), 3);
  watch.emit("DELETED", lease("c", T + 1_000, "3"));
  assert.equal(c.serverCount(), 2);
  watch.emit("MODIFIED", lease("a", T + 20_000, "4")); // renewed
  // b expires first (T + 35 s): at that instant the counter lists again.
  clock.tick(35_001);
  (await api.next("list")).answer([lease("a", T + 20_000), lease("b", T + 5_000)], "5");
  assert.equal((await api.next("watch")).from, "5");
  assert.equal(c.serverCount(), 1);
  clock.tick(20_000); // a expires too
  (await api.next("list")).answer([lease("a", T + 20_000)]);
  await api.next("watch");
  assert.equal(c.serverCount(), 1, "0 valid Leases count as 1, never 0");
  assert.ok(
    logger.records.some((r) => r.msg === "No valid leases found, assuming server count of 1"),
  );
  assert.match(c.healthLine(), /^\[\+\]server-leases ok: 1 server/);
  c.stop();
});

Deno.test("LeaseCounter: an unreachable API keeps the last count (or none), then resumes", async () => {
  const { c, api, clock, logger, changes } = counter();
  await c.start();
  const first = logger.logged("Kubernetes API unreachable");
  (await api.next("list")).fail(new Error("connect ECONNREFUSED"));
  assert.equal((await first).fields["serverCount"], "servers' count");
  assert.equal(c.serverCount(), undefined); // the agent uses the servers' count
  assert.match(c.healthLine(), /degraded: .*ECONNREFUSED.*using the servers' count/);
  clock.tick(1_000); // retry: 1 s, then 2 s
  (await api.next("list")).answer([lease("a", T + 1_000), lease("b", T + 1_000)]);
  const watch = await api.next("watch");
  assert.equal(c.serverCount(), 2);
  assert.ok(logger.records.some((r) => r.msg.startsWith("Kubernetes API reachable again")));

  const lost = logger.logged("Kubernetes API unreachable");
  watch.fail(new Error("connection reset"));
  assert.equal((await lost).fields["serverCount"], 2);
  clock.tick(1_000);
  const still = logger.logged("Kubernetes API still unreachable");
  (await api.next("list")).fail(new Error("connect ECONNREFUSED"));
  await still;
  clock.tick(60_000); // both Leases are long past their renewTime + 30 s
  const stillAgain = logger.logged("Kubernetes API still unreachable");
  (await api.next("list")).fail(new Error("connect ECONNREFUSED"));
  await stillAgain;
  assert.equal(c.serverCount(), 2, "the count must not follow Leases nobody could renew");
  assert.match(c.healthLine(), /degraded: .*keeping the last known count 2/);
  assert.equal(c.connected, false);
  const before = changes();

  // Back: the Leases are stale (their holders could not renew) but were valid at the loss.
  clock.tick(60_000);
  (await api.next("list")).answer([lease("a", T + 1_000), lease("b", T + 1_000)]);
  await api.next("watch");
  assert.equal(c.serverCount(), 2);
  assert.equal(changes(), before);
  // Not renewed within one duration after the outage: they are gone.
  clock.tick(30_001);
  (await api.next("list")).answer([lease("a", T + 1_000), lease("b", T + 1_000)]);
  await api.next("watch");
  assert.equal(c.serverCount(), 1);
  c.stop();
});

Deno.test("agent /readyz?verbose shows the Lease count's line and stays ready", async () => {
  const handler = agentHealthHandler({ ready: true }, () => ["[+]server-leases degraded: x"]);
  const res = handler(new Request("http://h/readyz?verbose"));
  assert.equal(res.status, 200);
  assert.equal(
    await res.text(),
    "[+]ping ok\n[+]server-connected ok\n[+]server-leases degraded: x\ncheck passed\n",
  );
  assert.equal(await handler(new Request("http://h/readyz")).text(), "ok");
});
