/**
 * The fair queue's schedule: order within a flow, a newly active small flow ahead of bulk
 * backlogs, byte-fair shares between bulk flows, idle flows kept for reuse within a bound, and the
 * flow of each knp packet type.
 */

import assert from "node:assert/strict";
import {
  closeDial,
  closeRequest,
  closeResponse,
  dataPacket,
  dialRequest,
  dialResponse,
  drain,
  knpWindow,
} from "@knp/proto";
import { FairQueue, packetFlow } from "./fair_queue.ts";

const KiB = 1024;

function drainAll<T>(q: FairQueue<T>): T[] {
  const out: T[] = [];
  for (let item = q.shift(); item !== undefined; item = q.shift()) out.push(item);
  return out;
}

Deno.test("fair queue: items of one flow leave in order; counts follow", () => {
  const q = new FairQueue<number>(4 * KiB);
  for (let i = 0; i < 100; i++) q.push(7n, i, 1 * KiB);
  assert.equal(q.length, 100);
  assert.equal(q.bytes, 100 * KiB);
  assert.deepEqual(drainAll(q), Array.from({ length: 100 }, (_, i) => i));
  assert.equal(q.length, 0);
  assert.equal(q.bytes, 0);
  assert.equal(q.flows, 0);
});

Deno.test("fair queue: a small flow that arrives behind bulk backlogs leaves within one turn", () => {
  const q = new FairQueue<string>(16 * KiB);
  // Ten bulk flows with 4 MiB each, in 256 KiB items; one item of each already sent.
  for (let f = 1n; f <= 10n; f++) {
    for (let i = 0; i < 16; i++) q.push(f, `bulk${f}`, 256 * KiB);
  }
  for (let i = 0; i < 10; i++) assert.match(q.shift()!, /^bulk/);
  q.push(99n, "echo", 32);
  // Every bulk flow now owes credit: the new flow goes first.
  assert.equal(q.shift(), "echo");
  // And a flow that keeps sending little keeps going first.
  q.push(99n, "echo2", 32);
  let before = 0;
  for (let item = q.shift(); item !== "echo2"; item = q.shift()) before++;
  assert.ok(before <= 1, `echo2 waited behind ${before} bulk items`);
});

Deno.test("fair queue: bulk flows share in proportion to bytes, whatever their item sizes", () => {
  const q = new FairQueue<[bigint, number]>(16 * KiB);
  for (let i = 0; i < 64; i++) q.push(1n, [1n, 256 * KiB], 256 * KiB);
  for (let i = 0; i < 4096; i++) q.push(2n, [2n, 4 * KiB], 4 * KiB);
  const sent = new Map<bigint, number>([[1n, 0], [2n, 0]]);
  // Look at the first 8 MiB sent: each flow gets about half.
  let total = 0;
  while (total < 8 * 1024 * KiB) {
    const [flow, size] = q.shift()!;
    sent.set(flow, sent.get(flow)! + size);
    total += size;
  }
  const share = sent.get(1n)! / total;
  assert.ok(share > 0.4 && share < 0.6, `flow 1 got ${share} of the bytes`);
});

Deno.test("fair queue: an emptied flow does not come back ahead of waiting bulk flows at once", () => {
  const q = new FairQueue<string>(16 * KiB);
  q.push(1n, "a1", 8 * KiB);
  q.push(2n, "b1", 64 * KiB);
  q.push(2n, "b2", 64 * KiB);
  assert.equal(q.shift(), "a1"); // flow 1 emptied with credit left
  assert.equal(q.shift(), "b1"); // flow 2 spends its credit
  q.push(1n, "a2", 8 * KiB); // flow 1 is still in the rotation: no new-flow priority
  assert.deepEqual(drainAll(q), ["a2", "b2"]);
});

Deno.test("fair queue: clear hands back every item and forgets every flow", () => {
  const q = new FairQueue<number>();
  for (let i = 0; i < 10; i++) q.push(BigInt(i % 3), i, 100);
  q.shift();
  assert.deepEqual(q.clear().sort((a, b) => a - b), [1, 2, 3, 4, 5, 6, 7, 8, 9]);
  assert.equal(q.length, 0);
  assert.equal(q.bytes, 0);
  assert.equal(q.flows, 0);
  assert.equal(q.shift(), undefined);
  q.push(5n, 42, 1);
  assert.equal(q.shift(), 42);
});

Deno.test("packetFlow: every packet of a connection shares its flow", () => {
  const id = 12345n;
  const random = 987654321n;
  for (
    const p of [
      dataPacket(id, new Uint8Array(1)),
      dialResponse(random, id),
      closeRequest(id),
      closeResponse(id),
      knpWindow(id, 1),
    ]
  ) assert.equal(packetFlow(p), id, p.type);
  assert.equal(packetFlow(dialRequest("a:1", random)), random);
  assert.equal(packetFlow(closeDial(random)), random);
  assert.equal(packetFlow(dialResponse(random, 0n, "refused")), random);
  assert.equal(packetFlow(drain()), 0n);
});

Deno.test("fair queue: a chatty flow that sends again before its old turn does not wait a pass", () => {
  const q = new FairQueue<string>(16 * KiB);
  // Ten bulk flows whose items fit their credit: each sends one item per turn.
  for (let f = 1n; f <= 10n; f++) {
    for (let i = 0; i < 8; i++) q.push(f, `bulk${f}`, 16 * KiB);
  }
  for (let f = 1; f <= 10; f++) assert.equal(q.shift(), `bulk${f}`);
  q.push(99n, "echo1", 64);
  assert.equal(q.shift(), "echo1");
  // The echo flow emptied with credit left: it moves behind the ten bulk flows ...
  assert.equal(q.shift(), "bulk1");
  // ... and its next packet goes ahead of them, spending the credit of its current turn.
  q.push(99n, "echo2", 64);
  assert.equal(q.shift(), "echo2");
  assert.equal(q.shift(), "bulk2");
});

Deno.test("fair queue: a flow that empties after every quantum gets no more than its share", () => {
  const quantum = 16 * KiB;
  const q = new FairQueue<bigint>(quantum);
  for (let f = 1n; f <= 10n; f++) {
    for (let i = 0; i < 4; i++) q.push(f, f, quantum);
  }
  // Flow 99 queues its next quantum one item after its last one left: it is always empty when
  // its credit is topped up, and must not spend the new credit before its turn comes round.
  q.push(99n, 99n, quantum);
  let sent = 0;
  let mine = 0;
  let refillIn = 0;
  for (let i = 0; i < 11_000; i++) {
    if (refillIn > 0 && --refillIn === 0) q.push(99n, 99n, quantum);
    const flow = q.shift()!;
    sent++;
    if (flow === 99n) {
      mine++;
      refillIn = 2;
    } else q.push(flow, flow, quantum);
  }
  const share = mine / sent;
  assert.ok(share <= 1.05 / 11, `flow 99 got ${share} of the bytes (fair: ${1 / 11})`);
});

Deno.test("fair queue: a flow that empties is kept idle and reused, with a fresh quantum", () => {
  const q = new FairQueue<string>(16 * KiB);
  // Flow 1 sends one large item (its credit goes negative) and empties.
  q.push(1n, "big", 256 * KiB);
  assert.equal(q.shift(), "big");
  assert.equal(q.flows, 0);
  assert.equal(q.held, 1, "the emptied flow is kept");
  // A bulk backlog of flow 2 with one item out: flow 1 comes back with a small item and goes first
  // (a fresh quantum, in the new rotation), although it overdrew before it went idle.
  for (let i = 0; i < 4; i++) q.push(2n, "bulk", 256 * KiB);
  assert.equal(q.shift(), "bulk");
  q.push(1n, "echo", 32);
  assert.equal(q.flows, 2);
  assert.equal(q.held, 2);
  assert.equal(q.shift(), "echo");
  assert.deepEqual(drainAll(q), ["bulk", "bulk", "bulk"]);
  assert.equal(q.flows, 0);
});

Deno.test("fair queue: idle flows are bounded however many connections came and went", () => {
  const q = new FairQueue<number>(16 * KiB);
  for (let key = 1n; key <= 10_000n; key++) {
    q.push(key, 1, 100);
    assert.equal(q.shift(), 1);
  }
  assert.ok(q.held <= 257, `${q.held} flows held`);
  // With many live flows, idle ones are swept too (in the multi-flow path of shift).
  for (let key = 1n; key <= 2_000n; key++) q.push(key, Number(key), 100);
  assert.equal(drainAll(q).length, 2_000);
  assert.equal(q.flows, 0);
  assert.ok(q.held <= 2_000 + 257, `${q.held} flows held`);
  q.clear();
  assert.equal(q.held, 0);
});
