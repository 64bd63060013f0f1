/**
 * Storm test of overload protection, with real processes: one client storms dials to a blackhole
 * (its dials pile up waiting for the agent) on its own gRPC connection, while another client on
 * its own connection keeps dialing a healthy echo backend. The per-frontend pending-dial limit
 * must refuse the storm as `server-overloaded` and keep room for the healthy client: the overall
 * limit is set just above the per-frontend one, so without the per-frontend limit the storm would
 * take every slot and the healthy dials would be refused.
 *
 * @module
 */

import assert from "node:assert/strict";
import { createTunnel, DialError } from "@knp/client";
import { awaitTables, type LogRecord, startAgent, startServer } from "./framework.ts";
import { havePython, startBlackhole } from "./connect_client.ts";
import { readExactly, startEchoBackend } from "./backends.ts";

const PER_FRONTEND = 50;
const OVERALL = 60;
const BATCH = 200;
const HEALTHY_DIALS = 20;
/** Failure deadline of a wait (not a synchronisation point). */
const DEADLINE_MS = 60_000;

/** Outcomes of the storming client's dials. */
class Storm {
  overloaded: DialError[] = [];
  other: unknown[] = [];
  settled = 0;
  #waiters: { n: number; resolve: () => void }[] = [];

  /** Records a settled dial (every storm dial fails: its target never answers). */
  settle(err: unknown): void {
    if (err instanceof DialError && err.kind === "server-overloaded") this.overloaded.push(err);
    else this.other.push(err);
    this.settled++;
    for (const w of this.#waiters.filter((w) => w.n <= this.settled)) {
      this.#waiters.splice(this.#waiters.indexOf(w), 1);
      w.resolve();
    }
  }

  /** Resolves once `n` dials have settled (fails after the deadline). */
  settledReaches(n: number): Promise<void> {
    if (this.settled >= n) return Promise.resolve();
    const { promise, resolve, reject } = Promise.withResolvers<void>();
    const timer = setTimeout(
      () => reject(new Error(`only ${this.settled} of ${n} storm dials settled`)),
      DEADLINE_MS,
    );
    this.#waiters.push({ n, resolve: () => (clearTimeout(timer), resolve()) });
    return promise;
  }
}

/** The largest `pending` gauge in the server's table records. */
function maxPending(records: readonly LogRecord[]): number {
  let max = 0;
  for (const r of records) if (typeof r["pending"] === "number") max = Math.max(max, r["pending"]);
  return max;
}

Deno.test({
  name: "storm: a dial storm on one frontend connection is refused; another client keeps dialing",
  ignore: !havePython,
  async fn() {
    await using hole = await startBlackhole();
    await using echo = startEchoBackend();
    await using server = await startServer({
      extraArgs: [
        "--v=5",
        `--knp-max-pending-dials-per-frontend=${PER_FRONTEND}`,
        `--knp-max-pending-dials=${OVERALL}`,
        "--backend-dial-timeout=60s",
      ],
    });
    await using _agent = await startAgent(server);
    await using stormer = createTunnel({ udsPath: server.udsPath, userAgent: "storm" });
    await using healthy = createTunnel({ udsPath: server.udsPath, userAgent: "healthy" });
    const storm = new Storm();
    let fired = 0;
    const fire = () => {
      for (let i = 0; i < BATCH; i++, fired++) {
        stormer.dial("tcp", hole.address).then(
          (conn) => storm.settle(new Error(`storm dial ${conn.dialId} connected`)),
          (err) => storm.settle(err),
        );
      }
    };

    // The storm fills its frontend connection's share of the dial table.
    fire();
    await awaitTables(server.process, (g) => g.pending >= PER_FRONTEND, "a full storm", {
      timeoutMs: DEADLINE_MS,
    });

    // The healthy client dials while the storm goes on, batch after batch.
    let healthyDone = false;
    const stormLoop = (async () => {
      while (!healthyDone) {
        await storm.settledReaches(fired - PER_FRONTEND);
        fire();
      }
    })();
    try {
      for (let i = 0; i < HEALTHY_DIALS; i++) {
        const conn = await healthy.dial("tcp", echo.address);
        const message = new TextEncoder().encode(`ping ${i}`);
        const writer = conn.writable.getWriter();
        await writer.write(message);
        const reader = conn.readable.getReader();
        const echoed = await readExactly(reader, message.length, { rest: new Uint8Array() });
        assert.deepEqual(echoed, message);
        reader.releaseLock();
        writer.releaseLock();
        conn.close();
        await conn.closed;
      }
    } finally {
      healthyDone = true;
      await stormLoop;
    }
    await storm.settledReaches(fired - PER_FRONTEND);

    // Every dial the storm lost at admission was refused as overloaded, per frontend connection.
    assert.ok(fired >= 2 * BATCH, `the storm went on during the healthy dials (${fired} dials)`);
    assert.ok(storm.overloaded.length >= fired - PER_FRONTEND - storm.other.length);
    for (const err of storm.overloaded) {
      assert.match(err.message, new RegExp(`limit ${PER_FRONTEND} per frontend connection`));
      assert.equal(err.serverId, "test-server");
    }
    // Anything else is the agent giving up on the blackhole (its own dial timeout).
    for (const err of storm.other) {
      assert.ok(err instanceof DialError && err.kind === "dial-timeout", String(err));
    }
    // The server's own gauges: the dial table never held more than the storm's share plus the
    // healthy client's one dial.
    assert.ok(maxPending(server.process.records) <= PER_FRONTEND + 1);
    const refusals = server.process.records.filter((r) => r.msg === "dial refused");
    assert.ok(refusals.length < storm.overloaded.length, "refusals are logged rate-limited");
    assert.equal(await server.status("/healthz"), 200, "the server is still up");

    // Closing the storm's connection empties the tables. The latest table record is the state
    // now, whenever it was written: the last pending storm dials may have ended at the agent's own
    // 5 s dial timeout before the close (then no record follows it).
    stormer.close();
    healthy.close();
    await awaitTables(server.process, (g) => g.pending + g.frontends === 0, "empty tables", {
      timeoutMs: DEADLINE_MS,
    });
  },
});
