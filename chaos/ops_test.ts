/**
 * The chaos checker itself must catch what it claims to: a silent short read, corrupt bytes, and
 * tell a backend reset (an error) from a violation. Driven over plain loopback sockets (directly,
 * or through the fault relay) against the real chaos backend.
 */

import assert from "node:assert/strict";
import { NO_RESET, startChaosBackend } from "./backend.ts";
import { connDuplex, type Duplex } from "./duplex.ts";
import { exchange, type OpEnv, type OpPlan, Violation } from "./ops.ts";
import { startRelay } from "./relay.ts";

function plan(kind: OpPlan["kind"], resetAt = NO_RESET): OpPlan {
  return {
    kind,
    frontend: "grpc",
    transfer: { token: 1, upSeed: 3, upLen: 200_000, downSeed: 5, downLen: 500_000, resetAt },
    at: 0,
    waitMs: 0,
  };
}

async function dialPort(port: number): Promise<Duplex> {
  return connDuplex(await Deno.connect({ hostname: "127.0.0.1", port }));
}

/** Wraps `conn`: `onBytes` sees the running count of bytes read and may alter the chunk. */
function tap(conn: Duplex, onBytes: (total: number, chunk: Uint8Array) => void): Duplex {
  let total = 0;
  return {
    ...conn,
    async read() {
      const chunk = await conn.read();
      if (chunk !== null) onBytes(total += chunk.length, chunk);
      return chunk;
    },
  };
}

Deno.test("chaos checker: an intact connection verifies exactly", async () => {
  await using backend = startChaosBackend();
  const env: OpEnv = { udsPath: "", frontend: () => "grpc", backend, deadlineMs: 0, maxBytes: 0 };
  const conn = await dialPort(Number(backend.address.split(":")[1]));
  assert.match(await exchange(conn, plan("transfer"), env), /200000\/500000 bytes exact/);
  conn.close();
  await backend.idle();
});

Deno.test("chaos checker: a cut path ending cleanly is a silent short read", async () => {
  await using backend = startChaosBackend();
  await using relay = startRelay(Number(backend.address.split(":")[1]));
  const env: OpEnv = { udsPath: "", frontend: () => "grpc", backend, deadlineMs: 0, maxBytes: 0 };
  const conn = tap(await dialPort(relay.port), (total) => {
    if (total >= 100_000) relay.cut();
  });
  await assert.rejects(exchange(conn, plan("transfer"), env), (err: unknown) => {
    assert.ok(err instanceof Violation);
    assert.match(err.message, /silent short read/);
    return true;
  });
  conn.close();
  await backend.idle();
});

Deno.test("chaos checker: a flipped byte is corruption", async () => {
  await using backend = startChaosBackend();
  const env: OpEnv = { udsPath: "", frontend: () => "grpc", backend, deadlineMs: 0, maxBytes: 0 };
  let flipped = false;
  const conn = tap(await dialPort(Number(backend.address.split(":")[1])), (_, chunk) => {
    if (!flipped && chunk.length > 0) chunk[chunk.length - 1] = (chunk.at(-1) ?? 0) ^ 1;
    flipped = true;
  });
  await assert.rejects(exchange(conn, plan("transfer"), env), (err: unknown) => {
    assert.ok(err instanceof Violation);
    assert.match(err.message, /corrupt byte/);
    return true;
  });
  conn.close();
  await backend.idle();
});

Deno.test("chaos checker: a backend reset is an error, and a held blackhole resumes", async () => {
  await using backend = startChaosBackend();
  await using relay = startRelay(Number(backend.address.split(":")[1]));
  const env: OpEnv = { udsPath: "", frontend: () => "grpc", backend, deadlineMs: 0, maxBytes: 0 };
  const reset = await dialPort(relay.port);
  await assert.rejects(exchange(reset, plan("reset", 1_000), env), (err: unknown) => {
    assert.ok(!(err instanceof Violation));
    assert.match(String(err), /reset/);
    return true;
  });
  reset.close();
  assert.ok(backend.resets.has(1));
  relay.blackhole();
  const held = await dialPort(relay.port);
  const done = exchange(held, plan("transfer"), env);
  relay.resume();
  assert.match(await done, /exact/);
  held.close();
  await backend.idle();
});
