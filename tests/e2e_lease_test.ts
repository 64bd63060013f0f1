/**
 * End-to-end server Leases with a real kube-apiserver: knp servers with
 * `--enable-lease-controller` (and no token authentication) create and renew
 * `konnectivity-proxy-server-<id>`; a killed server's Lease expires and is garbage-collected; an
 * agent with `--count-server-leases` follows the count through its watch; with kube-apiserver
 * stopped the agent keeps its last count and says so while the servers keep serving dials; with
 * kube-apiserver back the watch resumes and counts follow again. Lease timing is shortened with
 * `--knp-lease-duration` and friends. Skips like tests/e2e_test.ts (fails instead with
 * `KNP_E2E_REQUIRED=1`).
 *
 * @module
 */

import assert from "node:assert/strict";
import { e2eUnavailable } from "./e2e/availability.ts";
import { ensureKubeBinaries, KUBE_VERSION } from "./e2e/kube_binaries.ts";
import { generateE2ePki } from "./e2e/pki.ts";
import {
  getThrough,
  LeaseControlPlane,
  leaseCount,
  LEASES,
  readyzVerbose,
  startLeaseAgent,
  startLeaseServer,
} from "./e2e/lease_scenarios.ts";
import { startHttpBackend } from "./backends.ts";

const missing = await e2eUnavailable("e2e leases (kube-apiserver)");

const lease = (id: string) => `konnectivity-proxy-server-${id}`;

Deno.test({
  name: "e2e(leases): servers publish Leases, an agent counts them through API outages",
  ignore: missing !== undefined,
}, async (t) => {
  const bins = await ensureKubeBinaries(KUBE_VERSION);
  const pki = await generateE2ePki();
  await using plane = await LeaseControlPlane.start(bins, pki);
  await using backend = startHttpBackend();
  {
    await using s1 = await startLeaseServer(plane, "lease-s1");
    await using s2 = await startLeaseServer(plane, "lease-s2");
    const s3 = await startLeaseServer(plane, "lease-s3");

    await t.step("each server creates and renews its Lease", async () => {
      for (const s of [s1, s2, s3]) await s.process.waitForLog("lease acquired");
      const leases = await plane.leases();
      assert.deepEqual([...leases.keys()].sort(), ["lease-s1", "lease-s2", "lease-s3"].map(lease));
      const first = leases.get(lease("lease-s1"));
      assert.equal(first.spec.holderIdentity, "lease-s1");
      assert.equal(first.spec.leaseDurationSeconds, LEASES.durationSeconds);
      assert.deepEqual(first.metadata.labels, { "k8s-app": "konnectivity-server" });
      const renewed = await plane.watchLease(
        lease("lease-s1"),
        (type, l) =>
          type === "MODIFIED" && Date.parse(l.spec.renewTime) >
            Date.parse(first.spec.renewTime),
      );
      assert.ok(renewed);
    });

    const agent = await startLeaseAgent(plane, s1, "lease-agent");
    await using _agent = agent.process;

    await t.step("the agent counts 3 valid Leases", async () => {
      await leaseCount(agent.process, 3);
      assert.match(await readyzVerbose(agent.healthPort), /\[\+\]server-leases ok: 3 server/);
      assert.equal(await getThrough(s1, backend.address), "hello");
    });

    await t.step("a killed server's Lease expires (count 2) and is garbage-collected", async () => {
      const from = agent.process.mark();
      const culled = plane.watchLease(lease("lease-s3"), (type) => type === "DELETED");
      await s3.process.stop(); // SIGKILL: the Lease is left to expire
      await leaseCount(agent.process, 2, from);
      await culled;
      await Promise.race([
        s1.process.waitForLog((r) => r.msg === "garbage-collected an expired lease"),
        s2.process.waitForLog((r) => r.msg === "garbage-collected an expired lease"),
      ]);
    });

    await t.step("kube-apiserver stopped: the agent keeps count 2, dials still work", async () => {
      const from = agent.process.mark();
      const s1From = s1.process.mark();
      await plane.stopApiServer();
      const degraded = await agent.process.waitForLog(
        "Kubernetes API unreachable: keeping the last known server count",
        { from },
      );
      assert.equal(degraded["serverCount"], 2);
      // Renewals fail and back off; after 8 failures (> 12 s) both Leases have outlived
      // their 10 s duration without a renewal.
      await s1.process.waitForLog(
        (r) => r.msg === "lease renewal failed; retrying" && Number(r["failedAttempts"]) >= 8,
        { from: s1From, timeoutMs: 60_000 },
      );
      assert.equal(s1.process.records.slice(s1From).some((r) => r.level === "error"), false);
      assert.match(
        await readyzVerbose(agent.healthPort),
        /\[\+\]server-leases degraded: Kubernetes API unreachable .*keeping the last known count 2/,
      );
      assert.ok(
        !agent.process.records.slice(from).some((r) => r.msg === "server count from leases"),
        "the count changed while the API was down",
      );
      assert.equal(await getThrough(s1, backend.address), "hello");
    });

    await t.step("kube-apiserver back: the watch resumes and counts follow", async () => {
      const from = agent.process.mark();
      const s1From = s1.process.mark();
      await plane.restartApiServer();
      await agent.process.waitForLog("Kubernetes API reachable again: watching server leases", {
        from,
        timeoutMs: 60_000,
      });
      await s1.process.waitForLog("lease renewed again", { from: s1From, timeoutMs: 60_000 });
      await using s4 = await startLeaseServer(plane, "lease-s4");
      await leaseCount(agent.process, 3, from);
      assert.match(await readyzVerbose(agent.healthPort), /\[\+\]server-leases ok: 3 server/);
      const gone = agent.process.mark();
      s4.process.kill("SIGTERM"); // graceful: deletes its Lease, as upstream
      await s4.process.waitForLog("deleted the server's lease");
      await leaseCount(agent.process, 2, gone);
      assert.ok(
        !agent.process.records.slice(from).some((r) =>
          r.msg === "server count from leases" && Number(r["serverCount"]) < 2
        ),
        "the count dipped below 2 after the outage",
      );
      assert.equal(await getThrough(s1, backend.address), "hello");
    });
  }
});
