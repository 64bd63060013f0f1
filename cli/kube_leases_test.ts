/**
 * Tests of the Lease helpers: reading Lease objects, validity (upstream's `IsLeaseValid`),
 * `MicroTime` text and label formatting.
 *
 * @module
 */

import assert from "node:assert/strict";
import {
  formatLabels,
  isLeaseValid,
  leaseExpiresAt,
  leaseName,
  leaseRecord,
  microTime,
} from "./kube_leases.ts";

const T = Date.parse("2026-12-01T10:00:00Z");

Deno.test("leaseRecord() reads names, labels, holder, duration and MicroTime fields", () => {
  const lease = leaseRecord({
    metadata: { name: "konnectivity-proxy-server-a", resourceVersion: "42", labels: { k: "v" } },
    spec: {
      holderIdentity: "a",
      leaseDurationSeconds: 30,
      renewTime: "2026-12-01T10:00:00.123456Z",
      acquireTime: new Date(T - 1000),
    },
  });
  assert.deepEqual(lease, {
    name: "konnectivity-proxy-server-a",
    resourceVersion: "42",
    labels: { k: "v" },
    holderIdentity: "a",
    durationSeconds: 30,
    renewTime: T + 123,
    acquireTime: T - 1000,
  });
  assert.equal(leaseRecord({ metadata: {} }), undefined);
  assert.equal(leaseRecord(null), undefined);
  assert.equal(leaseName("x"), "konnectivity-proxy-server-x");
});

Deno.test("isLeaseValid(): renewTime, else acquireTime, plus the duration must be ahead", () => {
  const base = { name: "l", resourceVersion: "1", labels: {}, durationSeconds: 30 };
  const renewed = { ...base, renewTime: T, acquireTime: T - 60_000 };
  assert.equal(leaseExpiresAt(renewed), T + 30_000);
  assert.equal(isLeaseValid(renewed, T + 29_999), true);
  assert.equal(isLeaseValid(renewed, T + 30_000), false); // "after", strictly
  const acquired = { ...base, acquireTime: T };
  assert.equal(isLeaseValid(acquired, T + 10_000), true);
  assert.equal(isLeaseValid({ ...base }, T), false); // neither time
  assert.equal(isLeaseValid({ ...renewed, durationSeconds: undefined }, T), false);
});

Deno.test("microTime() has six fractional digits; formatLabels() sorts keys", () => {
  assert.equal(microTime(T + 123), "2026-12-01T10:00:00.123000Z");
  assert.equal(Date.parse(microTime(T + 5)), T + 5);
  assert.equal(formatLabels({ b: "2", a: "1" }), "a=1,b=2");
  assert.equal(formatLabels({}), "");
});
