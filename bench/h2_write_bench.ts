/**
 * Micro-benchmarks of write coalescing in the native HTTP/2 transport, over a real loopback TCP
 * socket whose reader runs in a Worker (its own event loop and thread, as a peer would):
 * 2 MiB of DATA as (a) one socket write per 16 KiB frame, as an HTTP/2 stack without coalescing
 * does, (b) the same frames gathered into 256 KiB writes, and (c) the whole path through
 * {@linkcode WriteScheduler} with 8 streams taking turns. Plus the scheduler's own CPU cost per
 * 2 MiB, with a sink that takes every write at once.
 *
 * @module
 */

import type { ByteSocket } from "../transport/byte_socket.ts";
import { encodeFrame, FrameType } from "../transport/h2/frame.ts";
import { type DataSource, WriteScheduler } from "../transport/h2/write_scheduler.ts";

const TOTAL = 2 * 1024 * 1024;
const STREAMS = 8;
const FRAME = 16_384;
const WIRE = TOTAL + (TOTAL / FRAME) * 9;

const READER = `
  self.onmessage = async (e) => {
    const conn = await Deno.connect({ hostname: "127.0.0.1", port: e.data });
    const buf = new Uint8Array(1 << 20);
    let total = 0;
    for (;;) {
      const n = await conn.read(buf);
      if (n === null) return;
      total += n;
      self.postMessage(total);
    }
  };`;

const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
const worker = new Worker(URL.createObjectURL(new Blob([READER])), { type: "module" });
worker.postMessage(listener.addr.port);
const writer = await listener.accept();
let received = 0;
let want = Infinity;
let reached = () => {};
worker.onmessage = (e: MessageEvent<number>) => {
  received = e.data;
  if (received >= want) reached();
};

/** Resolves once the reader has `bytes` more than now. */
function arrived(bytes: number): Promise<void> {
  want = received + bytes;
  return new Promise((resolve) => (reached = resolve));
}

async function writeAll(socket: ByteSocket, bytes: Uint8Array): Promise<void> {
  let rest = bytes;
  while (rest.length > 0) rest = rest.subarray(await socket.write(rest));
}

/** A stream with `bytes` of message data. */
function source(id: number, bytes: number): DataSource {
  const data = new Uint8Array(bytes);
  let offset = 0;
  return {
    id,
    sendWindow: 1 << 30,
    inRing: false,
    pendingBytes: () => bytes - offset,
    take(limit, pieces) {
      const n = Math.min(limit, bytes - offset);
      pieces.push(data.subarray(offset, offset + n));
      offset += n;
      return n;
    },
    takeTail: () => undefined,
  };
}

async function throughScheduler(socket: ByteSocket): Promise<void> {
  const scheduler = new WriteScheduler(socket, (err) => {
    throw err;
  });
  scheduler.connWindow = 1 << 30;
  for (let i = 0; i < STREAMS; i++) scheduler.activate(source(2 * i + 1, TOTAL / STREAMS));
  await Promise.resolve();
  await scheduler.flushed();
}

const frames = Array.from(
  { length: TOTAL / FRAME },
  (_, i) => encodeFrame(FrameType.DATA, 0, (i % STREAMS) * 2 + 1, new Uint8Array(FRAME)),
);
const batches: Uint8Array[] = [];
for (let i = 0; i < frames.length; i += 16) {
  const batch = new Uint8Array(16 * frames[0]!.length);
  frames.slice(i, i + 16).forEach((f, j) => batch.set(f, j * f.length));
  batches.push(batch);
}

Deno.bench({
  name: "one write per 16 KiB frame (128 writes)",
  group: "h2-write-socket",
  baseline: true,
}, async () => {
  const done = arrived(WIRE);
  for (const f of frames) await writeAll(writer, f);
  await done;
});

Deno.bench(
  { name: "the same frames in 256 KiB writes (8 writes)", group: "h2-write-socket" },
  async () => {
    const done = arrived(WIRE);
    for (const b of batches) await writeAll(writer, b);
    await done;
  },
);

Deno.bench(
  { name: "WriteScheduler, 8 streams round robin", group: "h2-write-socket" },
  async () => {
    const done = arrived(WIRE);
    await throughScheduler(writer);
    await done;
  },
);

const sink: ByteSocket = {
  read: () => Promise.resolve(null),
  write: (data) => Promise.resolve(data.length),
  close() {},
};

Deno.bench(
  { name: "WriteScheduler CPU only (sink takes every write)", group: "h2-write-cpu" },
  async () => {
    await throughScheduler(sink);
  },
);
