import assert from "node:assert/strict";
import { closeRequest, dataPacket, type DecodedPacket, dialRequest, drain } from "@knp/proto";
import { memoryPipe, type PacketStream, SendAccounting } from "./packet_stream.ts";

/** Lets every queued microtask (and the pipes' pumps) run. */
const settle = () => new Promise<void>((resolve) => setTimeout(resolve, 0));

/** Starts `stream` and records what it delivers. */
function record(stream: PacketStream) {
  const packets: DecodedPacket[] = [];
  const ends: (Error | undefined)[] = [];
  stream.start({ onPacket: (p) => packets.push(p), onEnd: (e) => ends.push(e) });
  return { packets, ends };
}

const bytes = (n: number) => new Uint8Array(n);

Deno.test("SendAccounting reports the high-water mark and fires drain waiters at the low-water mark", async () => {
  const acct = new SendAccounting(100);
  assert.equal(acct.lowWater, 50);
  assert.equal(acct.add(60), true);
  assert.equal(acct.add(40), true, "exactly the high-water mark is still under it");
  assert.equal(acct.add(1), false);
  assert.equal(acct.buffered, 101);
  let drained = 0;
  acct.onDrain(() => drained++);
  acct.remove(50);
  assert.equal(drained, 0, "51 bytes is above the low-water mark");
  acct.remove(1);
  assert.equal(drained, 1);
  acct.remove(50);
  assert.equal(drained, 1, "a waiter fires once");
  // Already under the mark: fires asynchronously, not inside onDrain().
  acct.onDrain(() => drained++);
  assert.equal(drained, 1);
  await settle();
  assert.equal(drained, 2);
});

Deno.test("SendAccounting flush runs every waiter even above the low-water mark", () => {
  const acct = new SendAccounting(10);
  acct.add(100);
  const seen: number[] = [];
  acct.onDrain(() => seen.push(1));
  acct.onDrain(() => seen.push(2));
  acct.flush();
  assert.deepEqual(seen, [1, 2]);
  acct.flush();
  assert.deepEqual(seen, [1, 2]);
});

Deno.test("memoryPipe delivers packets in order, asynchronously, in both directions", async () => {
  const [a, b] = memoryPipe();
  const ra = record(a);
  const rb = record(b);
  a.send(dialRequest("x:1", 7n));
  a.send(dataPacket(1n, bytes(3)));
  a.send(closeRequest(1n));
  b.send(drain());
  assert.equal(rb.packets.length, 0, "delivery is not synchronous");
  await settle();
  assert.deepEqual(rb.packets.map((p) => p.type), ["DIAL_REQ", "DATA", "CLOSE_REQ"]);
  assert.deepEqual(ra.packets.map((p) => p.type), ["DRAIN"]);
  a.close();
  await settle();
});

Deno.test("memoryPipe counts queued payload bytes until the receiver takes them", async () => {
  const [a, b] = memoryPipe({ highWater: 100 });
  const rb = record(b);
  assert.equal(a.send(dataPacket(1n, bytes(60))), true);
  assert.equal(a.send(closeRequest(1n)), true, "control packets count 0 bytes");
  assert.equal(a.bufferedBytes, 60);
  assert.equal(a.send(dataPacket(1n, bytes(41))), false, "past the high-water mark");
  assert.equal(a.bufferedBytes, 101);
  await settle();
  assert.equal(rb.packets.length, 3);
  assert.equal(a.bufferedBytes, 0);
  a.close();
  await settle();
});

Deno.test("memoryPipe holds delivery while paused and the sender sees onDrain after resume", async () => {
  const [a, b] = memoryPipe({ highWater: 100 });
  const rb = record(b);
  b.pause();
  for (let i = 0; i < 4; i++) a.send(dataPacket(1n, bytes(40)));
  await settle();
  assert.equal(rb.packets.length, 0);
  assert.equal(a.bufferedBytes, 160);
  let drained = false;
  a.onDrain(() => drained = true);
  await settle();
  assert.equal(drained, false);
  b.resume();
  await settle();
  assert.equal(rb.packets.length, 4);
  assert.equal(a.bufferedBytes, 0);
  assert.equal(drained, true);
  a.close();
  await settle();
});

Deno.test("memoryPipe lets a handler pause delivery in the middle of a batch", async () => {
  const [a, b] = memoryPipe();
  const seen: bigint[] = [];
  b.start({
    onPacket: (p) => {
      if (p.type !== "DATA") return;
      seen.push(p.data.connectId);
      if (seen.length === 2) b.pause();
    },
    onEnd: () => {},
  });
  for (let i = 1n; i <= 5n; i++) a.send(dataPacket(i, bytes(1)));
  await settle();
  assert.deepEqual(seen, [1n, 2n]);
  assert.equal(a.bufferedBytes, 3);
  b.resume();
  await settle();
  assert.deepEqual(seen, [1n, 2n, 3n, 4n, 5n]);
  b.close();
  await settle();
});

Deno.test("memoryPipe close delivers onEnd once on both sides after queued packets", async () => {
  const [a, b] = memoryPipe();
  const ra = record(a);
  const rb = record(b);
  a.send(dataPacket(1n, bytes(5)));
  a.close();
  a.close();
  assert.equal(a.closed, true);
  assert.deepEqual(ra.ends, [undefined], "the closing side ends at once");
  await settle();
  assert.deepEqual(rb.packets.map((p) => p.type), ["DATA"], "what was sent before close arrives");
  assert.deepEqual(rb.ends, [undefined]);
  assert.equal(b.closed, true);
  b.close();
  await settle();
  assert.equal(ra.ends.length, 1);
  assert.equal(rb.ends.length, 1);
  assert.equal(a.send(drain()), false, "sending on a closed stream fails");
  assert.equal(b.send(drain()), false);
});

Deno.test("memoryPipe close with an error reaches both handlers", async () => {
  const [a, b] = memoryPipe();
  const ra = record(a);
  const rb = record(b);
  const boom = new Error("boom");
  b.close(boom);
  await settle();
  assert.deepEqual(ra.ends, [boom]);
  assert.deepEqual(rb.ends, [boom]);
});

Deno.test("memoryPipe delivers onEnd to a handler started after the stream ended", async () => {
  const [a, b] = memoryPipe();
  record(a);
  a.close();
  await settle();
  const rb = record(b); // never started before: the peer end is only noticed on start
  await settle();
  assert.deepEqual(rb.ends, [undefined]);
});

Deno.test("memoryPipe releases the sender's bytes and drain waiters when the receiver closes", async () => {
  const [a, b] = memoryPipe({ highWater: 10 });
  const ra = record(a);
  record(b);
  b.pause();
  a.send(dataPacket(1n, bytes(50)));
  let drained = false;
  a.onDrain(() => drained = true);
  b.close();
  assert.equal(a.bufferedBytes, 0);
  assert.equal(drained, true);
  await settle();
  assert.equal(ra.ends.length, 1);
});

Deno.test("memoryPipe done settles with the end: the error on both sides, undefined when clean", async () => {
  const [a, b] = memoryPipe();
  record(a);
  record(b);
  const failure = new Error("boom");
  a.close(failure);
  assert.equal(await a.done, failure);
  assert.equal(await b.done, failure);

  const [c, d] = memoryPipe();
  record(c);
  record(d);
  d.close();
  assert.equal(await c.done, undefined);
  assert.equal(await d.done, undefined);
  assert.equal(c.closed && d.closed, true);
});

Deno.test("memoryPipe done settles even when the stream was never started", async () => {
  const [a] = memoryPipe();
  const failure = new Error("never started");
  a.close(failure);
  assert.equal(await a.done, failure);
});
