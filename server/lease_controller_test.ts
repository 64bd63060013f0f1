/**
 * Tests of the server's Lease controller with an injected clock: creation, renewal on the
 * jittered interval, a conflicting writer, failures retried with backoff (never thrown), garbage
 * collection of expired labelled Leases only once the server has reached the API for a whole
 * Lease duration, and deletion of the own Lease at stop. The Leases live in a small in-memory
 * store behind the controller's own `LeaseApi` interface (resourceVersions, 404, 409); the real
 * kube-apiserver is covered by tests/e2e_lease_test.ts. Also: the flag checks.
 *
 * @module
 */

import assert from "node:assert/strict";
import { fakeTimers } from "@knp/testing/fakes";
import type { LeaseRecord } from "@knp/cli/kube_leases";
import type { LogFields, Logger } from "@knp/core/log";
import { KnpError } from "@knp/core/errors";
import {
  expiredLeases,
  type LeaseApi,
  leaseBody,
  LeaseController,
  type LeaseWrite,
  nextRenewalDelay,
} from "./lease_controller.ts";
import { leaseLabelProblem, validateLeaseOptions } from "./lease_flags.ts";

const T = 1_800_000_000_000;
const OWN = "konnectivity-proxy-server-s1";
const LABELS = { "k8s-app": "konnectivity-server" };

const status = (code: number) => Object.assign(new Error(`HTTP ${code}`), { code });

/** Leases in memory with resourceVersions; `down` makes every call fail. */
class LeaseStore implements LeaseApi {
  readonly server = "https://stand-in";
  readonly leases = new Map<string, LeaseRecord>();
  readonly calls: string[] = [];
  down = false;
  #rv = 0;

  put(lease: Omit<LeaseRecord, "resourceVersion">): LeaseRecord {
    const stored = { ...lease, resourceVersion: String(++this.#rv) };
    this.leases.set(lease.name, stored);
    return stored;
  }

  #call(name: string): void {
    this.calls.push(name);
    if (this.down) throw new Error("connect ECONNREFUSED");
  }

  #record(w: LeaseWrite): Omit<LeaseRecord, "resourceVersion"> {
    return {
      name: w.name,
      labels: w.labels,
      holderIdentity: w.holderIdentity,
      durationSeconds: w.durationSeconds,
      renewTime: w.renewTime,
      acquireTime: w.acquireTime,
    };
  }

  get(name: string) {
    this.#call("get");
    return Promise.resolve(this.leases.get(name));
  }
  create(w: LeaseWrite) {
    this.#call("create");
    if (this.leases.has(w.name)) throw status(409);
    return Promise.resolve(this.put(this.#record(w)));
  }
  replace(w: LeaseWrite) {
    this.#call("replace");
    const current = this.leases.get(w.name);
    if (current === undefined) throw status(404);
    if (current.resourceVersion !== w.resourceVersion) throw status(409);
    return Promise.resolve(this.put(this.#record(w)));
  }
  list(selector: string) {
    this.#call("list");
    const [k, v] = selector.split("=");
    return Promise.resolve([...this.leases.values()].filter((l) => l.labels[k!] === v));
  }
  delete(name: string, resourceVersion: string | undefined) {
    this.#call(`delete ${name}`);
    const current = this.leases.get(name);
    if (current === undefined) return Promise.resolve(false);
    if (resourceVersion !== undefined && current.resourceVersion !== resourceVersion) {
      throw status(409);
    }
    this.leases.delete(name);
    return Promise.resolve(true);
  }
}

/** A logger whose `logged(msg)` resolves at the next record with that message. */
function recorder(): Logger & { logged(msg: string): Promise<LogFields> } {
  const waiters: { msg: string; resolve: (f: LogFields) => void }[] = [];
  const log = (msg: string, fields: LogFields = {}) => {
    for (const w of waiters.splice(0)) {
      if (w.msg === msg) w.resolve(fields);
      else waiters.push(w);
    }
  };
  const logger = {
    logged: (msg: string) => new Promise<LogFields>((resolve) => waiters.push({ msg, resolve })),
    debug: log,
    info: log,
    warn: log,
    error: log,
    with: () => logger,
  };
  return logger;
}

function controller() {
  const { clock, timers } = fakeTimers();
  const api = new LeaseStore();
  const logger = recorder();
  const c = new LeaseController({
    api,
    serverId: "s1",
    leaseName: OWN,
    labels: LABELS,
    timers,
    wallClock: () => T + timers.now(),
    random: () => 0.5,
    logger,
  });
  return { c, api, clock, timers, logger };
}

Deno.test("LeaseController creates its Lease at once and renews it every 15 s + jitter", async () => {
  const { c, api, clock, logger } = controller();
  const acquired = logger.logged("lease acquired");
  c.start();
  clock.tick(0);
  await acquired;
  const first = api.leases.get(OWN)!;
  assert.deepEqual({ ...first, resourceVersion: undefined }, {
    name: OWN,
    resourceVersion: undefined,
    labels: LABELS,
    holderIdentity: "s1",
    durationSeconds: 30,
    renewTime: T,
    acquireTime: T,
  });
  assert.deepEqual(api.calls, ["get", "create"]);
  const renewed = logger.logged("lease renewed");
  clock.tick(15_300); // 15 s + 4 % × 0.5
  await renewed;
  assert.equal(api.leases.get(OWN)!.renewTime, T + 15_300);
  assert.equal(api.leases.get(OWN)!.acquireTime, T);
  assert.deepEqual(api.calls.slice(2), ["replace"]);

  // Another writer changed it: 409, read again, update that version.
  api.put({ ...api.leases.get(OWN)!, holderIdentity: "someone" });
  const again = logger.logged("lease renewed");
  clock.tick(15_300);
  await again;
  // (GC's list at 30 s aside.)
  assert.deepEqual(api.calls.slice(3).filter((c) => c !== "list"), ["replace", "get", "replace"]);
  assert.equal(api.leases.get(OWN)!.holderIdentity, "s1");
  assert.equal(api.leases.get(OWN)!.acquireTime, T + 30_600); // taken over: acquired anew

  const deleted = logger.logged("deleted the server's lease");
  await c.stop();
  assert.deepEqual(await deleted, { lease: OWN, existed: true });
  assert.equal(api.leases.has(OWN), false);
});

Deno.test("LeaseController retries failed renewals with backoff and never throws", async () => {
  const { c, api, clock, logger } = controller();
  api.down = true;
  const delays: unknown[] = [];
  for (let i = 0; i < 5; i++) {
    const failed = logger.logged("lease renewal failed; retrying");
    if (i === 0) c.start();
    clock.tick(i === 0 ? 0 : Number(delays[i - 1]));
    const fields = await failed;
    assert.equal(fields["failedAttempts"], i + 1);
    assert.match(String(fields["error"]), /ECONNREFUSED/);
    delays.push(fields["retryInMs"]);
  }
  assert.deepEqual(delays, [100, 200, 400, 800, 1600]);
  api.down = false;
  const back = logger.logged("lease acquired");
  clock.tick(1600);
  await back;
  assert.equal(api.leases.get(OWN)!.renewTime, T + 3_100);
  const stopped = logger.logged("deleted the server's lease");
  void c.stop();
  await stopped;
});

Deno.test("LeaseController garbage-collects expired labelled Leases once settled", async () => {
  const { c, api, clock, logger } = controller();
  api.put({ name: "expired", labels: LABELS, durationSeconds: 30, renewTime: T - 31_000 });
  api.put({ name: "valid", labels: LABELS, durationSeconds: 30, renewTime: T + 30_000 });
  api.put({ name: "other", labels: { app: "x" }, durationSeconds: 30, renewTime: T - 99_000 });
  const acquired = logger.logged("lease acquired");
  c.start();
  clock.tick(0);
  await acquired;
  clock.tick(15_000);
  // Not settled yet (healthy for less than 30 s): GC lists nothing.
  assert.equal(api.calls.includes("list"), false);
  const culled = logger.logged("garbage-collected an expired lease");
  clock.tick(15_000); // GC at 30 s: settled now
  assert.deepEqual(await culled, { lease: "expired" });
  assert.deepEqual([...api.leases.keys()].sort(), [OWN, "other", "valid"]);
  await c.stop();
});

Deno.test("lease helpers: delays, victims, the body, and the flag checks", () => {
  assert.equal(nextRenewalDelay(0, 15_000, () => 1), 15_600);
  assert.equal(nextRenewalDelay(20, 15_000, () => 0), 7_000);
  const leases: LeaseRecord[] = [
    { name: OWN, resourceVersion: "1", labels: {}, durationSeconds: 30, renewTime: T - 60_000 },
    { name: "b", resourceVersion: "1", labels: {}, durationSeconds: 30, renewTime: T - 60_000 },
    { name: "c", resourceVersion: "1", labels: {}, durationSeconds: 30, renewTime: T },
  ];
  assert.deepEqual(expiredLeases(leases, T, OWN).map((l) => l.name), ["b"]);
  assert.deepEqual(
    leaseBody("kube-system", {
      name: OWN,
      labels: LABELS,
      holderIdentity: "s1",
      durationSeconds: 30,
      renewTime: T,
      acquireTime: T,
      resourceVersion: "7",
    }),
    {
      apiVersion: "coordination.k8s.io/v1",
      kind: "Lease",
      metadata: { name: OWN, namespace: "kube-system", labels: LABELS, resourceVersion: "7" },
      spec: {
        holderIdentity: "s1",
        leaseDurationSeconds: 30,
        renewTime: "2027-01-15T08:00:00.000000Z",
        acquireTime: "2027-01-15T08:00:00.000000Z",
      },
    },
  );
  assert.equal(leaseLabelProblem("k8s-app=konnectivity-server,example.com/x=y"), undefined);
  assert.match(leaseLabelProblem("-bad=x") ?? "", /invalid label key/);
  assert.match(leaseLabelProblem("a=b c") ?? "", /invalid label value/);
  const o = {
    enableLeaseController: true,
    leaseNamespace: "kube-system",
    leaseLabel: "k8s-app=konnectivity-server",
    kubeconfig: "",
    serverId: "s1",
    knpLeaseDuration: 30_000,
    knpLeaseRenewInterval: 15_000,
    knpLeaseGcInterval: 15_000,
  };
  validateLeaseOptions(o);
  validateLeaseOptions({ ...o, enableLeaseController: false, knpLeaseDuration: 1 });
  const invalid = (patch: Partial<typeof o>, flag: string) =>
    assert.throws(
      () => validateLeaseOptions({ ...o, ...patch }),
      (e: unknown) =>
        e instanceof KnpError && e.code === "INVALID_FLAG" && e.message.startsWith(`--${flag}:`),
    );
  invalid({ knpLeaseDuration: 1_500 }, "knp-lease-duration");
  invalid({ knpLeaseRenewInterval: 30_000 }, "knp-lease-renew-interval");
  invalid({ knpLeaseGcInterval: 0 }, "knp-lease-gc-interval");
  invalid({ leaseNamespace: "" }, "lease-namespace");
  invalid({ leaseLabel: "a=b c" }, "lease-label");
});
