/**
 * The fair queue's cost per packet: what the WebSocket link adds to every send. Bulk (256 KiB
 * items of 50 flows, as 50 downloads) and chatty (64-byte items of 1,000 flows).
 *
 * @module
 */

import { FairQueue } from "./fair_queue.ts";

const bulk = new FairQueue<number>();
Deno.bench(
  { name: "fair queue: 50 bulk flows, push + shift 1,000 × 256 KiB", group: "fair" },
  () => {
    for (let i = 0; i < 1000; i++) bulk.push(BigInt(i % 50), i, 256 * 1024);
    for (let i = 0; i < 1000; i++) bulk.shift();
  },
);

const chatty = new FairQueue<number>();
Deno.bench({ name: "fair queue: 1,000 flows, push + shift 1,000 × 64 B", group: "fair" }, () => {
  for (let i = 0; i < 1000; i++) chatty.push(BigInt(i), i, 64);
  for (let i = 0; i < 1000; i++) chatty.shift();
});

const fifo: number[] = [];
Deno.bench({
  name: "plain array FIFO, push + shift 1,000 (baseline)",
  group: "fair",
  baseline: true,
}, () => {
  for (let i = 0; i < 1000; i++) fifo.push(i);
  for (let i = 0; i < 1000; i++) fifo.shift();
});
