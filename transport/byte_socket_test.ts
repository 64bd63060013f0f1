import assert from "node:assert/strict";
import { BufferPool, type ByteSocket, SocketWriter } from "./byte_socket.ts";

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
