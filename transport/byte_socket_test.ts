import assert from "node:assert/strict";
import { AdaptiveReadSize, BufferPool, type ByteSocket, SocketWriter } from "./byte_socket.ts";

/** A socket whose writes take `delayMs` each (never, when delayMs is Infinity). */
function slowSocket(delayMs: number) {
  const written: number[] = [];
  const timers = new Set<ReturnType<typeof setTimeout>>();
  const socket: ByteSocket = {
    read: () => Promise.resolve(null),
    write(data) {
      if (delayMs === Infinity) return new Promise(() => {});
      return new Promise((resolve) => {
        const t = setTimeout(() => {
          timers.delete(t);
          written.push(data.byteLength);
          resolve(data.byteLength);
        }, delayMs);
        timers.add(t);
      });
    },
    close() {
      for (const t of timers) clearTimeout(t);
    },
  };
  return { socket, written };
}

Deno.test("SocketWriter.flushed() waits for a slow reader that keeps making progress", async () => {
  const { socket, written } = slowSocket(20);
  const writer = new SocketWriter(socket, () => {});
  for (let i = 0; i < 10; i++) writer.write(new Uint8Array(100));
  const started = performance.now();
  await writer.flushed(60); // much shorter than the ~200 ms the writes take in all
  assert.equal(written.length, 10, "every chunk was written before flushed() resolved");
  assert.ok(performance.now() - started >= 150);
  assert.equal(writer.bufferedBytes, 0);
});

Deno.test("SocketWriter.flushed() gives up on a reader that makes no progress", async () => {
  const { socket } = slowSocket(Infinity);
  const writer = new SocketWriter(socket, () => {});
  writer.write(new Uint8Array(100));
  const started = performance.now();
  await writer.flushed(50);
  const waited = performance.now() - started;
  assert.ok(waited >= 45 && waited < 1000, `waited ${waited} ms`);
  assert.equal(writer.bufferedBytes, 100);
});

Deno.test("SocketWriter calls each write's callback once its bytes are written, in order", async () => {
  const { socket } = slowSocket(1);
  const writer = new SocketWriter(socket, () => {});
  const order: number[] = [];
  for (let i = 0; i < 5; i++) writer.write(new Uint8Array(10), () => order.push(i));
  await writer.flushed(1000);
  assert.deepEqual(order, [0, 1, 2, 3, 4]);
});

Deno.test("BufferPool: a given-back buffer is reused; the pool keeps at most max", () => {
  const pool = new BufferPool(1024, 1);
  const a = pool.take();
  const b = pool.take();
  assert.notEqual(a, b);
  assert.equal(a.byteLength, 1024);
  pool.give(a);
  pool.give(b); // over max: dropped
  pool.give(new Uint8Array(512)); // wrong size: dropped
  assert.equal(pool.take(), a);
  const c = pool.take();
  assert.notEqual(c, a);
  assert.notEqual(c, b);
});

/** Reads `message` bytes arriving at once as a socket read would: buffer by buffer. */
function readsOf(sizes: AdaptiveReadSize, message: number): number {
  let reads = 0;
  for (let left = message; left > 0; reads++) {
    const capacity = sizes.buffer().length;
    const n = Math.min(capacity, left);
    sizes.filled(n, capacity);
    left -= n;
  }
  return reads;
}

Deno.test("AdaptiveReadSize: messages of a few KB settle into one read each", () => {
  const sizes = new AdaptiveReadSize(1024, 256 * 1024);
  assert.equal(sizes.size, 1024, "an idle connection's pending read holds the minimum");
  readsOf(sizes, 2500); // the first message may take more than one read
  const after = Array.from({ length: 20 }, () => readsOf(sizes, 2500));
  assert.deepEqual(new Set(after), new Set([1]), `reads per message: ${after.join(",")}`);
});

Deno.test("AdaptiveReadSize: bulk grows to the maximum, small reads bring it back down", () => {
  const sizes = new AdaptiveReadSize(1024, 256 * 1024);
  for (let i = 0; i < 10; i++) sizes.filled(sizes.size, sizes.size); // every read comes back full
  assert.equal(sizes.size, 256 * 1024);
  for (let i = 0; i < 20; i++) readsOf(sizes, 32);
  assert.equal(sizes.size, 1024);
});
